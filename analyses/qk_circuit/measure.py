"""``run``: stream sequences through the model, summing per bootstrap unit what layer 0's QK circuit needs."""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from analyses.frame import arguments
from analyses.frame.loading import evaluating, records_source
from analyses.frame.sequences import token_batches
from analyses.qk_circuit.result import ANALYSIS, SIMILARITIES, SWAP_OFFSETS, QKCircuitResult
from analyses.qk_circuit.statistics import summarise
from interp.circuits import (
    LAYER0_HOOKS,
    SCORE_TERMS,
    cosine_by_offset,
    decompose_from_cache,
    positional_encodings,
    qk_circuit,
    swap_effect,
)
from interp.rollout import rollout_from_cache
from machine import processes

# Beyond this many sequences the bootstrap resamples blocks of consecutive sequences (constant memory).
MAX_UNITS = 2000


class _UnitSums:
    """Per-unit running sums ``[units, ...]`` (float64), filled batch by batch with ``index_add_``."""

    def __init__(self, n_units: int):
        self.n_units = n_units
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, name: str, unit: torch.Tensor, values: torch.Tensor) -> None:
        values = values.detach().to("cpu", torch.float64)
        if name not in self.sums:
            self.sums[name] = torch.zeros(self.n_units, *values.shape[1:], dtype=torch.float64)
        self.sums[name].index_add_(0, unit, values)


def weight_geometry(model: Any, n: int) -> dict[str, np.ndarray]:
    """Quantities of the weights alone, for layer 0 (no data, no sampling error).

    - ``similarity[kind]`` ``[head, query, key]``: ``raw_pe`` = cos(PE_{N−1−i}, PE_j);
      ``key_key`` = cos(k_{N−1−i}, k_j) with k = PE W_K; ``query_key`` = cos(q_i, k_j) with q = PE W_Q;
    - ``qk_gain`` ``[head]``: mean_i |q_i| |k_{N−1−i}| / √d_head (a cosine gap Δ becomes a score gap of
      about gain·Δ);
    - ``singular_values`` ``[layer, head, d_head]`` of W_Q W_Kᵀ (``transformer_lens.FactoredMatrix``).
    """
    cfg = model.cfg
    P = positional_encodings(model, n).to(torch.float64).cpu()
    attn = model.blocks[0].attn
    W_Q, W_K = attn.W_Q.detach().to("cpu", torch.float64), attn.W_K.detach().to("cpu", torch.float64)
    q, k = torch.einsum("pd,hde->hpe", P, W_Q), torch.einsum("pd,hde->hpe", P, W_K)

    def cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        b = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return a @ b.transpose(-1, -2)

    flip = torch.arange(n - 1, -1, -1)
    raw = cos(P[flip], P).expand(cfg.n_heads, n, n)
    similarity = {"raw_pe": raw, "key_key": cos(k[:, flip], k), "query_key": cos(q, k)}
    gain = (q.norm(dim=-1) * k[:, flip].norm(dim=-1)).mean(-1) / math.sqrt(cfg.d_head)
    singular = torch.stack([qk_circuit(model, layer).S for layer in range(cfg.n_layers)])
    return {
        "similarity": {name: similarity[name].numpy() for name in SIMILARITIES},
        "qk_gain": gain.numpy(),
        "singular_values": singular.to("cpu", torch.float64).numpy(),
        "raw_pe_cosine_by_distance": cosine_by_offset(P).numpy(),
        "key_cosine_by_distance": cosine_by_offset(k).numpy(),
    }


@records_source(ANALYSIS)
def run(
    model: Any,
    num_sequences: int = 2000,
    seq_len: int | None = None,
    seed: int = 0,
    batch_size: int = 500,
    bootstrap_resamples: int = 1000,
    confidence: float = 0.95,
    swap_offsets: Sequence[int] = SWAP_OFFSETS,
) -> QKCircuitResult:
    """Stream ``num_sequences`` random sequences through ``model`` and measure layer 0's QK circuit.

    Memory is constant in ``num_sequences`` (sums per bootstrap unit). Same arguments, same numbers.
    """
    cfg = model.cfg
    seq_len = arguments.check_sampling(
        cfg, num_sequences, seq_len, seed, batch_size, bootstrap_resamples, confidence
    )
    if seq_len < 3:
        raise ValueError(f"seq_len must be at least 3 (a flipped key with neighbours), got {seq_len}")
    swap_offsets = tuple(int(o) for o in swap_offsets)
    if not swap_offsets or any(abs(o) >= seq_len for o in swap_offsets):
        raise ValueError(f"swap offsets must be non-empty with |o| < seq_len {seq_len}, got {swap_offsets}")
    n, n_layers = seq_len, cfg.n_layers
    n_units = min(num_sequences, MAX_UNITS)
    hooks = set(LAYER0_HOOKS) | {f"blocks.{layer}.attn.hook_pattern" for layer in range(n_layers)}
    device = next(model.parameters()).device
    frozen_scale = cfg.normalization == "pre"

    def batches() -> Any:
        """Each batch of the token stream with the bootstrap unit of each of its sequences."""
        seen = 0
        for tokens in token_batches(num_sequences, n, cfg.d_vocab, seed, batch_size):
            b = tokens.shape[0]
            yield tokens.to(device), (torch.arange(seen, seen + b) * n_units) // num_sequences
            seen += b

    def circuit() -> tuple[_UnitSums, float, dict[str, Any]]:
        """The score decomposition, patterns and accuracy of every batch, and the weights' geometry."""
        sums, max_error = _UnitSums(n_units), 0.0
        with evaluating(model):
            for tokens, unit in batches():
                logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name in hooks)
                dec = decompose_from_cache(model, cache)
                max_error = max(max_error, dec.max_abs_error())
                terms = torch.stack([dec.terms[t] for t in SCORE_TERMS], dim=1).double()  # [b, term, h, q, k]
                total = terms.sum(1)
                centred_total = total - total.mean(-1, keepdim=True)
                centred_terms = terms - terms.mean(-1, keepdim=True)
                sums.add("sequences", unit, torch.ones(len(tokens)))
                sums.add("pattern", unit, dec.pattern)
                sums.add("terms", unit, terms)
                sums.add("var_cross", unit, (centred_terms * centred_total.unsqueeze(1)).sum((-1, -2)))
                sums.add("var_own", unit, centred_terms.pow(2).sum((-1, -2)))
                sums.add("var_total", unit, centred_total.pow(2).sum((-1, -2)))
                sums.add("correct", unit, (logits.argmax(-1) == tokens.flip(-1)).double().sum(-1))
                if n_layers > 1:
                    sums.add("rollout", unit, rollout_from_cache(cache, n_layers))
            geometry = weight_geometry(model, n)
        if processes.parallel_enabled():  # the swaps take longer: import what comes next meanwhile
            for module in ("analyses.qk_circuit.figures", "analyses.frame.html"):  # matplotlib, Jinja2
                importlib.import_module(module)
        return sums, max_error, geometry

    def swaps() -> dict[str, np.ndarray]:
        """The digit swaps of every batch (a second process, when there is one: they are most of the
        work, and need only the tokens and their own generator)."""
        sums = _UnitSums(n_units)
        generator = torch.Generator().manual_seed(seed)  # swap digits; data use numpy streams [seed, block]
        with evaluating(model):
            for tokens, unit in batches():
                swap = swap_effect(model, tokens, swap_offsets, generator)
                sums.add("swap_follows", unit, swap.follows.double().sum(1))
                sums.add("swap_changed", unit, swap.changed.double().sum(1))
                sums.add("swap_drop", unit, swap.target_logprob_drop.double().sum(1))
                sums.add("swap_count", unit, swap.valid.double().sum(1))
        return {name: values.numpy() for name, values in sums.sums.items()}

    (sums, max_error, geometry), swapped = processes.split(circuit, swaps)
    sums.sums.update({name: torch.from_numpy(values) for name, values in swapped.items()})
    return summarise(
        sums.sums,
        geometry,
        max_error=max_error,
        frozen_scale=frozen_scale,
        num_sequences=num_sequences,
        seq_len=n,
        seed=seed,
        batch_size=batch_size,
        resamples=bootstrap_resamples,
        confidence=confidence,
        swap_offsets=swap_offsets,
        config=cfg.to_dict(),
    )
