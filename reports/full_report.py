"""One model's report page: summary, contents, attention explorer, a section per analysis, provenance.

:func:`render_full_report` takes what the analyses wrote (their metrics.json documents and figure
folders), the explorer data (``reports.explorer``) and the key numbers (``reports.summary``) and
renders ``templates/full_report.html.j2``. The page is one file: figures are base64 PNG, the styles
and the scripts (``static/model.js``, the forward pass; ``explorer.js``; ``lab.js``, the interventions
lab) are inline, one ``<script>`` whose hash the Content-Security-Policy names, and the data sit in
``<script type="application/json">`` elements escaped by :func:`analyses.frame.html.json_script`.
Nothing is computed here beyond formatting.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import markupsafe

from analyses.frame import html, numbers

STATIC = Path(__file__).parent / "static"
TEMPLATES = Path(__file__).parent / "templates"  # full_report.html.j2, index.html.j2

# Two or three plain sentences per analysis: what was done, and how to read the section.
INTRODUCTIONS: dict[str, tuple[str, ...]] = {
    "flip_alignment": (
        "To reverse a sequence, output position i must read input position N−1−i (the flipped key). We "
        "run the model on random sequences, read every head's attention pattern through its hook, and "
        "measure how much weight lands on the flipped key, on its neighbours, and elsewhere.",
        "Numbers are means over sequences with 95% bootstrap intervals; a perfect reversal head has flip "
        "mass 1 and entropy 0, uniform attention has flip mass 1/N.",
    ),
    "qk_circuit": (
        "Layer 0's attention scores are split exactly into a position–position term, token terms and bias "
        "terms, and the tutorial's explanation of the spread onto neighbours (\u201cnearby positional "
        "encodings are similar\u201d) is turned into predictions compared with the observed pattern.",
        "Read the verdict first; the tables give each term's share of the score variance and how well each "
        "prediction matches (Jensen–Shannon divergence, 0 = identical).",
    ),
    "pe_ablation": (
        "The positional encoding is removed, averaged, shuffled, shifted, mirrored, scaled or stripped of "
        "one frequency band, and the model is evaluated on the same sequences under each condition.",
        "Compare each accuracy with chance (1/C) and with the best accuracy any model can reach without "
        "positions: falling to that ceiling means the model relies on positions entirely. Differences are "
        "paired, with 95% intervals.",
    ),
    "head_ablation": (
        "Each head's output is zeroed, replaced by its mean or by its value on another sequence; separately "
        "its attention pattern is replaced by the ideal flip, a shifted flip, uniform attention or a random "
        "row permutation; and activation patching traces which head carries the information.",
        "A large drop in accuracy means the model needs that head (Holm-corrected Wilcoxon tests); if the "
        "ideal flip pattern keeps the accuracy, the head's job is just to route the flipped key.",
    ),
    "tolerance": (
        "The tutorial's other sentence: the model “does not need perfect, strict attention”. The flip "
        "head's pattern is replaced by sharper, blurrier and mixed versions of its own, and accuracy is "
        "measured against the weight left on the flipped key; a plurality vote over the keys' digits is "
        "tested as the rule that decides the output.",
        "Read the verdict first; the threshold is the flip mass below which accuracy drops under 99%, the "
        "margin how far the model's own flip mass lies above it (95% bootstrap intervals).",
    ),
    "interchange": (
        "The reverse program (output i = token N−1−i) is compared with the network variable by variable: "
        "an activation is patched from a source sequence into a base sequence, and the model's output is "
        "compared with the program's output after the same interchange.",
        "IIA 1 means the site carries exactly the program's variable; the dependency matrices show which "
        "outputs each patched position changes, beside the program's.",
    ),
    "certificate": (
        "Not a sample: what the model does on every one of the C^N inputs. With one layer, query i sees "
        "each key only through its (position, digit), so the attention output of a (query position, own "
        "digit, flipped digit) cell is bounded exactly and propagated through the rest of the network; "
        "cells that stay undecided are split (branch and bound). When C^N is small, every input is "
        "evaluated instead.",
        "The bounds hold for the float32 forward with argmax ties counted as wrong; the gap between them "
        "is what the budget left undecided. The census lists the regions proven wrong with exact counts.",
    ),
}


# Figures the explorer already shows interactively (flip_alignment's example heatmaps are the first
# sequences of the same stream): left out of the page, which keeps multi-head reports light.
IN_EXPLORER: dict[str, str] = {"flip_alignment": "example_attention_"}
IN_EXPLORER_NOTE = (
    "The heatmaps of single example sequences are left out here: the attention explorer above shows the "
    "same sequences (its first ones) for every layer and head; they are in {folder}."
)


@dataclass
class AnalysisSection:
    """One analysis in the page: its document and figures, or why it is absent."""

    name: str
    title: str
    status: str  # "computed", "reused", "not applicable: ...", "skipped"
    document: Mapping[str, Any] | None = None
    figures_dir: Path | None = None
    captions: Mapping[str, str] | None = None

    @property
    def anchor(self) -> str:
        return self.name.replace("_", "-")


SCRIPTS = ("model.js", "explorer.js", "lab.js")  # in this order: each uses window.ReverseEncoder of the last


def explorer_script() -> markupsafe.Markup:
    """``static/{model,explorer,lab}.js`` as one script, checked to be safe inside an inline ``<script>``."""
    parts = []
    for name in SCRIPTS:
        code = (STATIC / name).read_text(encoding="utf-8")
        if re.search(r"</script|<!--", code, re.IGNORECASE):
            raise ValueError(f"{name} must not contain '</script' or '<!--' (it is inlined in the page)")
        parts.append(code)
    return markupsafe.Markup("\n" + "\n".join(parts))


def csp_hash(script: str) -> str:
    """``sha256-<base64>`` of an inline script, for the page's Content-Security-Policy: the browser
    runs that exact script and no other, and fetches nothing (``default-src 'none'``)."""
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")


def summary_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The summary table: one row per key number, each pointing at the section that measured it."""
    rows: list[dict[str, Any]] = verdict_rows(metrics)
    acc = metrics.get("accuracy")
    rows.append(
        {
            "label": "Accuracy (per digit)",
            "estimate": acc["estimate"] if acc else None,
            "text": "Share of output digits equal to the reversed input.",
            "href": acc["source"].replace("_", "-") if acc else None,
        }
    )
    flip = metrics.get("flip_mass")
    rows.append(
        {
            "label": f"Flip mass (head {flip['head']})" if flip else "Flip mass",
            "estimate": flip["flip_mass"] if flip else None,
            "text": "Attention on the flipped key N−1−i; 1 = all of it, "
            + (f"uniform = {flip['uniform']:.3f}." if flip else "uniform = 1/N."),
            "href": "flip-alignment" if flip else None,
        }
    )
    rows.append(
        {
            "label": f"Neighbour mass (head {flip['head']})" if flip else "Neighbour mass",
            "estimate": flip["neighbour_mass"] if flip else None,
            "text": "Attention on keys N−1−i±1 and ±2, the spread the tutorial's figure shows.",
            "href": "flip-alignment" if flip else None,
        }
    )
    rows.append(certificate_row(metrics.get("certificate")))
    pe = metrics.get("pe_zero_accuracy")
    rows.append(
        {
            "label": "Accuracy without positional encoding",
            "estimate": pe["estimate"] if pe else None,
            "text": (
                f"Encoding set to zero; chance {pe['chance']:.3f}, best possible without positions "
                f"{pe['no_position_ceiling']:.3f}."
                if pe
                else "Encoding set to zero (pe_ablation)."
            ),
            "href": "pe-ablation" if pe else None,
        }
    )
    top = metrics.get("top_head")
    text = "Zero-ablation of every head (head_ablation)."
    if top:
        p = top.get("p_holm")
        shown = numbers.p_value(p) if p is not None and p <= numbers.P_FLOOR else f"= {numbers.p_value(p)}"
        text = "The head whose zero ablation costs the most accuracy" + (
            f"; Holm-corrected Wilcoxon test on the loss, p {shown}." if p is not None else "."
        )
    rows.append(
        {
            "label": f"Accuracy change when head {top['head']} is zeroed" if top else "Most needed head",
            "estimate": top["delta_accuracy"] if top else None,
            "text": text,
            "href": "head-ablation" if top else None,
        }
    )
    return rows


def certificate_row(cert: Mapping[str, Any] | None) -> dict[str, Any]:
    """The summary row of the certified per-digit accuracy over all C^N inputs: [lower, upper]."""
    if not cert:
        return {
            "label": "Certified accuracy over all inputs (per digit)",
            "estimate": None,
            "text": "Bounds over every input (certificate).",
            "href": None,
        }
    pd, wrong = cert["per_digit"], cert["wrong_pairs"]
    if cert["resolved"]:
        value = f"exactly {cert['pairs'] - wrong['lower']:,}/{cert['pairs']:,} pairs"
    else:
        value = f"bounds {numbers.bounds(pd['lower'], pd['upper'], 6)}"
    how = f"proof, {cert['budget']}" if cert["method"] == "proof" else "every input evaluated"
    undecided = "" if cert["resolved"] else "; the gap is what the budget left undecided"
    return {
        "label": "Certified accuracy over all inputs (per digit)",
        "value": value,
        "estimate": None,
        "text": f"Not a sample: all {cert['inputs']:,} inputs, {cert['regime']} ({how}, "
        f"{cert['seconds']:.0f} s){undecided}.",
        "href": "certificate",
    }


def verdict_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows the summary opens with: the verdicts on the tutorial's two sentences (qk_circuit: "nearby
    positional encodings are similar"; tolerance: "approximate, noisy attention") and the conclusion of
    the interchange interventions against the reverse program."""
    verdict = metrics.get("qk_verdict")
    tol = metrics.get("tolerance_verdict")
    iia = metrics.get("interchange")
    margin = tol and tol["margin"]
    return [
        {
            "label": "QK verdict on the tutorial's explanation (“nearby positional encodings are similar”)",
            "value": verdict["label"] if verdict else None,
            "estimate": verdict["spearman_rho"] if verdict else None,
            "estimate_label": "ρ",
            "text": verdict["headline"] if verdict else "qk_circuit",
            "href": "qk-circuit" if verdict else None,
        },
        {
            "label": "Tolerance verdict (“the model can accept an approximate, noisy attention map”)",
            "value": tol["label"] if tol else None,
            "estimate": margin or None,
            "estimate_label": f"smallest {tol['level']:.0%} margin ({tol['margin_family']})"
            if margin
            else "",
            "text": (
                f"{tol['headline']} On whole sequences: {tol['sequence_label']}." if tol else "tolerance"
            ),
            "href": "tolerance" if tol else None,
        },
        {
            "label": "Interchange interventions against the reverse program",
            "value": iia["label"] if iia else None,
            "estimate": None,
            "text": f"{iia['headline']} {iia['selector']['sentence']}" if iia else "interchange",
            "href": "interchange" if iia else None,
        },
    ]


def _section_parts(section: AnalysisSection) -> tuple[markupsafe.Markup, markupsafe.Markup]:
    """The analysis' own content split after its title, so the introduction can go under it."""
    captions = dict(section.captions or {})
    prefix = IN_EXPLORER.get(section.name)
    if prefix:
        captions = {k: v for k, v in captions.items() if not k.startswith(prefix)}
    section_html = html.render_section(
        section.document, section.figures_dir, captions, id_prefix=f"{section.anchor}--"
    )
    head, sep, body = str(section_html).partition("</h2>")
    if not sep:
        return markupsafe.Markup(""), section_html
    return markupsafe.Markup(head + sep), markupsafe.Markup(body)


def render_full_report(
    *,
    name: str,
    sections: list[AnalysisSection],
    metrics: Mapping[str, Any],
    explorer: Mapping[str, Any],
    provenance: Mapping[str, Any],
    lab: Mapping[str, Any] | None = None,
) -> str:
    """The report page as a string (see the module docstring); ``lab`` (``reports.lab.lab_data``) adds
    the interventions lab."""
    script = explorer_script()
    parts = []
    for s in sections:
        head, body = _section_parts(s) if s.document is not None else (None, None)
        intro = INTRODUCTIONS.get(s.name, ())
        if s.name in IN_EXPLORER and s.figures_dir is not None:
            intro = (*intro, IN_EXPLORER_NOTE.format(folder=f"{s.name}/figures/{IN_EXPLORER[s.name]}*.png"))
        parts.append(
            {
                "anchor": s.anchor,
                "title": s.title,
                "status": s.status,
                "intro": intro,
                "head": head,
                "body": body,
                "created": (s.document or {}).get("provenance", {}).get("timestamp"),
            }
        )
    return (
        html.environment(TEMPLATES)
        .get_template("full_report.html.j2")
        .render(
            name=name,
            sections=parts,
            summary=summary_rows(metrics),
            iia_table=(metrics.get("interchange") or {}).get("iia_table"),
            explorer=explorer,
            lab=lab,
            explorer_js=script,
            script_hash=csp_hash(script),
            prov=provenance,
        )
    )
