"""What the model outputs, reduced to numbers per sequence (the unit the bootstrap and the paired
tests resample): accuracy, loss, logit difference, and which input position the prediction copies.

For sequence b and position i the target is t[b, N − 1 − i] and ℓ = logits[b, i]:

- correct[b, i]    = [argmax_c ℓ_c = t_{N−1−i}]
- loss[b, i]       = −log softmax(ℓ)_{t_{N−1−i}}
- logit_diff[b, i] = ℓ_{t_{N−1−i}} − max_{c ≠ t_{N−1−i}} ℓ_c   (> 0 exactly when the prediction is right
  and unique)
- offset_match[b, i, d] = [argmax ℓ = t_{N−1−i+d}], defined where 0 ≤ N − 1 − i + d < N: offset 0 is
  accuracy; a model reading the flipped key's neighbour d shows up at offset d.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

MATCH_OFFSETS: tuple[int, ...] = (-2, -1, 0, 1, 2)


def _check(logits: Tensor, tokens: Tensor) -> None:
    if logits.ndim != 3 or tokens.ndim != 2 or logits.shape[:2] != tokens.shape:
        raise ValueError(
            f"logits [batch, pos, vocab] and tokens [batch, pos] disagree: {tuple(logits.shape)} vs "
            f"{tuple(tokens.shape)}"
        )


def logit_difference(
    logits: Float[Tensor, "batch pos vocab"], tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch pos"]:
    """Correct logit minus the best other logit at every position (see module doc)."""
    _check(logits, tokens)
    target = tokens.flip(-1).unsqueeze(-1)
    correct = logits.gather(-1, target).squeeze(-1)
    others = logits.scatter(-1, target, float("-inf"))
    return correct - others.max(-1).values


def offset_match(
    logits: Float[Tensor, "batch pos vocab"],
    tokens: Int[Tensor, "batch pos"],
    offsets: Sequence[int] = MATCH_OFFSETS,
) -> tuple[Float[Tensor, "batch offset"], Int[Tensor, " offset"]]:
    """(number of positions whose prediction equals t_{N−1−i+d}, number of positions where that
    token exists) per sequence and offset d."""
    _check(logits, tokens)
    n = tokens.shape[1]
    prediction = logits.argmax(-1)
    hits, valid = [], []
    for d in offsets:
        source = torch.arange(n - 1, -1, -1, device=tokens.device) + int(d)
        ok = (source >= 0) & (source < n)
        copied = tokens[:, source.clamp(0, n - 1)]
        hits.append(((prediction == copied) & ok).sum(-1))
        valid.append(ok.sum())
    return torch.stack(hits, -1).double(), torch.stack(valid)


def sequence_outcomes(
    logits: Float[Tensor, "batch pos vocab"],
    tokens: Int[Tensor, "batch pos"],
    offsets: Sequence[int] = MATCH_OFFSETS,
) -> dict[str, Tensor]:
    """Per-sequence float64 tensors: ``accuracy``, ``loss``, ``logit_diff`` [batch] (means over the
    positions), ``correct`` [batch, pos] (0/1) and ``offset_hits`` [batch, offset] with
    ``offset_valid`` [offset] (see :func:`offset_match`)."""
    _check(logits, tokens)
    logits = logits.detach().double()
    target = tokens.flip(-1)
    correct = (logits.argmax(-1) == target).double()
    loss = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
    hits, valid = offset_match(logits, tokens, offsets)
    return {
        "accuracy": correct.mean(-1),
        "loss": loss.mean(-1),
        "logit_diff": logit_difference(logits, tokens).mean(-1),
        "correct": correct,
        "offset_hits": hits,
        "offset_valid": valid,
    }
