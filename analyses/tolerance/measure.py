"""``run``: the flip head under every pattern family, the thresholds, the verdicts and the readout."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from analyses.frame import arguments
from analyses.frame.loading import evaluating, records_source
from analyses.frame.result import estimates
from analyses.frame.sequences import token_batches
from analyses.tolerance.heads import head_set, parse_heads, redundancy_verdict, resolve_heads
from analyses.tolerance.result import ANALYSIS, READOUT, Adversarial, FamilyCurve, ToleranceResult
from interp import metrics, stats
from interp.ablation import check_heads
from interp.adversarial import beam_search, isolated_digit_sequences, min_logit_margin, min_vote_margin
from interp.pattern_families import TEMPERATURES, PatternFamily, default_families
from interp.readout import READOUT_COLUMNS, readout_estimates, readout_statistic
from interp.stats import bootstrap_distributions
from interp.thresholds import family_threshold
from interp.tolerance import BUILT_IN, family_sweep, sweep_units
from interp.tolerance_verdict import Verdict, default_slack, make_verdict
from machine.scalars import as_float, as_int

# s = 0, 0.05, ..., 0.6, then 0.7, 0.8, 0.9, 1: every family crosses 99% and 50% below s = 0.6 on the
# tutorial's model; the coarse tail still shows the curve down to no weight on the flipped key.
MIXES: tuple[float, ...] = (*(k / 20 for k in range(13)), 0.7, 0.8, 0.9, 1.0)
# Vote margins μ lie in [−1, 1]; the logit margin is averaged per bin of width 0.05.
MARGIN_BIN_EDGES: tuple[float, ...] = tuple(k / 20 - 1 for k in range(41))


def _check_level(value: Any, name: str) -> float:
    value = as_float(value, name)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return value


def flip_head(model: Any, tokens: torch.Tensor) -> tuple[int, int, float]:
    """(layer, head, flip mass) of the head with the largest mean flip mass on ``tokens``."""
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    mass = torch.stack([metrics.flip_mass(cache[name]).mean((0, 2)) for name in names])  # [layer, head]
    layer, head = divmod(int(mass.argmax()), mass.shape[1])
    return layer, head, float(mass[layer, head])


def check_counts(
    cfg: Any,
    families: Sequence[PatternFamily],
    num_sequences: int,
    seq_len: int,
    resamples: int,
    adversarial_sequences: int,
    beam_width: int,
) -> None:
    """Refuse, before any work, counts whose memory cannot fit (lower bounds, one line naming the flag):
    the resampling units' sums (16 numbers per grid point and 2 · bins per family, at most
    ``MAX_UNITS`` units whatever ``num_sequences`` is), the replicates of the largest family's
    statistics, the adversarial inputs (kept whole: tokens, readout sums and two margins each) and
    the beam search's candidates (each beam sequence changed at every position to every other digit)."""
    n_bins = len(MARGIN_BIN_EDGES) - 1
    points = sum(len(f.values) for f in families)
    row = (3 + len(READOUT_COLUMNS)) * points + 2 * n_bins * len(families)
    units = min(num_sequences, stats.MAX_UNITS)
    arguments.check_memory(
        "num_sequences", num_sequences, 8 * units * row, f"{units:,} resampling units of {row:,} sums"
    )
    widest = max(len(f.values) for f in families)
    arguments.check_resamples(resamples, max(3 * widest + n_bins, 12 * widest))
    per_input = 8 * seq_len + 8 * (3 + len(READOUT_COLUMNS)) + 16
    arguments.check_memory(
        "adversarial_sequences",
        adversarial_sequences,
        adversarial_sequences * per_input,
        "each isolated-digit input's tokens, readout sums and margins",
    )
    candidates = beam_width * (1 + seq_len * (cfg.d_vocab - 1))
    arguments.check_memory(
        "beam_width", beam_width, 8 * seq_len * candidates, f"{candidates:,} candidate sequences per step"
    )


@records_source(ANALYSIS)
def run(
    model: Any,
    num_sequences: int = 1000,
    seq_len: int | None = None,
    seed: int = 0,
    batch_size: int = 1000,
    bootstrap_resamples: int = 1000,
    confidence: float = 0.95,
    layer: int | None = None,
    head: int | None = None,
    temperatures: Sequence[float] = TEMPERATURES,
    mixes: Sequence[float] = MIXES,
    single_offset: int = 1,
    level: float = 0.99,
    breaking_level: float = 0.5,
    slack: float | None = None,
    radius: int = 2,
    adversarial_sequences: int = 500,
    beam_width: int = 8,
    beam_steps: int = 20,
    heads: str | Sequence[tuple[int, int]] = "auto",
) -> ToleranceResult:
    """Sweep the families over ``num_sequences`` random sequences (same seed, same numbers).

    ``layer``/``head`` pick the head whose pattern is replaced (default: the head with the largest flip
    mass on the first batch); ``level``/``breaking_level`` are the accuracy levels of the thresholds,
    ``slack`` the margin the verdict asks for (None: a tenth of the own flip mass,
    ``interp.tolerance_verdict.default_slack``); ``adversarial_sequences`` isolated-digit inputs are both
    the adversarial test of the readout rule and the start of the beam searches. ``heads``: a set of
    heads also degraded jointly and one at a time (``analyses.tolerance.heads``: ``auto`` = every head
    whose zero ablation changes the logits, ``all``, ``layer:L``, ``none`` or (layer, head) pairs);
    a set of one head adds nothing and is skipped.
    """
    cfg = model.cfg
    seq_len = arguments.check_sampling(
        cfg, num_sequences, seq_len, seed, batch_size, bootstrap_resamples, confidence
    )
    radius = as_int(radius, "radius", minimum=1)
    adversarial_sequences = as_int(adversarial_sequences, "adversarial_sequences", minimum=1)
    beam_width = as_int(beam_width, "beam_width", minimum=1)
    beam_steps = as_int(beam_steps, "beam_steps", minimum=1)
    level = _check_level(level, "level")
    breaking_level = _check_level(breaking_level, "breaking_level")
    if breaking_level >= level:
        raise ValueError(f"breaking_level ({breaking_level}) must be below level ({level})")
    if slack is not None:
        slack = as_float(slack, "slack")
        if slack < 0:
            raise ValueError(f"slack must be ≥ 0, got {slack}")
    single_offset = as_int(single_offset, "single_offset")
    if (layer is None) != (head is None):
        raise ValueError("give both layer and head, or neither (then the head with the largest flip mass)")
    families = default_families(tuple(temperatures), tuple(mixes), single_offset)
    check_counts(
        cfg, families, num_sequences, seq_len, bootstrap_resamples, adversarial_sequences, beam_width
    )
    device = next(model.parameters()).device
    resample_seed = [seed, 1]

    def batches() -> Iterator[torch.Tensor]:  # the same sequences each time
        return token_batches(num_sequences, seq_len, cfg.d_vocab, seed, batch_size)

    first_batch = next(iter(batches())).to(device)
    with evaluating(model):
        if layer is None:
            layer, head, mass = flip_head(model, first_batch)
            choice = f"the largest flip mass, {mass:.3f}, of {cfg.n_layers * cfg.n_heads} head(s)"
        else:
            ((layer, head),) = check_heads(model, [(layer, head)])
            choice = "chosen by the caller"
        statistics = {"readout": readout_statistic(radius, MARGIN_BIN_EDGES)}
        units = sweep_units(
            model, batches(), num_sequences, families, layer, head, statistics, _reducer(families)
        )
        adversarial = _adversarial(
            model, layer, head, seq_len, radius, adversarial_sequences, seed, batch_size,
            beam_width, beam_steps, bootstrap_resamples, confidence, resample_seed,
        )  # fmt: skip

    curves, thresholds = [], []
    n_bins = len(MARGIN_BIN_EDGES) - 1
    counts = None if units.per_sequence else units.counts.numpy()  # None: a unit is one sequence
    start = 0
    for f in families:
        p = len(f.values)
        out = {name: units.sums[name].numpy()[:, start : start + p] for name in (*BUILT_IN, "readout")}
        start += p
        table = np.hstack([out["accuracy"], out["sequence_accuracy"], out["flip_mass"]])
        bins = units.sums[f"bins/{f.name}"].numpy()  # [unit, 2 · bins], all points of the family
        bin_counts, bin_sums = bins[:, :n_bins], bins[:, n_bins:]
        den = None if counts is None else np.broadcast_to(counts[:, None], table.shape)
        (point, reps), (b_point, b_reps) = bootstrap_distributions(
            [(table, den), (bin_sums, bin_counts)], bootstrap_resamples, resample_seed
        )
        est = estimates(point, reps, confidence).reshape(3, p)
        # accuracy over the N positions and sequence accuracy are proportions: Clopper–Pearson at the
        # effective number of trials, exact at 0 and 1 (interp.proportions); flip mass percentile.
        trials = np.repeat([seq_len, 1], p)
        est[:2] = estimates(
            point[: 2 * p], reps[:, : 2 * p], confidence, sequences=num_sequences, trials=trials
        ).reshape(2, p)
        readout = readout_estimates(
            out["readout"], seq_len, bootstrap_resamples, confidence, resample_seed, counts
        )
        curves.append(
            FamilyCurve(
                name=f.name,
                kind=f.kind,
                parameter=f.parameter,
                offset=f.offset,
                values=list(f.values),
                identity=f.identity,
                accuracy=list(est[0]),
                sequence_accuracy=list(est[1]),
                flip_mass=list(est[2]),
                readout={name: readout[name] for name in READOUT},
                logit_margin_by_vote_margin=list(estimates(b_point, b_reps, confidence)),
            )
        )
        for statistic in ("accuracy", "sequence_accuracy"):
            for lvl in (level, breaking_level):
                thresholds.append(
                    family_threshold(
                        f,
                        out[statistic],
                        out["flip_mass"],
                        lvl,
                        statistic,
                        bootstrap_resamples,
                        confidence,
                        resample_seed,
                        counts,
                    )  # fmt: skip
                )

    first = curves[0]
    own = {name: getattr(first, name)[first.own] for name in ("accuracy", "sequence_accuracy", "flip_mass")}

    used_slack = default_slack(own["flip_mass"].mean) if slack is None else slack
    with evaluating(model):
        chosen, how = resolve_heads(
            model, parse_heads(heads) if isinstance(heads, str) else heads, first_batch
        )
        group = (
            head_set(
                model,
                batches,
                num_sequences,
                families,
                chosen,
                how,
                level,
                used_slack,
                bootstrap_resamples,
                confidence,
                resample_seed,
                seq_len,
                radius,
            )  # fmt: skip
            if len(chosen) > 1
            else None
        )

    def verdict(statistic: str, unit: str) -> Any:
        at = lambda lvl: [t for t in thresholds if t.statistic == statistic and t.level == lvl]  # noqa: E731
        own_acc, own_flip = own[statistic], own["flip_mass"]
        made = make_verdict(own_acc, own_flip, at(level), at(breaking_level), level, slack, unit)
        # The regime the verdict holds in, said first: what was replaced, what was left, on which inputs.
        others = "every other head intact" if cfg.n_layers * cfg.n_heads > 1 else "the model's only head"
        regime = (
            f"Regime: {num_sequences:,} random sequences of length {seq_len}; head {layer}.{head}'s pattern "
            f"replaced along each family ({others})."
        )
        made = Verdict(made.label, [regime, *made.sentences], made.rule)
        return redundancy_verdict(made, group) if statistic == "accuracy" else made

    return ToleranceResult(
        num_sequences=num_sequences,
        seq_len=seq_len,
        num_categories=cfg.d_vocab,
        seed=seed,
        batch_size=batch_size,
        bootstrap_resamples=bootstrap_resamples,
        confidence=confidence,
        layer=layer,
        head=head,
        head_choice=choice,
        level=level,
        breaking_level=breaking_level,
        slack=used_slack,  # the slack the verdict used
        head_set=group,
        own=own,
        families=curves,
        thresholds=thresholds,
        verdict=verdict("accuracy", "per digit"),
        sequence_verdict=verdict("sequence_accuracy", "on whole sequences"),
        margin_bin_edges=list(MARGIN_BIN_EDGES),
        adversarial=adversarial,
        settings={
            "temperatures": list(families[0].values),
            "mixes": list(families[1].values),
            "single_offset": single_offset,
            "radius": radius,
            "adversarial_sequences": adversarial_sequences,
            "beam_width": beam_width,
            "beam_steps": beam_steps,
            "heads": heads if isinstance(heads, str) else [f"{lay}.{h}" for lay, h in heads],
        },
        config=cfg.to_dict(),
    )


def _reducer(families: Sequence[PatternFamily]) -> Any:
    """What the sweep keeps of a batch: accuracy, sequence accuracy, flip mass and the readout columns
    per point, and the margin bins summed over each family's points (``bins/<family>``)."""
    k, n_bins = len(READOUT_COLUMNS), len(MARGIN_BIN_EDGES) - 1

    def reduce(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        readout = values["readout"]
        kept = {name: values[name] for name in BUILT_IN}
        kept["readout"] = readout[:, :, :k]
        start = 0
        for f in families:
            bins = readout[:, start : start + len(f.values), k:]
            start += len(f.values)
            kept[f"bins/{f.name}"] = np.hstack([bins[:, :, :n_bins].sum(1), bins[:, :, n_bins:].sum(1)])
        return kept

    return reduce


def _search(model: Any, found: Any, kind: str) -> dict[str, Any]:
    """The best sequence of a beam search, with the model's outputs on it."""
    tokens, score = found.best
    logits = model(tokens.unsqueeze(0))[0].double()
    target = tokens.flip(-1)
    predicted = logits.argmax(-1)
    wrong = (predicted != target).nonzero().flatten().tolist()
    return {
        "minimised": kind,
        "score": score,
        "tokens": tokens.tolist(),
        "digits": " ".join(str(int(t)) for t in tokens),
        "prediction": predicted.tolist(),
        "target": target.tolist(),
        "wrong_outputs": wrong,
        "model_wrong": bool(wrong),
        "history": found.history,
        "evaluated": found.evaluated,
    }


def _adversarial(
    model: Any,
    layer: int,
    head: int,
    seq_len: int,
    radius: int,
    num_sequences: int,
    seed: int,
    batch_size: int,
    width: int,
    steps: int,
    resamples: int,
    confidence: float,
    resample_seed: list[int],
) -> Adversarial:
    """The readout rules on isolated-digit inputs (the model's own pattern: a one-point family), and two
    beam searches from them: for the smallest vote margin and for the smallest logit margin."""
    c = model.cfg.d_vocab
    device = next(model.parameters()).device
    tokens, _ = isolated_digit_sequences(num_sequences, seq_len, c, radius, seed)
    tokens = tokens.to(device)
    own = PatternFamily("uniform", (0.0,))
    columns = family_sweep(
        model,
        tokens.split(batch_size),
        [own],
        layer,
        head,
        {"readout": readout_statistic(radius)},
    )["uniform"]["readout"]
    rates = readout_estimates(columns, seq_len, resamples, confidence, resample_seed)
    vote_score, logit_score = min_vote_margin(model, layer, head), min_logit_margin(model)
    vote_min = torch.cat([vote_score(part).double().cpu() for part in tokens.split(batch_size)])
    logit_min = torch.cat([logit_score(part).double().cpu() for part in tokens.split(batch_size)])
    shares = np.stack([(vote_min < 0).numpy(), (logit_min < 0).numpy()], 1).astype(np.float64)
    [(point, reps)] = bootstrap_distributions([(shares, None)], resamples, resample_seed)
    share_vote, share_model = estimates(point, reps, confidence, sequences=num_sequences)  # one trial each
    vote_search = beam_search(vote_score, tokens, c, width, steps)
    logit_search = beam_search(logit_score, tokens, c, width, steps)
    return Adversarial(
        num_sequences=num_sequences,
        radius=radius,
        readout={name: values[0] for name, values in rates.items() if name in READOUT},
        min_vote_margin=float(vote_min.min()),
        share_vote_wrong=share_vote,
        share_model_wrong=share_model,
        vote_search=_search(model, vote_search, "vote margin of the head's own pattern"),
        logit_search=_search(model, logit_search, "logit margin of the right digit"),
    )
