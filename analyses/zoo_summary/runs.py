"""The runs of a zoo folder and what is measured on each: discovery and per-run evaluation.

Per run (every run on the same ``num_sequences`` random sequences, a bootstrap CI over them):
accuracy and accuracy with the positional encoding zeroed; flip mass A[i, N−1−i] and neighbour mass
(keys N−1−i ± 1, ± 2) of the best head (largest flip mass); flip coverage mean_i max_{l, h} A_{l,h}[i,
N−1−i]. Plus the run's own training numbers from its metrics.json. With a certification budget
(``zoo_summary --certify``): the certified lower and upper bounds on per-digit accuracy over all C^N
inputs (``interp.certify``; 1-layer runs only, the reason recorded for others) and, to set them against,
the best head's *tolerance margin*: its own flip mass minus the flip mass at which accuracy falls below
99% when its pattern is mixed with uniform attention (``analyses.tolerance``'s ``uniform`` family and
threshold rule, ``interp.thresholds``, on the same evaluation sequences; censored at ±∞ when accuracy
never falls below 99% on the grid or is below it already at the model's own pattern).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from analyses.frame.cli import UserError
from analyses.frame.sequences import token_batches

# discover (a zoo folder's finished runs) lives in analyses.frame.zoo, shared with zoo_atlas.
from analyses.frame.zoo import discover  # noqa: F401
from analyses.frame.zoo import read_object as _read_object
from analyses.zoo_summary.result import MEASURED, RunSummary
from interp import metrics
from interp.ablation import ablate_positional_encoding
from interp.pattern_families import MIXES, PatternFamily
from interp.proportions import proportion_interval
from interp.stats import Estimate, UnitSums, bootstrap_distribution, percentile_interval
from interp.thresholds import censored_dict, family_threshold
from interp.tolerance import family_sweep
from models.storage.checkpoints import CheckpointError, load_model, sha256_file


@torch.inference_mode()
def evaluate(model: Any, num_sequences: int, seed: int, batch_size: int) -> tuple[UnitSums, np.ndarray]:
    """Per-sequence accuracy (and with PE zeroed), per-head flip and neighbour mass [seq, layer, head],
    flip coverage [seq], summed per resampling unit (:class:`interp.stats.UnitSums`: memory independent
    of ``num_sequences``); and the mean pattern [layer, head, query, key]."""
    cfg = model.cfg
    hooks = [f"blocks.{layer}.attn.hook_pattern" for layer in range(cfg.n_layers)]
    device = next(model.parameters()).device
    units = UnitSums(num_sequences)
    pattern_sum = torch.zeros(cfg.n_layers, cfg.n_heads, cfg.n_ctx, cfg.n_ctx, dtype=torch.float64)

    model.eval()
    for tokens in token_batches(num_sequences, cfg.n_ctx, cfg.d_vocab, seed, batch_size):
        tokens = tokens.to(device)
        logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name in hooks)
        batch = {"accuracy": metrics.reversal_correct(logits, tokens).double().mean(-1)}
        if cfg.positional_embedding != "none":
            with ablate_positional_encoding(model, "zero"):
                zero_pe = metrics.reversal_correct(model(tokens), tokens).double().mean(-1)
            batch["zero_pe_accuracy"] = zero_pe
        patterns = torch.stack([cache[h] for h in hooks], dim=1).double()  # [batch, layer, head, q, k]
        flat = patterns.flatten(1, 2)
        flip = metrics.flip_mass(flat)  # [batch, layer·head, query]
        batch["flip_mass"] = flip.mean(-1).view(len(tokens), cfg.n_layers, cfg.n_heads)
        batch["neighbour_mass"] = (
            metrics.neighbour_mass(flat).mean(-1).view(len(tokens), cfg.n_layers, cfg.n_heads)
        )
        batch["flip_coverage"] = flip.max(1).values.mean(-1)
        units.add(batch)
        pattern_sum += patterns.sum(0).cpu()
    return units, (pattern_sum / num_sequences).numpy()


def training_numbers(metrics: dict[str, Any]) -> dict[str, Any]:
    """The training numbers zoo_summary keeps from a run's metrics.json. An ensemble member's
    ``fit_seconds`` is its ensemble's wall time (M members in one fit): ``ensemble_seeds`` names the
    ensemble (so the time is summarised once per ensemble) and ``fit_seconds_per_member`` is time / M."""
    out = {k: metrics.get(k) for k in ("test_acc", "first_perfect_step", "steps", "fit_seconds")}
    ensemble = metrics.get("ensemble") or {}
    size = int(ensemble.get("size", 1))
    fit = out["fit_seconds"]
    out["ensemble_size"] = size
    out["ensemble_seeds"] = ensemble.get("seeds")
    out["fit_seconds_per_member"] = None if fit is None else float(fit) / size
    return out


def summarise_run(
    folder: Path,
    role: str,
    num_sequences: int,
    seed: int,
    batch_size: int,
    resamples: int,
    confidence: float,
    device: str = "cpu",
    certify_budget: float | None = None,
    certify_boxes: int | None = None,
) -> RunSummary:
    """Evaluate one finished run folder; with ``certify_budget`` (seconds) or ``certify_boxes`` (the
    engine's ``max_boxes``), also certify it and measure its tolerance margin."""
    try:
        model = load_model(folder / "model.pt", device=device)
    except CheckpointError as e:
        raise UserError(str(e)) from None
    config = _read_object(folder / "config.json")
    training = _read_object(folder / "metrics.json")
    units, mean_pattern = evaluate(model, num_sequences, seed, batch_size)
    table = {name: units.table(name) for name in units.sums}  # (sums, None or counts) per unit
    n_layers, n_heads = table["flip_mass"][0].shape[1:]
    best = np.unravel_index(int(np.argmax(table["flip_mass"][0].mean(0))), (n_layers, n_heads))
    columns = {
        "accuracy": table["accuracy"],
        "zero_pe_accuracy": table.get("zero_pe_accuracy"),
        "flip_mass": tuple(None if t is None else t[:, best[0], best[1]] for t in table["flip_mass"]),
        "neighbour_mass": tuple(
            None if t is None else t[:, best[0], best[1]] for t in table["neighbour_mass"]
        ),
        "flip_coverage": table["flip_coverage"],
    }
    names = [k for k in MEASURED if columns[k] is not None]
    values = np.stack([columns[k][0] for k in names], 1)
    dens = None if units.per_sequence else np.stack([columns[k][1] for k in names], 1)
    point, reps = bootstrap_distribution(values, dens, resamples, seed=[seed, 1])
    # Accuracies are proportions of the N positions: Clopper–Pearson at the effective number of trials,
    # exact at 0 and 1 (interp.proportions); masses and coverage percentile intervals.
    low, high = percentile_interval(reps, confidence)
    share = np.array([k in ("accuracy", "zero_pe_accuracy") for k in names])
    low[share], high[share] = proportion_interval(
        point[share], reps[:, share], num_sequences, model.cfg.n_ctx, confidence
    )
    estimates = [Estimate(float(m), float(lo), float(hi)) for m, lo, hi in zip(point, low, high)]
    cfg = model.cfg
    return RunSummary(
        name=folder.name,
        seed=int(config.get("seed", 0)),
        positional_embedding=cfg.positional_embedding,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        role=role,
        measured=dict(zip(names, estimates)),
        training=training_numbers(training),
        best_head=(int(best[0]), int(best[1])),
        mean_pattern=mean_pattern[best],
        sha256=sha256_file(folder / "model.pt"),
        d_vocab=cfg.d_vocab,
        d_model=cfg.d_model,
        certified={}
        if certify_budget is None and certify_boxes is None
        else {
            **certified_bounds(model, certify_budget, certify_boxes),
            "tolerance_margin": tolerance_margin(
                model, best, num_sequences, seed, batch_size, resamples, confidence
            ),
        },
    )


def certified_bounds(
    model: Any, budget_seconds: float | None, max_boxes: int | None = None
) -> dict[str, Any]:
    """``{"certified_lower", "certified_upper"}``: per-digit accuracy over all C^N inputs, certified by
    ``interp.certify`` (method auto) within ``budget_seconds`` of wall time and/or ``max_boxes`` regions
    (deterministic: the same bounds whatever the machine's load), with the method, seconds, boxes and
    which budget stopped the proof; for a model it does not cover, both None and the one-line ``reason``."""
    import interp
    from interp.certificate import CertificateUnsupported

    budget = {"budget_seconds": None if budget_seconds is None else float(budget_seconds)}
    budget["max_boxes"] = None if max_boxes is None else int(max_boxes)
    limits = {"budget_seconds": float(budget_seconds) if budget_seconds is not None else float("inf")}
    if max_boxes is not None:
        limits["max_boxes"] = int(max_boxes)
    try:
        cert = interp.certify(model, theorems=False, max_examples=1, **limits)
    except CertificateUnsupported as e:
        return {"certified_lower": None, "certified_upper": None, "reason": str(e), **budget}
    return {
        "certified_lower": cert.per_digit_lower,
        "certified_upper": cert.per_digit_upper,
        "method": cert.method,
        "seconds": cert.seconds,
        "boxes": cert.boxes,
        "stopped_by": cert.details.get("stopped_by"),
        **budget,
    }


TOLERANCE_LEVEL = 0.99  # the accuracy level of the margin, as analyses.tolerance's verdict uses


@torch.inference_mode()
def tolerance_margin(
    model: Any,
    head: tuple[int, int],
    num_sequences: int,
    seed: int,
    batch_size: int,
    resamples: int,
    confidence: float,
) -> dict[str, Any]:
    """The head's own flip mass minus the flip mass at which per-digit accuracy first falls below 99%
    when its pattern is mixed with uniform attention, (1 − s)·A + s/N, s = 0, 0.05, ..., 1
    (``interp.thresholds.family_threshold``: interpolated crossing, bootstrap interval over sequences
    from each resample's grid bracket). ``{"mean", "ci_low", "ci_high", "below_range", "above_range",
    "status", "family", "level"}``; a censored end is None (JSON has no ∞): ``status`` ``never_crossed``
    means a margin above every tested one (+∞), ``starts_below`` one below every tested one (−∞)."""
    family = PatternFamily("uniform", MIXES)
    batches = token_batches(num_sequences, model.cfg.n_ctx, model.cfg.d_vocab, seed, batch_size)
    sweep = family_sweep(model, batches, [family], head[0], head[1])[family.name]
    t = family_threshold(
        family,
        sweep["accuracy"],
        sweep["flip_mass"],
        TOLERANCE_LEVEL,
        "accuracy",
        resamples,
        confidence,
        seed,
    )
    return {**censored_dict(t.margin), "status": t.status, "family": family.name, "level": TOLERANCE_LEVEL}
