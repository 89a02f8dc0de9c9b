"""The key numbers of one report, read from the analyses' metrics.json documents (nothing recomputed).

:func:`key_metrics` picks, from whichever analyses ran:

- ``accuracy``: per-digit accuracy of the reversal (flip_alignment; else the clean run of another);
- ``flip_mass`` / ``neighbour_mass``: of the *flip head*, the head with the largest flip mass
  A[i, N−1−i] (flip_alignment), and the weight on keys N−1−i±1, ±2;
- ``pe_zero_accuracy``: accuracy with the positional encoding set to zero (pe_ablation condition
  ``zero``, the tutorial's ``add_positional_encoding=False``), against chance and the best accuracy
  possible without positions;
- ``qk_verdict``: the label of qk_circuit's verdict on the tutorial's explanation, with the Spearman ρ
  behind it;
- ``top_head``: the head whose zero ablation costs the most accuracy (head_ablation), Holm p-value;
- ``tolerance_verdict``: the label of tolerance's verdict on the tutorial's first sentence
  ("approximate, noisy attention"), its head, the smallest 99% margin and its family;
- ``interchange``: the conclusion against the reverse program, the IIA of every site
  (``iia_table``) and the selector head ("the reverse selector lives in head h", or why not);
- ``certificate``: the certified lower and upper bounds on per-digit and whole-sequence accuracy over
  all C^N inputs (proven or enumerated, never sampled), the method, the proof's budget and the verdict.

Every estimate is the analysis' ``{"mean", "ci_low", "ci_high"}`` object. ``summary.json`` (written by
``reports.build`` next to report.html, read by ``reports.index``) stores this dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SUMMARY_SCHEMA_VERSION = 1
SUMMARY_FILE = "summary.json"


def _accuracy(docs: Mapping[str, Any]) -> dict[str, Any] | None:
    if "flip_alignment" in docs:
        return {"estimate": docs["flip_alignment"]["accuracy"], "source": "flip_alignment"}
    for name in ("pe_ablation", "head_ablation"):
        if name in docs:
            return {"estimate": docs[name]["conditions"]["none"]["accuracy"], "source": name}
    if "qk_circuit" in docs:
        return {"estimate": docs["qk_circuit"]["accuracy"], "source": "qk_circuit"}
    return None


def _flip_head(doc: Mapping[str, Any]) -> dict[str, Any]:
    heads = [h for layer in doc["layers"] for h in layer["heads"]]
    best = max(heads, key=lambda h: h["flip_mass"]["mean"])
    return {
        "head": f"{best['layer']}.{best['head']}",
        "flip_mass": best["flip_mass"],
        "neighbour_mass": best["neighbour_mass"],
        "uniform": doc["reference"]["uniform_mass"],
    }


def _pe_zero(doc: Mapping[str, Any]) -> dict[str, Any]:
    zero = doc["conditions"]["zero"]
    return {
        "estimate": zero["accuracy"],
        "delta": zero["delta_accuracy"],
        "chance": doc["reference"]["chance_accuracy"],
        "no_position_ceiling": doc["reference"]["no_position"]["accuracy"],
    }


def _verdict(doc: Mapping[str, Any]) -> dict[str, Any]:
    verdict = doc["verdict"]
    head = next((h for h in doc["heads"] if h["head"] == verdict["head"]), None)
    rho = head["similarity"]["raw_pe"]["spearman_positions"] if head else None
    return {
        "label": verdict["label"],
        "head": f"0.{verdict['head']}",
        "headline": verdict["sentences"][0] if verdict["sentences"] else "",
        "spearman_rho": rho,
    }


def _top_head(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    zero = [c for c in doc["conditions"].values() if c["kind"] == "ablation" and c["method"] == "zero"]
    if not zero:
        return None
    worst = min(zero, key=lambda c: c["delta_accuracy"]["mean"])
    return {
        "head": f"{worst['layer']}.{worst['head']}",
        "delta_accuracy": worst["delta_accuracy"],
        "p_holm": worst.get("wilcoxon_loss", {}).get("p_holm"),
    }


def _tolerance(doc: Mapping[str, Any]) -> dict[str, Any]:
    verdict = doc["verdict"]
    level = doc["settings"]["level"]
    at_level = [t for t in doc["thresholds"] if t["level"] == level and t["statistic"] == "accuracy"]
    bounded = [t for t in at_level if t["margin"]["ci_low"] is not None]
    tight = min(bounded, key=lambda t: t["margin"]["ci_low"]) if bounded else None
    return {
        "label": verdict["label"],
        "head": f"{doc['head']['layer']}.{doc['head']['head']}",
        "headline": verdict.get("headline") or " ".join(verdict["sentences"][:1]),
        "sequence_label": doc["sequence_verdict"]["label"],
        "own_flip_mass": doc["own"]["flip_mass"],
        "level": level,
        "margin": tight["margin"] if tight else None,
        "margin_family": tight["family"] if tight else None,
        "threshold": tight["flip_mass"] if tight else None,
    }


def _interchange(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "label": doc["conclusion"]["label"],
        "headline": doc["conclusion"]["sentences"][0] if doc["conclusion"]["sentences"] else "",
        "iia_table": [
            {
                "site": s["site"],
                "layer": s["layer"],
                "iia": s["iia"],
                "iia_whole": s["iia_whole"],
                "off_program_max": s["off_program_max"],
            }
            for s in doc["sites"]
        ],
        "selector": {
            "head": f"{doc['selector']['layer']}.{doc['selector']['head']}",
            "holds": doc["selector"]["holds"],
            "sentence": doc["selector"]["sentence"],
        },
    }


def _certificate(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "per_digit": doc["per_digit"],
        "sequence": doc["sequence"],
        "inputs": doc["inputs"],
        "pairs": doc["pairs"],
        "method": doc["method"],
        "budget_seconds": doc["settings"]["budget_seconds"],
        "max_boxes": doc["settings"].get("max_boxes"),
        "budget": doc["compute"].get("budget"),
        "resolved": doc["resolved"],
        "wrong_pairs": doc["census"]["wrong_pairs"],
        "seconds": doc["compute"]["seconds"],
        "regime": doc["regime"],
        "verdict": doc["verdict"]["bounds"],
    }


def key_metrics(docs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``{"accuracy", "flip_mass", "pe_zero_accuracy", "qk_verdict", "top_head", "tolerance_verdict",
    "interchange", "certificate"}``; None where the analysis that measures it is not among ``docs``
    (analysis name → metrics.json dict)."""
    flip = _flip_head(docs["flip_alignment"]) if "flip_alignment" in docs else None
    return {
        "accuracy": _accuracy(docs),
        "flip_mass": flip,
        "pe_zero_accuracy": _pe_zero(docs["pe_ablation"]) if "pe_ablation" in docs else None,
        "qk_verdict": _verdict(docs["qk_circuit"]) if "qk_circuit" in docs else None,
        "top_head": _top_head(docs["head_ablation"]) if "head_ablation" in docs else None,
        "tolerance_verdict": _tolerance(docs["tolerance"]) if "tolerance" in docs else None,
        "interchange": _interchange(docs["interchange"]) if "interchange" in docs else None,
        "certificate": _certificate(docs["certificate"]) if "certificate" in docs else None,
    }
