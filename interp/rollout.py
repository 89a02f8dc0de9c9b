"""Attention rollout (Abnar & Zuidema, 2020): how much each input position feeds each output position.

Each layer mixes positions through attention and keeps its input through the residual connection.
Rollout models layer l as the row-stochastic matrix

    Â_l = (1 − r) · reduce_heads(A_l) + r · I,

(r = ``residual_weight``, 0.5 in the paper; rows renormalised) and composes the layers:

    R = Â_{L−1} · … · Â_1 · Â_0,    R[b, i, j] = share of output position i that traces back to input j.

It ignores the values, the MLPs and the LayerNorms, so it is a view of the routing, not a causal
measurement; with one layer and r = 0 it is the attention pattern itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from models.encoder.transformer_lens_parts import ActivationCache

HeadReduction = Literal["mean", "max", "min"]
HEAD_REDUCTIONS: tuple[str, ...] = ("mean", "max", "min")


def attention_rollout(
    patterns: Sequence[Float[Tensor, "batch head query key"]],
    residual_weight: float = 0.5,
    head_reduction: HeadReduction = "mean",
) -> Float[Tensor, "batch query key"]:
    """Compose per-layer attention patterns (layer 0 first) into the rollout matrix R (see module doc)."""
    if len(patterns) == 0:
        raise ValueError("patterns must hold at least one layer's attention pattern")
    if not 0.0 <= float(residual_weight) <= 1.0:
        raise ValueError(f"residual_weight must be in [0, 1], got {residual_weight!r}")
    if head_reduction not in HEAD_REDUCTIONS:
        raise ValueError(f"head_reduction must be one of {HEAD_REDUCTIONS}, got {head_reduction!r}")
    first = patterns[0]
    for layer, pattern in enumerate(patterns):
        if pattern.ndim != 4 or pattern.shape[-1] != pattern.shape[-2]:
            raise ValueError(
                f"pattern of layer {layer} must have shape [batch, head, pos, pos], "
                f"got {tuple(pattern.shape)}"
            )
        if pattern.shape[0] != first.shape[0] or pattern.shape[-1] != first.shape[-1]:
            raise ValueError(
                f"pattern of layer {layer} has shape {tuple(pattern.shape)}, "
                f"inconsistent with layer 0's {tuple(first.shape)}"
            )
    n = first.shape[-1]
    eye = torch.eye(n, dtype=first.dtype, device=first.device)
    rollout = eye.expand(first.shape[0], n, n)
    for pattern in patterns:
        if head_reduction == "mean":
            mixed = pattern.mean(dim=1)
        elif head_reduction == "max":
            mixed = pattern.amax(dim=1)
        else:
            mixed = pattern.amin(dim=1)
        layer_matrix = (1.0 - residual_weight) * mixed + residual_weight * eye
        # max/min over heads breaks row-stochasticity; renormalise so rows stay distributions.
        layer_matrix = layer_matrix / layer_matrix.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        rollout = layer_matrix @ rollout
    return rollout


def rollout_from_cache(
    cache: ActivationCache | dict[str, Tensor],
    n_layers: int,
    residual_weight: float = 0.5,
    head_reduction: HeadReduction = "mean",
) -> Float[Tensor, "batch query key"]:
    """:func:`attention_rollout` over ``blocks.{l}.attn.hook_pattern`` for l = 0..n_layers−1."""
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(n_layers)]
    available = set(cache.keys())
    missing = [name for name in names if name not in available]
    if missing:
        raise ValueError(f"cache lacks the attention patterns {missing}")
    return attention_rollout([cache[name] for name in names], residual_weight, head_reduction)
