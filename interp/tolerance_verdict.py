"""The verdict on the tutorial's first sentence, from the tolerance thresholds.

The tutorial: "the model does not need perfect, strict attention to solve the task and can accept an
approximate, noisy attention map". Two claims, each checked against numbers:

1. *does not need strict attention*: with its own pattern the model is accurate (per-digit accuracy
   ≥ ``level``, default 99%) although its flip mass is well below one (the CI's upper end < ``STRICT``
   = 0.9: at least a tenth of every row's weight is elsewhere);
2. *can accept a noisy map*: pushed further along every family, it keeps ≥ ``level`` for at least
   ``slack`` more flip mass: the margin's CI lower end ≥ slack in every family that can locate a
   threshold. (A family whose accuracy never falls below ``level`` has an infinite margin; its lower
   bound is still the tested range's, which is what is compared.)

The slack rule (default): a tenth of the model's own flip mass, ``SLACK_FRACTION`` · m_own. "Accepts a
noisy map" is read as "survives losing a tenth of the weight it puts on the right key". A relative rule
because an absolute one means different things for different heads: 0.05 is 7% of a flip mass of 0.7
but 17% of 0.3; and a tenth because smaller perturbations are within what the same architecture shows
from seed to seed (flip masses of 0.71–0.76 over the fast preset's seeds: ±0.03, about 5% of 0.7),
so a margin below that is not evidence of tolerance beyond ordinary training noise. A fixed absolute
``slack`` can still be given. When the tightest family's margin CI contains the slack, the verdict says
the comparison is *not resolved* rather than pretending the CI's low end settles it.

Labels: ``right`` (1 and 2 hold; also when the model makes a near-strict map but tolerates the noise),
``partly right`` (1 holds, 2 fails in some family: it works with its own approximate map but has
little slack), ``wrong`` (the model's own map is not ≥ ``level`` accurate, or it is near-strict and
has little slack), ``undetermined`` (no family has more than one grid point: nothing was tested).
Every sentence is generated from the measured numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from interp.stats import Estimate
from interp.thresholds import Threshold

LABELS: tuple[str, ...] = ("right", "partly right", "wrong", "undetermined")
STRICT = 0.9  # an own flip mass whose CI reaches this is "near-strict" attention
SLACK_FRACTION = 0.1  # default slack: this fraction of the model's own flip mass (module docstring)
CLAIM = (
    "the model does not need perfect, strict attention to solve the task and can accept an approximate, "
    "noisy attention map"
)


@dataclass(frozen=True)
class Verdict:
    label: str
    sentences: list[str]
    rule: str

    def to_dict(self) -> dict[str, object]:
        return {"claim": CLAIM, "label": self.label, "sentences": list(self.sentences), "rule": self.rule}

    @property
    def text(self) -> str:
        return f"{self.label}: " + " ".join(self.sentences)


def _v(x: float, digits: int = 3) -> str:
    if x == math.inf:
        return "above the tested range"
    if x == -math.inf:
        return "below the tested range"
    return f"{x:.{digits}f}"


def _e(est: Estimate, digits: int = 3) -> str:
    return f"{_v(est.mean, digits)} [{_v(est.ci_low, digits)}, {_v(est.ci_high, digits)}]"


def _where(t: Threshold) -> str:
    name = "τ" if t.parameter_name == "tau" else "s"
    if t.status == "crossed":
        return f"at flip mass {_e(t.flip_mass)} ({name} = {_e(t.parameter, 2)})"
    return f"nowhere in the grid ({t.reason})"


def default_slack(own_flip_mass: float) -> float:
    """The default slack: ``SLACK_FRACTION`` of the model's own flip mass (module docstring)."""
    return SLACK_FRACTION * max(float(own_flip_mass), 0.0)


def make_verdict(
    own_accuracy: Estimate,
    own_flip_mass: Estimate,
    thresholds: Sequence[Threshold],
    breaking: Sequence[Threshold] = (),
    level: float = 0.99,
    slack: float | None = None,
    unit: str = "per digit",
) -> Verdict:
    """Label and sentences (see the module docstring). ``thresholds`` are the families' thresholds at
    ``level``; ``breaking`` optionally the same families at a lower level (e.g. 50%), quoted as where
    the model breaks; ``unit`` says what the accuracies count ("per digit", "on whole sequences");
    ``slack`` None: a tenth of the own flip mass (:func:`default_slack`)."""
    given = slack is not None
    slack = float(slack) if given else default_slack(own_flip_mass.mean)
    slack_rule = (
        f"slack {slack:.3f} (given)"
        if given
        else f"slack {slack:.3f} = {SLACK_FRACTION:g} × the own flip mass {own_flip_mass.mean:.3f}"
    )
    rule = (
        f"{slack_rule}. right: own accuracy ≥ {level:.0%}, and every family can remove ≥ the slack in "
        f"flip mass (margin CI "
        f"low) before accuracy drops below {level:.0%}; partly right: own accuracy ≥ {level:.0%} with own "
        f"flip mass CI < {STRICT}, but some family's margin CI low < the slack; wrong: own accuracy < "
        f"{level:.0%}, or own flip mass CI ≥ {STRICT} with too little margin; undetermined: no family "
        f"grid has more than one point"
    )
    if any(t.level != level for t in thresholds):
        raise ValueError(f"all thresholds must be at the verdict's level {level}")
    tested = [t for t in thresholds if t.status != "single_point"]
    solves = own_accuracy.mean >= level
    approximate = own_flip_mass.ci_high < STRICT
    own = (
        f"With its own attention the model puts {_e(own_flip_mass)} of each row's weight on the flipped "
        f"key and is {_e(own_accuracy, 4)} accurate {unit}."
    )
    if not tested:
        reasons = "; ".join(t.reason for t in thresholds) or "no pattern family was given"
        return Verdict("undetermined", [own, f"No family could locate a threshold: {reasons}."], rule)
    if not solves:
        return Verdict(
            "wrong",
            [own, f"That is below {level:.0%}: the model does not accept even its own approximate map."],
            rule,
        )
    tight = min(tested, key=lambda t: t.margin.ci_low)
    tolerant = tight.margin.ci_low >= slack
    sentences = [own]
    families = "; ".join(f"{t.family} {_where(t)}, margin {_e(t.margin)}" for t in tested)
    sentences.append(f"Accuracy stays ≥ {level:.0%} down to: {families}.")
    if breaking:
        worst = [f"{t.family} {_where(t)}" for t in breaking]
        sentences.append(f"It falls below {breaking[0].level:.0%} {'; '.join(worst)}.")
    if tolerant:
        label = "right"
        sentences.append(
            f"Every family can take at least the slack, {slack:.3f} ({slack_rule}), of the flipped key's "
            f"weight away before accuracy drops below {level:.0%} (smallest margin: {tight.family}, "
            f"{_e(tight.margin)})."
        )
    else:
        label = "partly right" if approximate else "wrong"
        first = (
            "It does not need strict attention"
            if approximate
            else f"Its own map is near-strict (flip mass CI reaches {STRICT})"
        )
        if tight.margin.ci_high >= slack:
            sentences.append(
                f"{first}; whether it accepts more noise is not resolved: {tight.family} leaves a margin "
                f"of {_e(tight.margin)} flip mass, whose CI contains the slack {slack:.3f} ({slack_rule})."
            )
        else:
            sentences.append(
                f"{first}, but it cannot accept much more noise: {tight.family} leaves a margin of only "
                f"{_e(tight.margin)} flip mass (less than the slack {slack:.3f}) before accuracy drops "
                f"below {level:.0%}."
            )
    skipped = [t for t in thresholds if t.status == "single_point"]
    if skipped:
        sentences.append("Not tested: " + "; ".join(t.reason for t in skipped) + ".")
    return Verdict(label, sentences, rule)
