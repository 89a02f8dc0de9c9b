"""Per-sequence outcomes on logits whose answers are known exactly."""

from __future__ import annotations

import math

import pytest
import torch

from interp import outcomes


def copying_logits(tokens: torch.Tensor, offset: int, vocab: int = 10, margin: float = 3.0) -> torch.Tensor:
    """Logits that predict t[N−1−i+offset] (clamped into range) with the given margin."""
    n = tokens.shape[1]
    source = (torch.arange(n - 1, -1, -1) + offset).clamp(0, n - 1)
    return margin * torch.nn.functional.one_hot(tokens[:, source], vocab).double()


def test_perfect_reversal():
    tokens = torch.tensor([[1, 2, 3, 4, 5, 6]])
    stats = outcomes.sequence_outcomes(copying_logits(tokens, 0), tokens)
    assert stats["accuracy"].item() == 1.0 and stats["correct"].sum() == 6
    assert stats["logit_diff"].item() == pytest.approx(3.0)
    expected_loss = -math.log(math.exp(3) / (math.exp(3) + 9))
    assert stats["loss"].item() == pytest.approx(expected_loss)


def test_offset_match_finds_the_copied_neighbour():
    tokens = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7]])  # distinct digits: only the copied offset matches
    hits, valid = outcomes.offset_match(copying_logits(tokens, -2), tokens, (-2, -1, 0, 1, 2))
    assert valid.tolist() == [6, 7, 8, 7, 6]
    # Positions 6 and 7 have no t[N−3−i]; clamped, they predict t[0], which is offset −1 for i = 6 and
    # the target (offset 0) for i = 7.
    assert hits[0].tolist() == [6, 1, 1, 0, 0]
    stats = outcomes.sequence_outcomes(copying_logits(tokens, 1), tokens)
    assert stats["offset_hits"][0].tolist() == [0, 0, 1, 7, 0]  # position 0 clamps onto its target
    assert stats["accuracy"].item() == pytest.approx(1 / 8)  # position 0's clamped copy is the target


def test_logit_difference_is_negative_when_wrong_and_zero_on_ties():
    tokens = torch.tensor([[3, 5]])
    logits = torch.zeros(1, 2, 10)
    logits[0, 0, 5] = 1.0  # right at position 0 (target t[1] = 5)
    logits[0, 1, 7] = 2.0  # wrong at position 1 (target t[0] = 3)
    assert outcomes.logit_difference(logits, tokens).tolist() == [[1.0, -2.0]]
    assert outcomes.logit_difference(torch.zeros(1, 2, 10), tokens).tolist() == [[0.0, 0.0]]


def test_shape_errors():
    with pytest.raises(ValueError, match="disagree"):
        outcomes.sequence_outcomes(torch.zeros(2, 3, 10), torch.zeros(2, 4, dtype=torch.long))
