"""Sets of heads: is the model tolerant of a noisy map, or do its heads cover for each other?

Degrading one head shows how much noise the *model* survives while the other heads are intact: on a
model whose heads each carry the flip, that is redundancy, not tolerance. For a set S of heads this
runs every pattern family twice over:

- **jointly**: every head of S moved to the same family point at once (``interp.tolerance`` with
  ``heads=S``; flip mass = the mean over S of each head's flip mass), the thresholds and margins at
  ``level`` as for one head;
- **per head**: each head of S alone (the others intact).

The rule: S is *redundant* when every head alone keeps a margin ≥ the slack in every family (its
tightest margin's CI low end ≥ slack) but the joint degradation does not. Then "robust" comes from the
heads covering for each other and the verdict may not call the model tolerant (``redundancy_verdict``
turns a "right" into "partly right" and says why).

The readout (vote rule vs heaviest key, :mod:`interp.readout`) is measured along every family for the
set too: jointly, on the set's mean pattern Ā' = (1/|S|) Σ_h A'_h (its vote is the sum of the heads'
votes: the readout of heads that write their votes into one place), and per head, on that head's own
pattern with the others intact. Along a degraded family a head whose work the others duplicate decides
nothing: the model's digit then follows neither rule read off that head alone, and the one-head readout
says nothing about the rule. :func:`analyses.tolerance.result.set_readout_sentence` scopes the claims
accordingly.

The default set (``--heads auto``): every head whose zero ablation changes the output logits on the
first batch (:func:`output_heads`) — the heads the output depends on; ``all``, ``layer:L`` and
``L.H,L.H`` name a set directly; ``none`` skips this part. A set of one head adds nothing to the main
analysis and is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from analyses.frame.result import plain
from analyses.tolerance.result import READOUT, compare_rules
from interp.ablation import ablate_heads, check_heads
from interp.pattern_families import PatternFamily
from interp.readout import readout_estimates, readout_statistic
from interp.stats import Estimate
from interp.thresholds import Threshold, family_threshold
from interp.tolerance import sweep_units
from interp.tolerance_verdict import Verdict

Head = tuple[int, int]


def head_label(head: Head) -> str:
    return f"{head[0]}.{head[1]}"


@torch.no_grad()
def output_heads(model: Any, tokens: torch.Tensor, rtol: float = 1e-4) -> list[Head]:
    """The heads whose zero ablation (z = 0) changes the output logits on ``tokens``: max |Δℓ| >
    ``rtol`` · max |ℓ|. Logits, not predictions: a head whose work another head duplicates changes no
    prediction when removed alone, and is exactly the head a redundancy check must include."""
    clean = model(tokens)
    scale = rtol * float(clean.abs().max().clamp_min(1e-12))
    found = []
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            with ablate_heads(model, [(layer, head)], "zero"):
                if float((model(tokens) - clean).abs().max()) > scale:
                    found.append((layer, head))
    return found


def parse_heads(text: str) -> str | list[Head]:
    """``auto`` | ``all`` | ``none`` | ``layer:L`` (kept as text) or ``L.H,L.H`` (a list of pairs);
    ValueError with one line naming the problem otherwise."""
    text = text.strip()
    if text in ("auto", "all", "none") or (text.startswith("layer:") and text[6:].isdigit()):
        return text
    heads = []
    for part in text.split(","):
        layer, dot, head = part.strip().partition(".")
        if not (dot and layer.isdigit() and head.isdigit()):
            raise ValueError(f"expected auto, all, none, layer:L or heads as L.H,L.H; got {text!r}")
        heads.append((int(layer), int(head)))
    return heads


def resolve_heads(model: Any, spec: str | Sequence[Head], tokens: torch.Tensor) -> tuple[list[Head], str]:
    """The set of heads ``spec`` names on ``model`` (:func:`parse_heads`) and how it was chosen."""
    cfg = model.cfg
    if spec == "none":
        return [], "not asked (--heads none)"
    if spec == "auto":
        heads = output_heads(model, tokens)
        return heads, "every head whose zero ablation changes the logits on the first batch"
    if spec == "all":
        return [(lay, h) for lay in range(cfg.n_layers) for h in range(cfg.n_heads)], "every head"
    if isinstance(spec, str) and spec.startswith("layer:"):
        layer = int(spec[6:])
        return check_heads(model, [(layer, h) for h in range(cfg.n_heads)]), f"every head of layer {layer}"
    return check_heads(model, spec), "chosen by the caller"


@dataclass
class HeadSetResult:
    """Joint and per-head thresholds of a set of heads, and the redundancy rule's outcome."""

    heads: list[Head]
    choice: str
    joint_own_accuracy: float  # accuracy with every head at its own pattern (the families' identity)
    joint: list[Threshold]  # one per family at ``level``: every head of the set degraded together
    per_head: dict[str, list[Threshold]]  # "L.H" → that head alone
    slack: float
    redundant: bool
    sentence: str
    # family → READOUT rate → per point: the set degraded together, read on its mean pattern
    joint_readout: dict[str, dict[str, list[Estimate]]]
    per_head_readout: dict[str, dict[str, dict[str, list[Estimate]]]]  # "L.H" → that head alone
    values: dict[str, list[float]]  # family → its grid

    def readout_by_family(self) -> dict[str, Any]:
        """:func:`compare_rules` per family, jointly and per head."""
        joint = {f: compare_rules(self.values[f], r) for f, r in self.joint_readout.items()}
        per_head = {
            k: {f: compare_rules(self.values[f], r) for f, r in v.items()}
            for k, v in self.per_head_readout.items()
        }
        return {"joint": joint, "per_head": per_head}

    def to_dict(self) -> dict[str, Any]:
        return {
            "heads": [head_label(h) for h in self.heads],
            "choice": self.choice,
            "joint_own_accuracy": self.joint_own_accuracy,
            "joint": [t.to_dict() for t in self.joint],
            "per_head": {k: [t.to_dict() for t in v] for k, v in self.per_head.items()},
            "slack": self.slack,
            "redundant": self.redundant,
            "sentence": self.sentence,
            "readout": {
                "joint": plain(self.joint_readout),
                "per_head": plain(self.per_head_readout),
                "by_family": self.readout_by_family(),
            },
        }


def tightest(thresholds: Sequence[Threshold]) -> Threshold | None:
    """The family with the smallest margin CI low end (None if no family could locate a threshold)."""
    tested = [t for t in thresholds if t.status != "single_point"]
    return min(tested, key=lambda t: t.margin.ci_low) if tested else None


def set_thresholds(
    model: Any,
    batches: Callable[[], Iterator[torch.Tensor]],
    num_sequences: int,
    families: Sequence[PatternFamily],
    heads: Sequence[Head],
    level: float,
    resamples: int,
    confidence: float,
    seed: list[int],
    seq_len: int,
    radius: int,
) -> tuple[float, list[Threshold], dict[str, dict[str, list[Estimate]]]]:
    """(own accuracy, thresholds at ``level`` per family, readout rates per family) with every head of
    ``heads`` degraded together; the readout is read on the set's mean pattern (module docstring)."""
    statistics = {"readout": readout_statistic(radius)}
    units = sweep_units(model, batches(), num_sequences, families, statistics=statistics, heads=list(heads))
    counts = None if units.per_sequence else units.counts.numpy()
    out, readout, start = [], {}, 0
    for f in families:
        p = len(f.values)
        acc = units.sums["accuracy"].numpy()[:, start : start + p]
        flip = units.sums["flip_mass"].numpy()[:, start : start + p]
        rates = readout_estimates(
            units.sums["readout"].numpy()[:, start : start + p], seq_len, resamples, confidence, seed, counts
        )
        readout[f.name] = {name: rates[name] for name in READOUT}
        start += p
        out.append(family_threshold(f, acc, flip, level, "accuracy", resamples, confidence, seed, counts))
    first = families[0]
    own = units.sums["accuracy"].numpy()[:, first.values.index(first.identity)].sum() / num_sequences
    return float(own), out, readout


def head_set(
    model: Any,
    batches: Callable[[], Iterator[torch.Tensor]],
    num_sequences: int,
    families: Sequence[PatternFamily],
    heads: Sequence[Head],
    choice: str,
    level: float,
    slack: float,
    resamples: int,
    confidence: float,
    seed: list[int],
    seq_len: int,
    radius: int = 2,
) -> HeadSetResult:
    """Joint and per-head thresholds and readouts of ``heads``, and the redundancy rule (module
    docstring)."""
    heads = list(heads)
    run = lambda hs: set_thresholds(  # noqa: E731
        model, batches, num_sequences, families, hs, level, resamples, confidence, seed, seq_len, radius
    )
    own, joint, joint_readout = run(heads)
    alone_runs = {head_label(h): run([h]) for h in heads}
    per_head = {k: v[1] for k, v in alone_runs.items()}
    per_head_readout = {k: v[2] for k, v in alone_runs.items()}
    tight_joint = tightest(joint)
    alone = {k: tightest(v) for k, v in per_head.items()}
    each_alone = all(t is not None and t.margin.ci_low >= slack for t in alone.values())
    joint_ok = tight_joint is not None and tight_joint.margin.ci_low >= slack
    redundant = len(heads) > 1 and each_alone and not joint_ok
    names = ", ".join(head_label(h) for h in heads)

    def margin(t: Threshold | None) -> str:
        if t is None:
            return "no threshold located"
        return f"{t.family} margin {t.margin.mean:.3f} [{t.margin.ci_low:.3f}, {t.margin.ci_high:.3f}]"

    per = "; ".join(f"head {k} alone: {margin(t)}" for k, t in alone.items())
    if redundant:
        sentence = (
            f"For the heads {names} ({choice}), degraded one at a time, each keeps a margin ≥ the slack "
            f"{slack:.3f} ({per}), but degraded together they leave only {margin(tight_joint)}: the "
            f"robustness comes from the heads covering for each other, not from tolerance of a noisy map."
        )
    else:
        sentence = (
            f"For the heads {names} ({choice}), degraded together: {margin(tight_joint)} "
            f"({'≥' if joint_ok else '<'} the slack {slack:.3f}); one at a time: {per}."
        )
    values = {f.name: list(f.values) for f in families}
    return HeadSetResult(
        heads,
        choice,
        own,
        joint,
        per_head,
        slack,
        redundant,
        sentence,
        joint_readout,
        per_head_readout,
        values,
    )


def redundancy_verdict(verdict: Verdict, heads: HeadSetResult | None) -> Verdict:
    """A "right" verdict that only holds because other heads cover becomes "partly right", with why."""
    if heads is None:
        return verdict
    sentences = [*verdict.sentences, heads.sentence]
    rule = (
        verdict.rule + "; a set of heads that keeps the slack one head at a time but not jointly is "
        "redundant, not tolerant: 'right' becomes 'partly right'"
    )
    label = "partly right" if heads.redundant and verdict.label == "right" else verdict.label
    return Verdict(label, sentences, rule)
