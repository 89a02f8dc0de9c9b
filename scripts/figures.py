"""The measured figures the README and the docs quote, regenerated from the commands that give them.

A quoted figure is written between inline markers, ``<!--fig:KEY-->VALUE<!--/fig-->`` (invisible once
rendered), anywhere in ``README.md`` or ``docs/**/*.md``; KEY names an entry of ``FIGURES`` below, which
says which documented command gives it and how it is read from that command's ``metrics.json``.

    python scripts/figures.py              run every documented command on the default model (a few
                                           minutes; the default model is trained first if not cached),
                                           record the figures in docs/figures/figures.json, copy the
                                           figures' PNGs into docs/figures/, rewrite every marked value
                                           and the generated page docs/guide/figures.md
    python scripts/figures.py --only tolerance,interchange
                                           the same for some commands; the others keep their record
    python scripts/figures.py --check      no run: exit 1, naming each one, when a marked value, the
                                           generated page or a PNG differs from the record (the test
                                           suite does this)
    python scripts/figures.py --rerun-check
                                           run the commands into a temporary folder and compare the
                                           marked values with what they give now (exit 1 on drift);
                                           writes nothing

Values are formatted once here (mean and 95% CI, decimals per figure), so the pages quote exactly what
the record holds, and the record holds what the commands' metrics.json said.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = Path("docs/figures/figures.json")  # relative to the root
PAGE = Path("docs/guide/figures.md")
PNG_DIR = Path("docs/figures")
MARKER = re.compile(r"(?<!`)<!--fig:([A-Za-z0-9_.+-]+)-->(.*?)<!--/fig-->", re.S)  # `quoted` ones: examples

CERTIFICATE_BOXES = 300_000  # regions the certificate's proof bounds for the quoted figures (~4 min idle)
CERTIFICATE_SUSPECT = "7777773773777777"  # an input tolerance's adversary found wrong (issue 26)

# The documented commands, as a reader types them (see docs/guide/analyses.md). Analysis commands get
# ``--out WORK/<name> --quiet`` appended; training_dynamics' two commands run in WORK.
COMMANDS: dict[str, tuple[str, ...]] = {
    "flip_alignment": ("python -m analyses.flip_alignment",),
    "qk_circuit": ("python -m analyses.qk_circuit",),
    "pe_ablation": ("python -m analyses.pe_ablation",),
    "head_ablation": ("python -m analyses.head_ablation",),
    "length_generalisation": ("python -m analyses.length_generalisation",),
    "tolerance": ("python -m analyses.tolerance",),
    "interchange": ("python -m analyses.interchange",),
    "training_dynamics": (
        "python -m models.train --preset tutorial --stop-at-perfect --save-every-log-steps 8 --out runs",
        "python -m analyses.training_dynamics --run runs/tutorial-seed0",
    ),
    # The crossing order over 5 training seeds (the README's headline; seed 0's run is shared with the
    # command above when both run: models.train skips a finished run). ~3 min on an idle 2-core machine.
    "training_dynamics_seeds": (
        *(
            f"python -m models.train --preset tutorial --stop-at-perfect --save-every-log-steps 8 --seed {s} "
            "--out runs"
            for s in range(5)
        ),
        "python -m analyses.training_dynamics --run "
        + " ".join(f"runs/tutorial-seed{s}" for s in range(5))
        + " --num-sequences 1000",
    ),
    # a benchmark: wall seconds, so its figures need an idle machine (docs/guide/performance.md)
    "run_anatomy": ("python benchmarks/run_anatomy.py",),
    # How far the linear shortcuts are from patching (docs/guide/transformer-lens.md); a few seconds.
    "linearisation_error": ("python scripts/linearisation_error.py",),
    # A box budget, not seconds: the same bounds whatever the machine's load (about 5 minutes of one core).
    # The bounds, the census and the theorem columns (~15 s of the ~6 min): the README's one command.
    "certificate": (
        f"python -m analyses.certificate --budget-boxes {CERTIFICATE_BOXES} --suspect {CERTIFICATE_SUSPECT}",
    ),
}

# The PNGs the docs show, per command (docs/figures/<analysis>/<name>.png).
PNGS: dict[str, tuple[str, ...]] = {
    "flip_alignment": ("mean_attention", "offset_profile"),
    "qk_circuit": ("similarity_vs_attention",),
    "pe_ablation": ("conditions",),
    "head_ablation": ("pattern_interventions",),
    "length_generalisation": ("accuracy",),
    "tolerance": ("tolerance_curves",),
    "interchange": ("iia",),
    "training_dynamics": ("progress",),
    "certificate": ("cells", "theorem"),
}


# --- formatting: E = {"mean", "ci_low", "ci_high"} ------------------------------------------------------
def number(x: float, digits: int) -> str:
    """``x`` with ``digits`` decimals; ``-0.000`` printed as ``0.000``."""
    text = f"{x:.{digits}f}"
    return text[1:] if re.fullmatch(r"-0\.?0*", text) else text


def estimate(e: dict, digits: int) -> str:
    """``mean [ci_low, ci_high]`` (the CI left out when the record has none)."""
    if e.get("ci_low") is None or e.get("ci_high") is None:
        return number(e["mean"], digits)
    return f"{number(e['mean'], digits)} [{number(e['ci_low'], digits)}, {number(e['ci_high'], digits)}]"


def steps_apart(comparison: dict) -> str:
    """A crossing difference d = step(first) − step(second) as ``|d| [CI] steps before|after``; the
    CI is mirrored with the sign, so the words always read forwards. Unresolved ones say so."""
    d, verdict = comparison["difference"], comparison["verdict"]
    if verdict not in ("before", "after"):
        return f"{verdict} ({estimate(d, 0)} steps)"
    sign = -1 if verdict == "before" else 1
    low, high = sorted((sign * d["ci_low"], sign * d["ci_high"]))
    return f"{number(sign * d['mean'], 0)} [{number(low, 0)}, {number(high, 0)}] steps {verdict}"


def seeds_apart(seeds: dict, first: str, second: str = "accuracy", fraction: float = 0.5) -> str:
    """The median over runs of a crossing difference as ``|median| [interval] steps before|after, k/n
    seeds before|after (others: their verdicts) (median; the interval's confidence)``
    (:mod:`analyses.training_dynamics.seeds`)."""
    (row,) = [
        c
        for c in seeds["comparisons"]
        if c["first"] == first and c["second"] == second and c["fraction"] == fraction
    ]
    n = seeds["n"]
    if row["ci_low"] is None:
        return f"median {number(row['median'], 0)} steps over {n} seeds ({row['reason']})"
    sign, word = (-1, "before") if row["median"] < 0 else (1, "after")
    low, high = sorted((sign * row["ci_low"], sign * row["ci_high"]))
    others = ", ".join(f"{k} {v}" for k, v in row["verdicts"].items() if v and k != word)
    return (
        f"{number(sign * row['median'], 0)} [{number(low, 0)}, {number(high, 0)}] steps {word}, "
        f"{row['verdicts'][word]}/{n} seeds {word}{f' ({others})' if others else ''} "
        f"(median; interval {row['achieved_confidence']:.1%})"
    )


# --- where each figure is in its command's metrics.json -------------------------------------------------
def head0(m: dict) -> dict:
    return m["layers"][0]["heads"][0]


def threshold(m: dict, family: str, level: float = 0.99, statistic: str = "accuracy") -> dict:
    (row,) = [
        t
        for t in m["thresholds"]
        if t["family"] == family and t["level"] == level and t["statistic"] == statistic
    ]
    return row


def breaking(m: dict) -> list[dict]:
    """The crossed 50% thresholds (per digit) of every family."""
    return [
        t
        for t in m["thresholds"]
        if t["level"] == m["settings"]["breaking_level"]
        and t["statistic"] == "accuracy"
        and t["flip_mass"]["mean"] is not None
    ]


def site(m: dict, name: str, layer: int = 0) -> dict:
    (row,) = [s for s in m["sites"] if s["site"] == name and s["layer"] == layer]
    return row


def comparison(m: dict, first: str, second: str = "accuracy", fraction: float = 0.5) -> dict:
    (row,) = [
        c
        for c in m["comparisons"]
        if c["first"] == first and c["second"] == second and c["fraction"] == fraction
    ]
    return row


def safe(count: int, total: int, side: str, digits: int = 6) -> str:
    """A certified share ``count / total`` printed on its safe side with ``digits`` decimals: a lower
    bound rounded down, an upper bound up — in integer arithmetic on the exact counts, so neither the
    float the engine stored nor ``x * 10**digits`` can round it across a digit."""
    scaled, rest = divmod(count * 10**digits, total)
    scaled += side == "upper" and rest > 0
    whole, decimals = divmod(scaled, 10**digits)
    return f"{whole}.{decimals:0{digits}d}"


def certified(m: dict, scope: str, side: str) -> str:
    """The certificate's bound (``scope``: per_digit or sequence) from its exact counts, 7 decimals."""
    if scope == "per_digit":  # right pairs: all but the wrong ones (at most wrong_pairs.upper of them)
        wrong = m["census"]["wrong_pairs"]["upper" if side == "lower" else "lower"]
        return safe(m["pairs"] - wrong, m["pairs"], side, 7)
    return safe(m["sequences_right"][side], m["inputs"], side, 7)


def length(m: dict, n: int) -> dict:
    (row,) = [x for x in m["lengths"] if x["length"] == n]
    return row


@dataclass(frozen=True)
class Figure:
    key: str  # "<analysis>.<name>"
    what: str
    read: Callable[[dict], str]  # metrics.json -> the quoted text

    @property
    def analysis(self) -> str:
        return self.key.split(".")[0]


def share(result: dict, part: str) -> str:
    """A part's share of a run's (or an ensemble's) measured seconds, in whole percent."""
    return f"{100 * result['parts'][part] / result['wall_seconds']:.0f}%"


def floor_share(result: dict) -> str:
    """The arithmetic floor (FLOPs / the measured matmul rate) as a share of the measured seconds."""
    return f"{100 * sum(result['floor_seconds'].values()) / result['wall_seconds']:.0f}%"


FIGURES: tuple[Figure, ...] = (
    Figure(
        "run_anatomy.run_seconds",
        "one fast-preset run, seconds",
        lambda m: f"{m['run']['wall_seconds']:.1f} s",
    ),
    Figure("run_anatomy.run_floor", "one run: FLOP floor / seconds", lambda m: floor_share(m["run"])),
    Figure("run_anatomy.run_steps", "one run: share in the steps", lambda m: share(m["run"], "steps")),
    Figure(
        "run_anatomy.run_eval",
        "one run: final evaluation share",
        lambda m: share(m["run"], "final evaluation"),
    ),
    Figure(
        "run_anatomy.ensemble_seconds",
        "5-seed ensemble, seconds",
        lambda m: f"{m['ensemble']['wall_seconds']:.1f} s",
    ),
    Figure(
        "run_anatomy.ensemble_eval",
        "ensemble: final evaluation share",
        lambda m: share(m["ensemble"], "final evaluation"),
    ),
    Figure(
        "run_anatomy.ensemble_validation",
        "ensemble: validation share",
        lambda m: share(m["ensemble"], "validation"),
    ),
    Figure("flip_alignment.accuracy", "accuracy per digit", lambda m: estimate(m["accuracy"], 4)),
    Figure(
        "flip_alignment.sequence_accuracy",
        "whole sequences right",
        lambda m: estimate(m["sequence_accuracy"], 4),
    ),
    Figure(
        "flip_alignment.flip_mass",
        "flip mass: attention from query i to key N−1−i",
        lambda m: estimate(head0(m)["flip_mass"], 4),
    ),
    Figure(
        "flip_alignment.neighbour_mass",
        "neighbour mass (keys N−1−i ± 1, ± 2)",
        lambda m: estimate(head0(m)["neighbour_mass"], 4),
    ),
    Figure(
        "flip_alignment.offset_minus1",
        "mass at offset −1",
        lambda m: number(head0(m)["offset_mass"]["-1"]["mean"], 3),
    ),
    Figure(
        "flip_alignment.offset_plus1",
        "mass at offset +1",
        lambda m: number(head0(m)["offset_mass"]["1"]["mean"], 3),
    ),
    Figure(
        "flip_alignment.offset_2",
        "mass at offsets ±2 (each, mean of the two)",
        lambda m: number(
            (head0(m)["offset_mass"]["-2"]["mean"] + head0(m)["offset_mass"]["2"]["mean"]) / 2, 3
        ),
    ),
    Figure(
        "flip_alignment.argmax_hit_rate",
        "argmax hit rate (row maximum on the flipped key)",
        lambda m: estimate(head0(m)["argmax_hit_rate"], 4),
    ),
    Figure("flip_alignment.entropy", "row entropy (nats)", lambda m: number(head0(m)["entropy"]["mean"], 3)),
    Figure(
        "flip_alignment.flip_mass_edge",
        "flip mass at query 0",
        lambda m: number(head0(m)["per_position_flip_mass"][0]["mean"], 2),
    ),
    Figure(
        "flip_alignment.flip_mass_middle",
        "flip mass at query 7",
        lambda m: number(head0(m)["per_position_flip_mass"][7]["mean"], 2),
    ),
    Figure(
        "flip_alignment.target_digit_preference",
        "weight on a neighbour holding the target digit minus another neighbour",
        lambda m: estimate(head0(m)["duplicate_neighbours"]["difference"], 4),
    ),
    Figure(
        "qk_circuit.pos_pos_share",
        "position–position share of layer 0's within-row score variance",
        lambda m: f"{100 * m['heads'][0]['variance_share']['pos_pos']['mean']:.0f}%",
    ),
    Figure(
        "qk_circuit.beta",
        "β of attention ≈ softmax(β · cos(PE_{N−1−i}, PE_j))",
        lambda m: number(m["heads"][0]["temperature"]["mean"], 1),
    ),
    Figure(
        "qk_circuit.swap_flip",
        "prediction changed by swapping the digit at the flipped key",
        lambda m: estimate(m["swap"]["0"]["changed"], 3),
    ),
    Figure(
        "qk_circuit.swap_neighbour",
        "prediction changed by swapping the digit at a ±1 neighbour (the larger)",
        lambda m: number(max(m["swap"]["-1"]["changed"]["mean"], m["swap"]["1"]["changed"]["mean"]), 3),
    ),
    *(
        Figure(
            f"qk_circuit.pe_cosine_{d}",
            f"cosine similarity of positional encodings {d} apart",
            lambda m, d=d: number(m["raw_pe_cosine_by_distance"][d], 3),
        )
        for d in (1, 2)
    ),
    Figure(
        "pe_ablation.zero_accuracy",
        "accuracy with the positional encoding zeroed",
        lambda m: estimate(m["conditions"]["zero"]["accuracy"], 3),
    ),
    Figure(
        "pe_ablation.ceiling",
        "exact accuracy ceiling of a position-blind model",
        lambda m: number(m["reference"]["no_position"]["accuracy"], 4),
    ),
    Figure(
        "head_ablation.zero_accuracy",
        "accuracy with head 0.0 zero-ablated",
        lambda m: estimate(m["conditions"]["zero/L0H0"]["accuracy"], 3),
    ),
    Figure(
        "head_ablation.flip_accuracy",
        "accuracy with head 0.0's pattern replaced by the perfect flip",
        lambda m: estimate(m["conditions"]["pattern/L0H0/flip"]["accuracy"], 3),
    ),
    *(
        Figure(
            f"length_generalisation.accuracy_{n}",
            f"accuracy at length N′ = {n}",
            lambda m, n=n: estimate(length(m, n)["accuracy"], 3),
        )
        for n in (8, 16, 24)
    ),
    Figure("tolerance.verdict", "verdict per digit", lambda m: m["verdict"]["label"]),
    Figure(
        "tolerance.sequence_verdict", "verdict on whole sequences", lambda m: m["sequence_verdict"]["label"]
    ),
    Figure(
        "tolerance.own_flip_mass", "the head's own flip mass", lambda m: estimate(m["own"]["flip_mass"], 4)
    ),
    *(
        Figure(
            f"tolerance.threshold_{family}",
            f"flip mass at which accuracy falls below 99%, family {family}",
            lambda m, family=family: estimate(threshold(m, family)["flip_mass"], 3),
        )
        for family in ("temperature", "neighbours", "uniform")
    ),
    Figure(
        "tolerance.tau_temperature",
        "temperature τ at which accuracy falls below 99%",
        lambda m: estimate(threshold(m, "temperature")["parameter"], 2),
    ),
    Figure(
        "tolerance.tau_breaking",
        "temperature τ at which accuracy falls below 50%",
        lambda m: estimate(threshold(m, "temperature", 0.5)["parameter"], 2),
    ),
    Figure(
        "tolerance.breaking_range",
        "flip masses at which accuracy falls below 50% (lowest–highest family)",
        lambda m: "–".join(
            number(x, 2)
            for x in (
                min(t["flip_mass"]["mean"] for t in breaking(m)),
                max(t["flip_mass"]["mean"] for t in breaking(m)),
            )
        ),
    ),
    *(
        Figure(
            f"tolerance.sequence_margin_{name}",
            f"margin to the 99% threshold on whole sequences, family {family}",
            lambda m, family=family: estimate(
                threshold(m, family, statistic="sequence_accuracy")["margin"], 3
            ),
        )
        for name, family in (("single_key", "single_key+1"), ("uniform", "uniform"))
    ),
    Figure(
        "tolerance.threshold_single_key",
        "flip mass at which accuracy falls below 99%, weight moved to key N − i",
        lambda m: estimate(threshold(m, "single_key+1")["flip_mass"], 3),
    ),
    Figure(
        "tolerance.margin_single_key",
        "margin to that threshold (own flip mass − threshold)",
        lambda m: estimate(threshold(m, "single_key+1")["margin"], 3),
    ),
    Figure(
        "tolerance.margin_uniform",
        "margin to the 99% threshold, mixing with uniform",
        lambda m: estimate(threshold(m, "uniform")["margin"], 3),
    ),
    Figure(
        "tolerance.clean_vote",
        "plurality vote predicts the output (the model's own pattern)",
        lambda m: estimate(m["readout"]["clean"]["vote_agreement"], 4),
    ),
    Figure(
        "tolerance.clean_argmax",
        "heaviest key predicts the output (the model's own pattern)",
        lambda m: estimate(m["readout"]["clean"]["argmax_agreement"], 4),
    ),
    Figure(
        "tolerance.pearson",
        "correlation of the right digit's logit margin with the vote margin",
        lambda m: estimate(m["readout"]["clean"]["pearson"], 3),
    ),
    Figure(
        "tolerance.adversarial_vote",
        "plurality vote predicts the output on adversarial inputs",
        lambda m: estimate(m["adversarial"]["readout"]["adversarial_vote_agreement"], 4),
    ),
    Figure(
        "tolerance.adversarial_argmax",
        "heaviest key predicts the output on adversarial inputs",
        lambda m: estimate(m["adversarial"]["readout"]["adversarial_argmax_agreement"], 4),
    ),
    Figure(
        "tolerance.adversarial_accuracy",
        "model right on adversarial inputs",
        lambda m: estimate(m["adversarial"]["readout"]["adversarial_accuracy"], 4),
    ),
    Figure(
        "tolerance.share_model_wrong",
        "isolated-digit inputs the model gets wrong somewhere",
        lambda m: estimate(m["adversarial"]["share_model_wrong"], 3),
    ),
    Figure(
        "tolerance.share_vote_wrong",
        "isolated-digit inputs on which the vote is wrong somewhere",
        lambda m: estimate(m["adversarial"]["share_vote_wrong"], 3),
    ),
    Figure(
        "tolerance.worst_vote_margin",
        "smallest vote margin found (beam search)",
        lambda m: number(m["worst_case"]["vote_margin"]["score"], 3),
    ),
    Figure(
        "tolerance.worst_logit_margin",
        "smallest logit margin of the right digit found (beam search)",
        lambda m: number(m["worst_case"]["logit_margin"]["score"], 3),
    ),
    Figure(
        "tolerance.worst_logit_input",
        "the input of that smallest logit margin",
        lambda m: m["worst_case"]["logit_margin"]["digits"],
    ),
    Figure(
        "interchange.iia_z", "IIA of the head output z (layer 0)", lambda m: estimate(site(m, "z")["iia"], 4)
    ),
    Figure(
        "interchange.iia_resid_mid",
        "IIA of the residual after attention (layer 0)",
        lambda m: estimate(site(m, "resid_mid")["iia"], 4),
    ),
    Figure(
        "interchange.iia_attn_out",
        "IIA of the attention output (layer 0)",
        lambda m: estimate(site(m, "attn_out")["iia"], 4),
    ),
    Figure(
        "interchange.on_program_resid_pre",
        "patching resid_pre at key j changes output N−1−j (share)",
        lambda m: estimate(site(m, "resid_pre")["on_program"], 4),
    ),
    Figure(
        "interchange.off_program_max_resid_pre",
        "largest change of another output when patching resid_pre",
        lambda m: estimate(site(m, "resid_pre")["off_program_max"], 4),
    ),
    Figure("interchange.selector", "which head carries the aggregate", lambda m: m["selector"]["sentence"]),
    Figure(
        "interchange.conclusion", "conclusion against the reverse program", lambda m: m["conclusion"]["label"]
    ),
    Figure(
        "training_dynamics.snapshots",
        "snapshots evaluated, and the last one's step",
        lambda m: f"{len(m['snapshots'])} snapshots over {m['snapshots'][-1]['step']:,} steps",
    ),
    Figure(
        "training_dynamics.excluded_loss",
        "loss of the final model with the flipped key removed from every row (nats)",
        lambda m: estimate(m["snapshots"][-1]["excluded_loss"], 2),
    ),
    Figure(
        "training_dynamics.argmax_lead",
        "argmax hit rate's half-way crossing against accuracy's",
        lambda m: steps_apart(comparison(m, "argmax_hit_rate")),
    ),
    Figure(
        "training_dynamics_seeds.argmax_lead",
        "argmax hit rate's half-way crossing against accuracy's, over 5 training seeds",
        lambda m: seeds_apart(m["seeds"], "argmax_hit_rate"),
    ),
    Figure(
        "training_dynamics_seeds.flip_lag",
        "flip mass's half-way crossing against accuracy's, over 5 training seeds",
        lambda m: seeds_apart(m["seeds"], "flip_mass"),
    ),
    Figure(
        "training_dynamics.flip_lag",
        "flip mass's half-way crossing against accuracy's",
        lambda m: steps_apart(comparison(m, "flip_mass")),
    ),
)
FIGURES += (
    *(
        Figure(
            f"certificate.{scope}_{side}",
            f"certified {what} accuracy over all C^N inputs, {side} bound",
            lambda m, scope=scope, side=side: certified(m, scope, side),
        )
        for scope, what in (("per_digit", "per-digit"), ("sequence", "whole-sequence"))
        for side in ("lower", "upper")
    ),
    Figure("certificate.inputs", "inputs certified (C^N)", lambda m: f"{m['inputs']:,}"),
    Figure("certificate.pairs", "(input, position) pairs (N·C^N)", lambda m: f"{m['pairs']:,}"),
    Figure(
        "certificate.wrong_pairs_proven",
        "(input, position) pairs proven wrong",
        lambda m: f"{m['census']['wrong_pairs']['lower']:,}",
    ),
    Figure(
        "certificate.wrong_pairs_upper",
        "(input, position) pairs not proven right (at most this many wrong)",
        lambda m: f"{m['census']['wrong_pairs']['upper']:,}",
    ),
    Figure(
        "certificate.regions", "regions proven wrong (census)", lambda m: f"{len(m['census']['regions']):,}"
    ),
    Figure(
        "certificate.boxes", "regions bounded by the proof (boxes)", lambda m: f"{m['compute']['boxes']:,}"
    ),
    Figure("certificate.budget", "the proof's budget and what stopped it", lambda m: m["compute"]["budget"]),
    Figure(
        "certificate.flop_ratio",
        "brute force's FLOPs over the certificate's",
        lambda m: f"{m['compute']['brute_force_over_certificate']:.3g}",
    ),
)


def patched_share(m: dict, kind: str, site: str = "blocks.0.hook_attn_out") -> dict:
    """The share of the logit gap restored at the output position (``kind``: activation or attribution)."""
    (row,) = [x for x in m["patching"][site] if x["position"] == m["output"]]
    return row[kind]


def ratio_of(m: dict, kind: str, to: str) -> float:
    """One estimate's mean share over another's."""
    return patched_share(m, kind)["mean"] / patched_share(m, to)["mean"]


FIGURES += (
    Figure(
        "linearisation_error.activation",
        "share of the logit gap restored by patching the clean attn_out at the output position",
        lambda m: f"{patched_share(m, 'activation')['mean']:.3f}",
    ),
    Figure(
        "linearisation_error.attribution",
        "attribution patching's estimate of that share",
        lambda m: estimate(patched_share(m, "attribution"), 3),
    ),
    Figure(
        "linearisation_error.underestimate",
        "attribution patching's underestimate of the restored share",
        lambda m: f"{100 * (1 - ratio_of(m, 'attribution', 'activation')):.0f}%",
    ),
    Figure(
        "linearisation_error.other_positions",
        "largest absolute share at any other position, either estimate",
        lambda m: f"{m['patching_other_positions_max']:.2f}",
    ),
    *(
        Figure(
            f"linearisation_error.removal_{label}",
            f"frozen-LayerNorm removal error of {label} (relative to its norm)",
            lambda m, label=label: f"{m['removal'][label]['mean']:.2f}",
        )
        for label in ("embed", "pos_embed", "0_attn_out", "0_mlp_out")
    ),
)


def cell_range(m: dict, column: str) -> str:
    """The smallest and largest value of a theorem column over the cells: ``0.941–0.964``."""
    values = [c[column] for c in m["cells"] if c[column] is not None]
    return f"{min(values):.3f}–{max(values):.3f}"


def smallest_shortfall(m: dict) -> str:
    """The least amount by which a cell's smallest weight on the flipped key falls short of its w*."""
    gaps = [
        c["guarantee_weight"] - c["min_weight"]
        for c in m["cells"]
        if c["guarantee_weight"] is not None and c["min_weight"] is not None
    ]
    return f"{min(gaps):.2f}"


FIGURES += (
    Figure(
        "certificate.theorem_proven_cells",
        "cells where the model's least flipped-key weight reaches the guarantee w*",
        lambda m: f"{m['theorem']['proven_cells']:,} of {m['theorem']['cells']:,}",
    ),
    Figure(
        "certificate.theorem_guarantee_range",
        "w*, the flipped-key weight that guarantees the right output whatever the rest of the row does",
        lambda m: cell_range(m, "guarantee_weight"),
    ),
    Figure(
        "certificate.theorem_min_weight_range",
        "the model's least weight on the flipped key per cell (proven over every input of the cell)",
        lambda m: cell_range(m, "min_weight"),
    ),
    Figure(
        "certificate.theorem_smallest_shortfall",
        "least shortfall of a cell's least weight below its w*",
        smallest_shortfall,
    ),
)
BY_KEY = {f.key: f for f in FIGURES}


# --- running the commands -----------------------------------------------------------------------------
def argv(command: str) -> list[str]:
    """A documented command with ``python`` meaning this interpreter (and a script of this repository,
    ``benchmarks/x.py``, found from any working folder)."""
    words = shlex.split(command)
    if words[0] == "python" and len(words) > 1 and words[1].endswith(".py") and (ROOT / words[1]).is_file():
        words[1] = str(ROOT / words[1])
    return [sys.executable, *words[1:]] if words[0] == "python" else words


def run_command(name: str, work: Path, extra: Iterable[str] = (), train_extra: Iterable[str] = ()) -> Path:
    """Run ``name``'s documented commands (``extra`` appended to the analysis command, ``train_extra``
    to a training command) and return its output folder."""
    out = work / name
    for command in COMMANDS[name]:
        words = argv(command)
        if "models.train" in command:
            words += list(train_extra)
        else:
            words += ["--out", str(out), "--quiet", *extra]
        print(f"figures: {command}", file=sys.stderr, flush=True)
        code = subprocess.run(words, cwd=work).returncode
        if code != 0:  # nothing is written: the record and the pages are rewritten only after every run
            raise SystemExit(f"error: {command} (in {work}) exited with {code}; nothing was rewritten")
    return out


def read_figures(name: str, out: Path) -> dict[str, str]:
    """Every figure of ``name`` from its output folder's metrics.json."""
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    figures = {}
    for f in FIGURES:
        if f.analysis == name:
            try:
                figures[f.key] = f.read(metrics)
            except (KeyError, IndexError, TypeError, ValueError) as exc:  # the schema moved on
                raise SystemExit(
                    f"error: {f.key}: cannot read it from {out / 'metrics.json'} "
                    f"({type(exc).__name__}: {exc}); update its reader in scripts/figures.py (FIGURES)"
                ) from None
    return figures


def record_run(name: str, out: Path) -> dict:
    """What the record keeps of one command's run: the command and its provenance."""
    provenance = json.loads((out / "metrics.json").read_text(encoding="utf-8")).get("provenance", {})
    return {
        "commands": list(COMMANDS[name]),
        "checkpoint_sha256": provenance.get("checkpoint_sha256"),
        "num_sequences": provenance.get("num_sequences"),
        "seed": provenance.get("seed"),
        "timestamp": provenance.get("timestamp"),
    }


def collect(names: Iterable[str], work: Path, extra=(), train_extra=()) -> tuple[dict, dict]:
    """Run the commands of ``names``: (figures {key: text}, runs {name: record_run})."""
    figures, runs = {}, {}
    for name in names:
        out = run_command(name, work, extra, train_extra)
        figures.update(read_figures(name, out))
        runs[name] = record_run(name, out)
    return figures, runs


# --- the pages ---------------------------------------------------------------------------------------------
def pages(root: Path) -> list[Path]:
    """The Markdown files that may quote figures: the README and every page of the docs."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def rewrite(text: str, figures: dict[str, str], where: str = "") -> str:
    """``text`` with every marked value replaced by the record's; an unknown key is an error."""

    def value(match: re.Match) -> str:
        key = match.group(1)
        if key not in figures:
            raise KeyError(f"{where}: unknown figure {key!r} (not in scripts/figures.py's FIGURES)")
        return f"<!--fig:{key}-->{figures[key]}<!--/fig-->"

    return MARKER.sub(value, text)


def drift(text: str, figures: dict[str, str], where: str) -> list[str]:
    """One line per marked value of ``text`` that differs from ``figures`` (or names no figure)."""
    problems = []
    for match in MARKER.finditer(text):
        key, shown = match.group(1), match.group(2)
        line = text.count("\n", 0, match.start()) + 1
        if not text[text.rfind("\n", 0, match.start()) + 1 : match.start()].strip():
            problems.append(f"{where}:{line}: {key} starts a line (Markdown reads it as an HTML block)")
        if key not in figures:
            problems.append(f"{where}:{line}: unknown figure {key!r}")
        elif shown != figures[key]:
            problems.append(f"{where}:{line}: {key} shows {shown!r}, its command gives {figures[key]!r}")
    return problems


def render_page(record: dict) -> str:
    """The generated page: every figure, its value and the command that gives it."""
    lines = [
        "# Measured figures (generated)",
        "",
        "<!-- Generated by `python scripts/figures.py` from docs/figures/figures.json: do not edit. -->",
        "",
        "Every figure the README and these pages quote, as the documented command gives it on the default",
        "model (tutorial preset, seed 0; trained on first use). Regenerate with `python scripts/figures.py`",
        "(a few minutes); `python scripts/figures.py --check` (run by the tests) fails when a quoted figure,",
        "this page or a figure's PNG differs from the record, and `python scripts/figures.py --rerun-check`",
        "when the commands no longer give the quoted figures. Intervals are 95% bootstrap CIs as each",
        "command computes them (see its page in [the analyses](analyses.md)).",
        "",
        f"Recorded at commit `{record.get('commit', 'unknown')}`.",
        "",
    ]
    for name in COMMANDS:
        keys = [f for f in FIGURES if f.analysis == name and f.key in record["figures"]]
        if not keys:
            continue
        run = record["runs"].get(name, {})
        lines += [f"## {name}", ""]
        lines += [
            f"`{c}`" + ("  " if i < len(run.get("commands", [])) - 1 else "")
            for i, c in enumerate(run.get("commands", []))
        ]
        sha = run.get("checkpoint_sha256")
        sampled = run.get("num_sequences") is not None
        lines += [
            "",
            (
                f"Seed {run.get('seed')}, {run.get('num_sequences')} sequences"
                if sampled
                else "Nothing sampled"
            )
            + (f", checkpoint sha256 `{sha[:12]}…`" if sha else "")
            + (f", run {run.get('timestamp')}." if run.get("timestamp") else "."),
            "",
            "| figure | value | key |",
            "|---|---|---|",
        ]
        lines += [f"| {f.what} | {record['figures'][f.key]} | `{f.key}` |" for f in keys]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def check(root: Path) -> list[str]:
    """Every difference between the pages (and PNGs) and the record, one line each."""
    record = json.loads((root / RECORD).read_text(encoding="utf-8"))
    figures = record["figures"]
    problems = []
    for path in pages(root):
        where = str(path.relative_to(root))
        if path == root / PAGE:
            if path.read_text(encoding="utf-8") != render_page(record):
                problems.append(f"{where}: not the page the record gives (run python scripts/figures.py)")
            continue
        problems += drift(path.read_text(encoding="utf-8"), figures, where)
    missing = sorted(set(BY_KEY) - set(figures))
    problems += [f"{RECORD}: no recorded value for {key}" for key in missing]
    for name, pngs in PNGS.items():
        problems += [
            f"{PNG_DIR}/{name}/{png}.png: missing (run python scripts/figures.py --only {name})"
            for png in pngs
            if not (root / PNG_DIR / name / f"{png}.png").is_file()
        ]
    return problems


def write(root: Path, figures: dict[str, str], runs: dict, outputs: dict[str, Path]) -> None:
    """Merge into the record, copy the PNGs of the commands that ran, rewrite every page."""
    path = root / RECORD
    record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"figures": {}, "runs": {}}
    record["figures"].update(figures)
    record["runs"].update(runs)
    record["figures"] = {k: record["figures"][k] for k in BY_KEY if k in record["figures"]}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    record["commit"] = commit.stdout.strip() or "unknown"
    for name, out in outputs.items():
        (root / PNG_DIR / name).mkdir(parents=True, exist_ok=True)
        for png in PNGS.get(name, ()):
            shutil.copyfile(out / "figures" / f"{png}.png", root / PNG_DIR / name / f"{png}.png")
    atomic_write(path, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    for page in pages(root):
        if page == root / PAGE:
            continue
        text = page.read_text(encoding="utf-8")
        new = rewrite(text, record["figures"], str(page.relative_to(root)))
        if new != text:
            atomic_write(page, new)
    atomic_write(root / PAGE, render_page(record))


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv_: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="compare the pages with the record; no run")
    mode.add_argument("--rerun-check", action="store_true", help="run the commands; compare; write nothing")
    parser.add_argument("--only", help=f"comma-separated commands among {','.join(COMMANDS)}")
    parser.add_argument(
        "--work", type=Path, help="folder for the commands' outputs (default: a temporary one)"
    )
    args = parser.parse_args(argv_)
    names = list(COMMANDS) if not args.only else args.only.split(",")
    unknown = [n for n in names if n not in COMMANDS]
    if unknown:
        print(
            f"error: --only: unknown command {unknown[0]!r} (one of {', '.join(COMMANDS)})", file=sys.stderr
        )
        return 2
    if args.check:
        problems = check(ROOT)
        print("\n".join(problems) if problems else "figures: every quoted figure matches the record")
        return 1 if problems else 0
    with tempfile.TemporaryDirectory(prefix="figures-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        figures, runs = collect(names, work)
        if args.rerun_check:
            problems = [
                p
                for page in pages(ROOT)
                if page != ROOT / PAGE
                for p in drift(
                    page.read_text(encoding="utf-8"), {**_recorded(), **figures}, str(page.relative_to(ROOT))
                )
            ]
            print("\n".join(problems) if problems else "figures: the commands give every quoted figure")
            return 1 if problems else 0
        write(ROOT, figures, runs, {name: work / name for name in names})
    print(f"figures: {len(figures)} figures recorded in {RECORD}; pages rewritten")
    return 0


def _recorded() -> dict[str, str]:
    path = ROOT / RECORD
    return json.loads(path.read_text(encoding="utf-8"))["figures"] if path.is_file() else {}


if __name__ == "__main__":
    sys.exit(main())
