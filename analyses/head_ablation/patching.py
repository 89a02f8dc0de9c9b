"""Activation patching on the reverse task: TransformerLens' patching sweeps, on our model.

**Corruption.** A clean sequence t and a corrupted t' that differs from it in one input position p
only: t'_p = (t_p + 1 + r) mod C with r uniform on 0..C−2 (seeded), so always another digit. The
reversal makes exactly one output depend on that input: position q = N − 1 − p, whose target is t_p.
**Metric** (per sequence): the logit difference at q between the clean and the corrupted answer,
m = ℓ_q[t_p] − ℓ_q[t'_p]; positive on the clean run, negative on the corrupted run of a model that
reverses. **Recovery** of a patch (a clean activation put into the corrupted run at one
layer/position/head):

    R = Σ_b (m_patched − m_corrupted) / Σ_b (m_clean − m_corrupted)

(0: the patch restores nothing; 1: it restores the clean behaviour), with a percentile-bootstrap CI
over sequences (ratio of sums, resampling sequences). For a head that routes input p to output q the
heads × positions sweep of ``hook_z`` lights up at query position q only.

The sweeps are ``transformer_lens.patching.get_act_patch_attn_head_out_by_pos`` and
``get_act_patch_resid_pre`` with ``reduce="none"``: for each cell, one forward pass of the corrupted
tokens with the clean activation written into that cell by a hook. :func:`patch_cells` runs the same
patches and returns the same numbers (``tests/test_head_ablation.py`` compares them with
TransformerLens'), without importing ``transformer_lens.patching``, whose import brings pandas and
TransformerLens' model bridge (about 4 s, twice this analysis' compute).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from analyses.frame.result import plain
from interp.stats import Estimate, bootstrap_ci, bootstrap_distribution, percentile_interval


@dataclass
class PatchingSweep:
    """Recovery per patched cell: ``heads_by_position`` [layer, pos, head], ``resid_pre`` [layer, pos];
    each a dict of ``mean`` / ``ci_low`` / ``ci_high`` arrays."""

    position: int  # corrupted input position p
    output_position: int  # the output that reads it, q = N − 1 − p
    num_sequences: int
    clean_metric: Estimate
    corrupted_metric: Estimate
    heads_by_position: dict[str, np.ndarray]
    resid_pre: dict[str, np.ndarray]

    def to_dict(self) -> dict[str, Any]:
        return {
            "corruption": "one input position p changed to another digit; metric = logit difference at "
            "output N−1−p between the clean and the corrupted digit; recovery = Σ(patched − corrupted) / "
            "Σ(clean − corrupted) over sequences",
            **plain(self),
        }


def corrupt(tokens: Int[Tensor, "batch pos"], position: int, num_categories: int, seed: int) -> Tensor:
    """Copy of ``tokens`` with the digit at ``position`` replaced by a different one (seeded)."""
    if num_categories < 2:
        raise ValueError("corrupting a digit needs at least two categories")
    generator = torch.Generator().manual_seed(int(seed))
    r = torch.randint(0, num_categories - 1, (tokens.shape[0],), generator=generator).to(tokens.device)
    out = tokens.clone()
    out[:, position] = (tokens[:, position] + 1 + r) % num_categories
    return out


def _recovery(values: Tensor, corrupted: Tensor, clean: Tensor, resamples: int, confidence: float, seed: int):
    """values [..., batch] → mean / CI arrays shaped [...] of Σ(values − corrupted) / Σ(clean − corrupted)."""
    shape = values.shape[:-1]
    num = (values - corrupted).reshape(-1, values.shape[-1]).T.double().cpu().numpy()  # [batch, cells]
    den = np.broadcast_to((clean - corrupted).double().cpu().numpy()[:, None], num.shape)
    point, reps = bootstrap_distribution(num, den, resamples=resamples, seed=[seed, 2])
    low, high = percentile_interval(reps, confidence)
    return {k: v.reshape(shape) for k, v in (("mean", point), ("ci_low", low), ("ci_high", high))}


def patch_cells(
    model: Any,
    corrupted: Int[Tensor, "batch pos"],
    clean_cache: Any,
    metric: Callable[[Tensor], Tensor],
    hook: str,
    shape: tuple[int, ...],
    progress: bool = True,
) -> Float[Tensor, "... batch"]:
    """``metric`` (a [batch] tensor) of the corrupted run with one cell of ``blocks.<layer>.<hook>``
    replaced by the clean run's: for every index ``(layer, pos)`` or ``(layer, pos, head)`` of
    ``shape``, ``activation[:, pos] = clean[:, pos]`` or ``activation[:, pos, head] = clean[:, pos,
    head]`` — TransformerLens' ``layer_pos_patch_setter`` / ``layer_pos_head_vector_patch_setter`` in
    its ``generic_activation_patch`` loop, with a tqdm bar per sweep unless ``progress`` is False.
    Returns ``[*shape, batch]`` (float32, as TransformerLens stores it)."""
    from tqdm.auto import tqdm  # TransformerLens' bar, as its sweeps drew it

    values = torch.zeros((*shape, corrupted.shape[0]))
    for index in tqdm(list(np.ndindex(*shape)), disable=not progress):
        layer, pos, *head = index
        name = f"blocks.{layer}.{hook}"
        clean = clean_cache[name]
        cell = (slice(None), pos, *head)

        def patch(activation: Tensor, hook: Any, cell: tuple = cell, clean: Tensor = clean) -> Tensor:
            activation[cell] = clean[cell]
            return activation

        values[index] = metric(model.run_with_hooks(corrupted, fwd_hooks=[(name, patch)])).detach()
    return values


@torch.no_grad()
def patching_sweep(
    model: Any,
    tokens: Int[Tensor, "batch pos"],
    position: int | None = None,
    seed: int = 0,
    resamples: int = 1000,
    confidence: float = 0.95,
    progress: bool = True,
) -> PatchingSweep:
    """Run the heads × positions (``hook_z``) and layers × positions (``hook_resid_pre``) sweeps;
    ``progress=False`` hides TransformerLens' progress bars."""
    n = tokens.shape[1]
    p = n // 4 if position is None else position
    if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < n:
        raise ValueError(f"patch position must be an integer in 0..{n - 1}, got {position!r}")
    q = n - 1 - p
    corrupted = corrupt(tokens, p, model.cfg.d_vocab, seed)
    answer, wrong = tokens[:, p : p + 1], corrupted[:, p : p + 1]

    def metric(logits: Tensor) -> Tensor:
        at_q = logits[:, q]
        return (at_q.gather(-1, answer) - at_q.gather(-1, wrong)).squeeze(-1)  # [batch]

    clean_logits, clean_cache = model.run_with_cache(tokens)
    m_clean, m_corrupted = metric(clean_logits), metric(model(corrupted))
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    sweep = partial(patch_cells, model, corrupted, clean_cache, metric, progress=progress)
    heads = sweep("attn.hook_z", (n_layers, n, n_heads))
    resid = sweep("hook_resid_pre", (n_layers, n))
    (clean_est,) = bootstrap_ci(
        m_clean.double().cpu().numpy(), resamples=resamples, confidence=confidence, seed=seed
    )
    (corr_est,) = bootstrap_ci(
        m_corrupted.double().cpu().numpy(), resamples=resamples, confidence=confidence, seed=seed
    )
    return PatchingSweep(
        position=p,
        output_position=q,
        num_sequences=tokens.shape[0],
        clean_metric=clean_est,
        corrupted_metric=corr_est,
        heads_by_position=_recovery(heads, m_corrupted, m_clean, resamples, confidence, seed),
        resid_pre=_recovery(resid, m_corrupted, m_clean, resamples, confidence, seed),
    )
