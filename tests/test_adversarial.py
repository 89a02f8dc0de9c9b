"""Isolated-digit inputs and the beam search, on score functions whose optimum is known."""

from __future__ import annotations

import pytest
import torch
from vote_machine import vote_machine

from interp.ablation import replace_pattern
from interp.adversarial import (
    beam_search,
    isolated_digit_sequences,
    min_logit_margin,
    min_vote_margin,
    single_changes,
)
from interp.readout import neighbours_agree_wrong

N = 16


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_isolated_digits_make_exactly_the_probe_queries_adversarial(radius):
    tokens, probes = isolated_digit_sequences(200, N, 10, radius=radius, seed=0)
    adversarial = neighbours_agree_wrong(tokens, radius)
    assert (adversarial | ~probes).all()  # every probe query is adversarial
    if radius == 1:  # a background key between two probes holding one digit is adversarial too
        assert (adversarial & ~probes).any()
    else:
        assert torch.equal(probes, adversarial)
    assert (probes.sum(-1) >= N // (radius + 1)).all()
    again, _ = isolated_digit_sequences(200, N, 10, radius=radius, seed=0)
    assert torch.equal(tokens, again)
    assert not torch.equal(tokens, isolated_digit_sequences(200, N, 10, radius=radius, seed=1)[0])


def test_isolated_digits_reject_bad_sizes():
    with pytest.raises(ValueError, match="radius"):
        isolated_digit_sequences(4, N, 10, radius=0)
    with pytest.raises(ValueError, match="num_categories must be an integer ≥ 2"):
        isolated_digit_sequences(4, N, 1)


def test_single_changes_are_every_one_position_edit():
    tokens = torch.tensor([[0, 1, 2], [2, 2, 2]])
    out = single_changes(tokens, 3)
    assert out.shape == (2 * 3 * 2, 3)
    diff = (out.view(2, 6, 3) != tokens.unsqueeze(1)).sum(-1)
    assert (diff == 1).all()
    assert all(len(torch.unique(row, dim=0)) == 6 for row in out.view(2, 6, 3))


def test_beam_search_finds_a_known_optimum_and_is_deterministic():
    def score(tokens):  # lower is better: as many 7s as possible, then as few 3s
        return -(tokens == 7).sum(-1).double() + 0.1 * (tokens == 3).sum(-1)

    start = torch.full((2, 6), 3)
    result = beam_search(score, start, 10, width=4, steps=20)
    tokens, value = result.best
    assert tokens.tolist() == [7] * 6 and value == -6.0
    assert result.history[0] == pytest.approx(0.6) and result.history[-1] == -6.0
    assert result.history == sorted(result.history, reverse=True)
    assert beam_search(score, start, 10, width=4, steps=20).history == result.history
    short = beam_search(score, start, 10, width=4, steps=2)
    assert len(short.history) == 3 and short.best[1] > -6.0  # stopped after two steps
    with pytest.raises(ValueError, match="width"):
        beam_search(score, start, 10, width=0)


def spread_head(p: torch.Tensor) -> torch.Tensor:
    """0.5 on the flipped key f, 0.2 on f − 1 and f + 1, 0.1 on f + 2; a missing key's weight goes to f."""
    n = p.shape[-1]
    out = torch.zeros_like(p)
    rows, f = torch.arange(n), torch.arange(n - 1, -1, -1)
    for d, w in ((0, 0.5), (-1, 0.2), (1, 0.2), (2, 0.1)):
        key = f + d
        ok = (key >= 0) & (key < n)
        out[..., rows[ok], key[ok]] += w
        out[..., rows[~ok], f[~ok]] += w
    return out


def test_worst_vote_margin_of_a_spread_head_is_found_in_two_steps():
    """The worst input puts one digit w on f − 1, f + 1 and f + 2: w gets 0.5, as much as the target,
    so the smallest vote margin is exactly 0; from a start where no neighbours share a digit (margin
    0.3) the beam needs two edits to get there."""
    model = vote_machine()
    start = torch.tensor([list(range(10)) + list(range(6))])
    with replace_pattern(model, 0, 0, spread_head):
        vote = min_vote_margin(model)
        assert vote(start).item() == pytest.approx(0.3)
        result = beam_search(vote, start, 10, width=4, steps=10)
        tokens, value = result.best
        assert value == pytest.approx(0.0, abs=1e-6)
        assert result.history[:3] == pytest.approx([0.3, 0.1, 0.0], abs=1e-6)
        # the vote machine's logits tie where the vote does, and were clearly apart at the start
        assert abs(min_logit_margin(model)(tokens.unsqueeze(0)).item()) < 1e-4
        assert min_logit_margin(model)(start).item() > 0.1
    with pytest.raises(ValueError, match="head 1 does not exist"):
        min_vote_margin(model, head=1)
