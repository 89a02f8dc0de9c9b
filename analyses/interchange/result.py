"""Result objects of :mod:`analyses.interchange`: ``to_dict`` is metrics.json, ``csv_rows`` metrics.csv,
``summary`` the text the CLI prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyses.frame import numbers
from analyses.frame.result import SampledResult, estimate_row
from interp.interchange import InterchangeSummary, program_dependency
from interp.stats import Estimate, resampling_unit

ANALYSIS = "interchange"
# 2: every site and head has "variable" (searched: aggregate or token) and "iia_other_variables";
# top-level "variables" says how; IIA intervals are Clopper-Pearson (exact at 100%), the off-program
# max a Bonferroni bound
SCHEMA_VERSION = 2
DEFAULT_OUT = Path("out") / ANALYSIS
OUTPUT_SITES = ("z", "attn_out", "resid_mid")  # aligned with output i; resid_pre with output N − 1 − j
STRONG = 0.95  # IIA CI low at which a site "implements" the program's variable
PARTIAL = 0.5  # IIA CI low at which it carries it for most interchanges
LEAK = 0.05  # largest off-program change (CI high) allowed to "implements"


def fmt(e: Estimate, digits: int = 4) -> str:
    return numbers.interval(e.mean, e.ci_low, e.ci_high, digits)  # ends rounded outwards


@dataclass
class Conclusion:
    """Does the network implement the reverse program, variable by variable? Label, sentences, rule."""

    label: str  # "implements", "partly", "does not"
    sentences: list[str]
    rule: str

    @property
    def text(self) -> str:
        return f"{self.label}: " + " ".join(self.sentences)


@dataclass(repr=False)
class InterchangeResult(SampledResult):
    """IIA of every site and head against Aggregate(Select(indices, N−1−indices, EQ), tokens);
    ``num_sequences`` counts (base, source) pairs."""

    ANALYSIS = ANALYSIS
    SCHEMA_VERSION = SCHEMA_VERSION
    CSV_FIELDS = (
        "site",
        "site_layer",
        "scope",
        "layer",
        "head",
        "metric",
        "index",
        "mean",
        "ci_low",
        "ci_high",
    )

    sites: list[InterchangeSummary]  # every requested site at every layer (head None: all heads)
    heads: list[InterchangeSummary]  # the z site of one head at a time
    selector: tuple[int, int]
    selector_holds: bool
    selector_sentence: str
    conclusion: Conclusion
    config: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)

    def site(self, name: str, layer: int = 0) -> InterchangeSummary:
        return next(s for s in self.sites if s.site == name and s.layer == layer)

    def to_dict(self) -> dict[str, Any]:
        names = sorted({s.site for s in self.sites}, key=["z", "attn_out", "resid_mid", "resid_pre"].index)
        return {
            **self.header(),
            "settings": self.sampling_settings(
                sites=names,
                sources="s_k = (b_k + 1 + r_k) mod C, r_k uniform on 0..C−2: every position differs",
                resampling_unit=resampling_unit(self.num_sequences).replace("sequence", "pair"),
            ),
            "program": "Aggregate(Select(indices, N−1−indices, EQ), tokens): output i is V_i = t[N−1−i]",
            "conclusion": {
                "label": self.conclusion.label,
                "sentences": self.conclusion.sentences,
                "text": self.conclusion.text,
                "rule": self.conclusion.rule,
            },
            "sites": [s.to_dict() for s in self.sites],
            "heads": [{k: v for k, v in s.to_dict().items() if k != "dependency"} for s in self.heads],
            "selector": {
                "layer": self.selector[0],
                "head": self.selector[1],
                "holds": self.selector_holds,
                "sentence": self.selector_sentence,
            },
            "program_dependency": {name: program_dependency(name, self.seq_len).tolist() for name in names},
            "variables": "each site is scored against the variable it carries best: aggregate V_p = t[N−1−p] "
            "(read by output p) or token t[p] (read by output N−1−p); 'iia_other_variables' has the other",
        }

    def csv_rows(self) -> list[dict[str, Any]]:
        """Per site and layer (``site_layer``; scope "model": all heads patched together) and per head's
        z (scope "head"): IIA, whole-output IIA, on- and off-program dependency, the largest off-program
        cell, and IIA per position (metric ``iia_by_position``, index: the site's position)."""
        rows = []
        for s, one_head in [(s, False) for s in self.sites] + [(s, True) for s in self.heads]:
            where = {"layer": s.layer, "head": s.head} if one_head else {}
            for metric in ("iia", "iia_whole", "on_program", "off_program", "off_program_max"):
                rows.append(
                    estimate_row(getattr(s, metric), site=s.site, site_layer=s.layer, metric=metric, **where)
                )
            for i, e in enumerate(s.iia_by_position):
                rows.append(
                    estimate_row(
                        e, site=s.site, site_layer=s.layer, metric="iia_by_position", index=i, **where
                    )
                )
        return rows

    def summary(self) -> str:
        lines = [
            f"Interchange interventions: {self.num_sequences:,} (base, source) pairs of length "
            f"{self.seq_len}",
            f"conclusion: {self.conclusion.text}",
            f"{'site':<12} {'layer':>5} {'variable':<10} {'IIA':<26} {'whole output':<26} "
            "largest off-program change",
        ]
        for s in self.sites:
            lines.append(
                f"{s.site:<12} {s.layer:>5} {s.variable:<10} {fmt(s.iia):<26} {fmt(s.iia_whole):<26} "
                f"{fmt(s.off_program_max)}"
            )
        lines.append(
            "variable: the program variable each site is scored against, searched per site (aggregate "
            "V_p = t[N−1−p], read by output p; token t[p], read by output N−1−p)"
        )
        if len(self.heads) > 1:
            heads = ", ".join(f"{s.layer}.{s.head}: {s.iia.mean:.3f}" for s in self.heads)
            lines.append(f"IIA of each head's z: {heads}")
        lines.append(self.selector_sentence)
        return "\n".join(lines)

    def headline(self) -> str:
        """The conclusion and the IIA of the head output ``z`` (the site the selector claim is about;
        the best site when z was not measured)."""
        z = [s for s in self.sites if s.site == "z"]
        quoted = max(z or self.sites, key=lambda s: s.iia.mean)
        return (
            f"{self.conclusion.label}; IIA of {quoted.site} {quoted.iia.mean:.4f} "
            f"(layer {quoted.layer}, variable {quoted.variable})"
        )


CSV_FIELDS = InterchangeResult.CSV_FIELDS
