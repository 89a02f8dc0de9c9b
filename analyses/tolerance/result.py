"""Result objects of :mod:`analyses.tolerance`: ``to_dict`` is metrics.json, ``csv_rows`` metrics.csv,
``summary`` the text the CLI prints."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyses.frame import numbers
from analyses.frame.result import SampledResult, estimate_row, plain
from interp.stats import Estimate
from interp.thresholds import Threshold
from interp.tolerance_verdict import Verdict

ANALYSIS = "tolerance"
# 2: "head_set" (joint and per-head thresholds of a set of heads, the redundancy rule), readout
# "by_family" (vote vs heaviest key along every family); slack is the one the verdict used (default:
# a tenth of the own flip mass); threshold CIs hold the grid bracket; proportions Clopper-Pearson
SCHEMA_VERSION = 2
DEFAULT_OUT = Path("out") / ANALYSIS
CURVES = ("accuracy", "sequence_accuracy", "flip_mass")
# Readout rates per family point (interp.readout.readout_estimates), in the order they are reported.
READOUT = (
    "vote_agreement",
    "argmax_agreement",
    "vote_accuracy",
    "vote_gap",
    "adversarial_vote_agreement",
    "adversarial_argmax_agreement",
    "adversarial_accuracy",
    "pearson",
    "slope",
)


def fmt(e: Estimate, digits: int = 3) -> str:
    def one(x: float) -> str:
        if x == math.inf:
            return "above range"
        if x == -math.inf:
            return "below range"
        return "n/a" if math.isnan(x) else f"{x:.{digits}f}"

    if all(math.isfinite(x) for x in (e.mean, e.ci_low, e.ci_high)):
        return numbers.interval(e.mean, e.ci_low, e.ci_high, digits)  # ends rounded outwards
    return f"{one(e.mean)} [{one(e.ci_low)}, {one(e.ci_high)}]"


def compare_rules(values: Sequence[float], readout: dict[str, Any]) -> dict[str, Any]:
    """Vote rule vs heaviest key along one family: at how many points each agrees more often with the
    model's digit (gap g_p = vote agreement − heaviest-key agreement, > 0 vote better), and the point of
    the largest |g_p| (each claim scoped to its family). ``readout``: rates per point (Estimates or
    their ``to_dict``)."""
    mean = lambda e: e["mean"] if isinstance(e, dict) else e.mean  # noqa: E731
    vote = [mean(e) for e in readout["vote_agreement"]]
    heavy = [mean(e) for e in readout["argmax_agreement"]]
    gaps = [v - h for v, h in zip(vote, heavy)]
    k = max(range(len(gaps)), key=lambda i: abs(gaps[i]))
    return {
        "points": len(gaps),
        "vote_better": sum(g > 0 for g in gaps),
        "heaviest_better": sum(g < 0 for g in gaps),
        "largest_gap": {"value": values[k], "vote": vote[k], "heaviest": heavy[k]},
    }


def winner(rules: dict[str, Any]) -> str:
    """The rule of :func:`compare_rules` that agrees more often at more points ("neither" on a tie)."""
    if rules["vote_better"] != rules["heaviest_better"]:
        return "vote" if rules["vote_better"] > rules["heaviest_better"] else "heaviest key"
    return "neither"


def set_readout_sentence(group: Any, one_head: str, one_head_rules: dict[str, dict[str, Any]]) -> str:
    """Which rule predicts the output along each family, for the set degraded together (its summed vote
    and heaviest key) next to the one head of the main analysis (``one_head`` "L.H", the others intact,
    ``one_head_rules`` from :func:`compare_rules`; ``group`` an
    :class:`analyses.tolerance.heads.HeadSetResult`). Where the rule that wins at more points differs
    between the two, the one head's readout was measured with other heads taking part in the output, and
    the claim belongs to the set."""
    joint = group.readout_by_family()["joint"]
    parts, differ = [], []
    for family, r in joint.items():
        one = one_head_rules[family]
        vote_set = [e.mean for e in group.joint_readout[family]["vote_agreement"]]
        parts.append(
            f"{family}: set {winner(r)} ({r['vote_better']} vs {r['heaviest_better']} of {r['points']} "
            f"points, set vote agreement {min(vote_set):.3f} to {max(vote_set):.3f}), head {one_head} "
            f"alone {winner(one)} ({one['vote_better']} vs {one['heaviest_better']})"
        )
        if winner(r) != winner(one):
            differ.append(family)
    names = ", ".join(f"{lay}.{h}" for lay, h in group.heads)
    text = f"readout of the heads {names} degraded together (their summed vote) — " + "; ".join(parts)
    if differ:
        text += (
            f". In {', '.join(differ)} the rule that predicts the output differs between the set and head "
            f"{one_head} alone: there the other heads, intact, take part in the output, so the one-head "
            f"readout does not test the rule; the set's readout does"
        )
    if group.redundant:
        text += ". The heads are redundant: read the readout of the set, not of one head"
    return text + "."


@dataclass
class FamilyCurve:
    """One pattern family: per grid point, means over sequences with CIs (one set of resamples)."""

    name: str
    kind: str
    parameter: str  # "tau" or "s"
    offset: int | None
    values: list[float]
    identity: float
    accuracy: list[Estimate]
    sequence_accuracy: list[Estimate]
    flip_mass: list[Estimate]
    readout: dict[str, list[Estimate]]  # READOUT → per point
    logit_margin_by_vote_margin: list[Estimate]  # mean logit margin λ per vote-margin bin, all points

    @property
    def own(self) -> int:
        """Index of the model's own pattern (the identity point)."""
        return self.values.index(self.identity)


@dataclass
class Adversarial:
    """The model's own pattern on isolated-digit inputs (every probe query's neighbours agree on one
    wrong digit), and a beam search for the worst input."""

    num_sequences: int
    radius: int
    readout: dict[str, Estimate]  # READOUT rates at the own pattern, over these inputs
    min_vote_margin: float  # smallest vote margin μ over all inputs and queries
    share_vote_wrong: Estimate  # sequences where the vote is wrong somewhere (μ < 0)
    share_model_wrong: Estimate  # sequences the model gets wrong somewhere (logit margin < 0)
    vote_search: dict[str, Any]  # beam search minimising μ
    logit_search: dict[str, Any]  # beam search minimising the logit margin


@dataclass(repr=False)
class ToleranceResult(SampledResult):
    """How approximate may the flip head's attention be? Families, thresholds, verdicts, readout."""

    ANALYSIS = ANALYSIS
    SCHEMA_VERSION = SCHEMA_VERSION
    CSV_FIELDS = (
        "family",
        "statistic",
        "level",
        "parameter",
        "scope",
        "layer",
        "head",
        "metric",
        "index",
        "mean",
        "ci_low",
        "ci_high",
    )

    layer: int
    head: int
    head_choice: str
    level: float
    breaking_level: float
    slack: float
    own: dict[str, Estimate]  # accuracy, sequence_accuracy, flip_mass with the model's own pattern
    families: list[FamilyCurve]
    thresholds: list[Threshold]
    verdict: Verdict  # per-digit accuracy
    sequence_verdict: Verdict  # whole sequences right
    margin_bin_edges: list[float]
    adversarial: Adversarial
    settings: dict[str, Any]  # the analysis' own settings (grids, beam, ...)
    config: dict[str, Any]
    head_set: Any = None  # analyses.tolerance.heads.HeadSetResult, or None (a set of one head)
    provenance: dict[str, Any] = field(default_factory=dict)

    def family(self, name: str) -> FamilyCurve:
        return next(f for f in self.families if f.name == name)

    def threshold(self, family: str, level: float, statistic: str = "accuracy") -> Threshold:
        return next(
            t for t in self.thresholds if t.family == family and t.level == level and t.statistic == statistic
        )

    def verdict_headline(self) -> str:
        """The verdict in one sentence, as the issue words it: "right: it needs only X of its weight on
        the flipped key; it has Y of slack; blurring by τ = Z breaks it" (from the crossed thresholds)."""
        label = self.verdict.label
        own = self.own["flip_mass"]
        high = [self.threshold(f.name, self.level) for f in self.families]
        crossed = [t for t in high if t.status == "crossed"]
        if label in ("undetermined", "wrong") and not crossed:
            return f"{label}: {self.verdict.sentences[-1]}"
        parts = [f"{label}: the model puts {own.mean:.3f} of each row's weight on the flipped key"]
        if crossed:
            need = max(crossed, key=lambda t: t.flip_mass.mean)  # the most demanding family
            tight = min(crossed, key=lambda t: t.margin.mean)
            parts.append(
                f"it needs {fmt(need.flip_mass)} to stay ≥ {self.level:.0%} accurate ({need.family})"
            )
            parts.append(f"its slack is {fmt(tight.margin)} ({tight.family})")
        blur = self.threshold("temperature", self.breaking_level) if self.has_family("temperature") else None
        if blur is not None and blur.status == "crossed":
            parts.append(
                f"blurring the scores by τ = {blur.parameter.mean:.2f} [{blur.parameter.ci_low:.2f}, "
                f"{blur.parameter.ci_high:.2f}] breaks it (accuracy < {self.breaking_level:.0%})"
            )
        return "; ".join(parts) + "."

    def has_family(self, name: str) -> bool:
        return any(f.name == name for f in self.families)

    @property
    def clean_readout(self) -> dict[str, Estimate]:
        first = self.families[0]
        return {k: v[first.own] for k, v in first.readout.items()}

    def readout_by_family(self) -> dict[str, dict[str, Any]]:
        """Vote rule vs heaviest key along every family (:func:`compare_rules`), the head examined
        degraded and every other head intact."""
        return {f.name: compare_rules(f.values, f.readout) for f in self.families}

    def readout_sentence(self) -> str:
        """Which rule predicts the output, family by family (:meth:`readout_by_family`)."""
        parts = []
        name = {"tau": "τ"}
        for family, r in self.readout_by_family().items():
            f = self.family(family)
            g = r["largest_gap"]
            parts.append(
                f"{family}: vote better at {r['vote_better']}, heaviest key at {r['heaviest_better']} of "
                f"{r['points']} points (largest gap at {name.get(f.parameter, 's')} = {g['value']:.3g}: "
                f"vote {g['vote']:.3f} vs heaviest {g['heaviest']:.3f})"
            )
        text = f"readout of head {self.layer}.{self.head} along each family — " + "; ".join(parts)
        if self.head_set is not None:
            text += ". " + set_readout_sentence(
                self.head_set, f"{self.layer}.{self.head}", self.readout_by_family()
            )
        return text

    def to_dict(self) -> dict[str, Any]:
        def family_doc(f: FamilyCurve) -> dict[str, Any]:
            return {
                "kind": f.kind,
                "parameter": f.parameter,
                "offset": f.offset,
                "values": f.values,
                "identity": f.identity,
                **{name: plain(getattr(f, name)) for name in CURVES},
                "readout": plain(f.readout),
                "logit_margin_by_vote_margin": plain(f.logit_margin_by_vote_margin),
            }

        a = self.adversarial
        return {
            **self.header(),
            "settings": self.sampling_settings(
                layer=self.layer,
                head=self.head,
                level=self.level,
                breaking_level=self.breaking_level,
                slack=self.slack,
                margin_bin_edges=self.margin_bin_edges,
                **self.settings,
            ),
            "head": {"layer": self.layer, "head": self.head, "choice": self.head_choice},
            "own": plain(self.own),
            "verdict": {
                **self.verdict.to_dict(),
                "headline": self.verdict_headline(),
                "text": self.verdict.text,
                "unit": "per digit",
            },
            "sequence_verdict": {
                **self.sequence_verdict.to_dict(),
                "text": self.sequence_verdict.text,
                "unit": "whole sequences",
            },
            "thresholds": [t.to_dict() for t in self.thresholds],
            "families": {f.name: family_doc(f) for f in self.families},
            "readout": {
                "hypothesis": (
                    "output i is the digit with the largest total attention weight over the keys holding it "
                    "(a plurality vote); rival: the digit of the single heaviest key"
                ),
                "clean": plain(self.clean_readout),
                "by_family": self.readout_by_family(),
                "sentence": self.readout_sentence(),
            },
            "head_set": None if self.head_set is None else self.head_set.to_dict(),
            "adversarial": {
                "num_sequences": a.num_sequences,
                "radius": a.radius,
                "readout": plain(a.readout),
                "min_vote_margin": a.min_vote_margin,
                "share_vote_wrong": plain(a.share_vote_wrong),
                "share_model_wrong": plain(a.share_model_wrong),
            },
            "worst_case": {"vote_margin": a.vote_search, "logit_margin": a.logit_search},
        }

    def csv_rows(self) -> list[dict[str, Any]]:
        """Per family and grid point (index: the point; parameter: its value) the curves and readout
        rates; per family, statistic and level the threshold, its parameter and the margin; the
        adversarial rates (family "adversarial"). Rows of the head examined have scope "head"; the
        unintervened model's accuracy and flip mass (family "own") and the share of adversarial inputs
        the model gets wrong are model-wide."""
        where = {"layer": self.layer, "head": self.head}
        rows = []
        for f in self.families:
            series = {metric: getattr(f, metric) for metric in CURVES} | f.readout
            for metric, values in series.items():
                for i, e in enumerate(values):
                    rows.append(
                        estimate_row(e, family=f.name, parameter=f.values[i], metric=metric, index=i, **where)
                    )
            for i, e in enumerate(f.logit_margin_by_vote_margin):
                rows.append(
                    estimate_row(
                        e,
                        family=f.name,
                        parameter=self.margin_bin_edges[i],
                        metric="logit_margin_by_vote_margin",
                        index=i,
                        **where,
                    )
                )
        for t in self.thresholds:
            which = {"family": t.family, "statistic": t.statistic, "level": t.level, **where}
            for metric, e in (
                ("threshold_flip_mass", t.flip_mass),
                ("threshold_parameter", t.parameter),
                ("margin", t.margin),
            ):
                rows.append(estimate_row(e, metric=metric, **which))
        for metric, e in self.own.items():  # the unintervened model: model-wide
            rows.append(estimate_row(e, family="own", metric=metric))
        a = self.adversarial
        for metric, e in a.readout.items():
            rows.append(estimate_row(e, family="adversarial", metric=metric, **where))
        rows.append(
            estimate_row(a.share_vote_wrong, family="adversarial", metric="share_vote_wrong", **where)
        )
        rows.append(estimate_row(a.share_model_wrong, family="adversarial", metric="share_model_wrong"))
        return rows

    def summary(self) -> str:
        lines = [
            f"Tolerance of head {self.layer}.{self.head} ({self.head_choice}): "
            f"{self.num_sequences:,} sequences of length {self.seq_len}",
            f"verdict: {self.verdict_headline()}",
            f"in full (per digit): {self.verdict.text}",
            f"on whole sequences: {self.sequence_verdict.label}",
            f"{'family':<14} {'own flip':>9} {f'{self.level:.0%} threshold':<30} {'margin':<30} "
            f"{f'{self.breaking_level:.0%} threshold'}",
        ]
        for f in self.families:
            high = self.threshold(f.name, self.level)
            low = self.threshold(f.name, self.breaking_level)
            lines.append(
                f"{f.name:<14} {high.own_flip_mass:>9.3f} {fmt(high.flip_mass):<30} {fmt(high.margin):<30} "
                f"{fmt(low.flip_mass)}"
            )
        clean = self.clean_readout
        lines.append(
            f"readout, own pattern: vote rule agrees {fmt(clean['vote_agreement'], 4)}, heaviest key "
            f"{fmt(clean['argmax_agreement'], 4)}; logit vs vote margin r = {fmt(clean['pearson'])}"
        )
        lines.append(self.readout_sentence())
        if self.head_set is not None:
            lines.append(f"set of heads: {self.head_set.sentence}")
        a = self.adversarial
        lines.append(
            f"adversarial queries ({a.num_sequences:,} isolated-digit inputs): vote rule agrees "
            f"{fmt(a.readout['adversarial_vote_agreement'], 4)}, heaviest key "
            f"{fmt(a.readout['adversarial_argmax_agreement'], 4)}, model right "
            f"{fmt(a.readout['adversarial_accuracy'], 4)}"
        )
        worst = a.logit_search
        wrong = "wrong" if worst["model_wrong"] else "still right"
        lines.append(
            f"worst case found: vote margin {a.vote_search['score']:.3f}; logit margin {worst['score']:.3f} "
            f"on {worst['digits']} (the model is {wrong})"
        )
        return "\n".join(lines)

    def headline(self) -> str:
        tight = min(
            (self.threshold(f.name, self.level) for f in self.families),
            key=lambda t: t.margin.ci_low if not math.isnan(t.margin.ci_low) else math.inf,
        )
        return (
            f"verdict {self.verdict.label}; own flip mass {self.own['flip_mass'].mean:.3f}, smallest "
            f"{self.level:.0%} margin {tight.margin.mean:.3f} ({tight.family})"
        )


CSV_FIELDS = ToleranceResult.CSV_FIELDS
