"""Data for the report's interactive attention explorer (``reports/static/explorer.js``).

The explorer shows the attention pattern of any layer and head for a chosen sequence. Two sources:

- **embedded sequences**: the first ``n`` sequences of the analyses' evaluation stream
  (``analyses.frame.sequences.token_batches`` with the report's seed), with their patterns read from
  ``blocks.l.attn.hook_pattern`` on the model's one forward pass and the model's predictions;
- **typed digits**: no table can hold every input, so the page carries the model's weights and the
  script re-states the small forward pass (embedding + positional encoding, attention, LayerNorm, MLP,
  output head) in JavaScript. On load it recomputes the embedded sequences and shows the largest
  difference from the Python patterns; the browser tests hold it below 1e-4.

Weights travel as base64 little-endian float32 (exact, and ~5.3 characters per number instead of ~10
for decimal text). Everything here is a rendering of the model; no metric is computed.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from analyses.frame.loading import evaluating
from analyses.frame.sequences import token_batches

PATTERN_DECIMALS = 5  # embedded patterns are rounded to this many decimals (|error| ≤ 5e-6)


def max_typed_length(cfg: Any) -> int:
    """Longest typed sequence the page accepts: the learned table's length, else twice the training
    length (sinusoidal and absent encodings work at any length; twice N keeps the heatmap legible)."""
    return cfg.n_ctx if cfg.positional_embedding == "learned" else 2 * cfg.n_ctx


def example_tokens(cfg: Any, seed: int, count: int) -> Int[Tensor, "example pos"]:
    """The first ``count`` evaluation sequences of the stream every analysis reads with ``seed``."""
    return next(token_batches(count, cfg.n_ctx, cfg.d_vocab, seed, count))


def attention_patterns(
    model: Any, tokens: Int[Tensor, "batch pos"]
) -> tuple[Float[Tensor, "batch layer head query key"], Int[Tensor, "batch pos"]]:
    """Every layer's ``hook_pattern`` and the predicted digits, from one forward pass."""
    hooks = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    with evaluating(model):
        logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name in hooks)
    return torch.stack([cache[h] for h in hooks], dim=1).cpu(), logits.argmax(-1).cpu()


def _encode(tensor: Tensor) -> dict[str, Any]:
    array = np.ascontiguousarray(tensor.detach().to("cpu", torch.float32).numpy(), dtype="<f4")
    return {"shape": list(array.shape), "data": base64.b64encode(array.tobytes()).decode("ascii")}


def model_weights(model: Any) -> dict[str, dict[str, Any]]:
    """Every parameter under its ``state_dict`` name, plus ``pos``: the positional encoding rows
    the page may need ([max_typed_length, d_model]; absent for models without one)."""
    cfg = model.cfg
    weights = {name: _encode(value) for name, value in model.state_dict().items()}
    weights.pop("pos_embed.W_pos", None)
    if cfg.positional_embedding != "none":
        rows = max_typed_length(cfg)
        weights["pos"] = _encode(model.pos_embed.table[:rows])
    return weights


def explorer_data(model: Any, seed: int, count: int = 8, name: str = "") -> dict[str, Any]:
    """The JSON object the explorer script reads (see the module docstring)."""
    cfg = model.cfg
    tokens = example_tokens(cfg, seed, count)
    patterns, predictions = attention_patterns(model, tokens)
    patterns = np.round(patterns.to(torch.float64).numpy(), PATTERN_DECIMALS)
    return {
        "name": name,
        "config": {
            "n_layers": cfg.n_layers,
            "n_heads": cfg.n_heads,
            "d_model": cfg.d_model,
            "d_head": cfg.d_head,
            "d_vocab": cfg.d_vocab,
            "n_ctx": cfg.n_ctx,
            "positional_embedding": cfg.positional_embedding,
            "normalization": cfg.normalization,
            "layer_norm_eps": cfg.layer_norm_eps,
            "max_typed_length": max_typed_length(cfg),
        },
        "pattern_decimals": PATTERN_DECIMALS,
        "examples": [
            {"tokens": t.tolist(), "patterns": p.tolist(), "predictions": y.tolist()}
            for t, p, y in zip(tokens, patterns, predictions)
        ],
        "weights": model_weights(model),
    }
