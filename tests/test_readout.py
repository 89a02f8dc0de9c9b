"""The vote and argmax-key readout rules on votes with known totals and on the vote machine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vote_machine import vote_machine

from interp import patterns
from interp.ablation import replace_pattern
from interp.pattern_families import PatternFamily
from interp.readout import (
    READOUT_COLUMNS,
    argmax_key_digit,
    digit_votes,
    margin_bins,
    neighbours_agree_wrong,
    pearson_from_moments,
    readout_columns,
    readout_estimates,
    readout_statistic,
    target_margin,
)
from interp.tolerance import family_sweep

N = 16


def test_votes_margins_and_the_argmax_key_on_known_totals():
    tokens = torch.tensor([[3, 3, 5, 7]])
    pattern = torch.tensor([[[0.1, 0.2, 0.3, 0.4], [0.3, 0.3, 0.2, 0.2], [0.0, 0.0, 1.0, 0.0], [0.25] * 4]])
    votes = digit_votes(pattern, tokens, 10)
    assert torch.allclose(votes[0, 0, [3, 5, 7]], torch.tensor([0.3, 0.3, 0.4]))
    assert torch.allclose(votes.sum(-1), torch.ones(1, 4))
    targets = tokens.flip(-1)  # query 0 must output 7, query 1 5, query 2 3, query 3 3
    margin = target_margin(votes, targets)
    # q0: 7 has 0.4 vs 0.3; q1: 5 has 0.2 vs digit 3's 0.6; q2: 3 has 0 vs 5's 1; q3: 3 has 0.5 vs 0.25
    assert torch.allclose(margin, torch.tensor([[0.1, -0.4, -1.0, 0.25]]))
    assert argmax_key_digit(pattern, tokens).tolist() == [[7, 3, 5, 3]]  # ties to the lowest key
    assert votes.argmax(-1).tolist() == [[7, 3, 5, 3]]
    with pytest.raises(ValueError, match="0..9"):
        digit_votes(pattern, tokens + 5, 10)
    with pytest.raises(ValueError, match="disagree"):
        target_margin(votes, targets[:, :2])


def test_adversarial_queries_are_those_whose_neighbours_agree_on_one_wrong_digit():
    seq = [4] * N
    seq[7] = 2  # query 8 reads key 7, whose neighbours 5, 6, 8, 9 all hold 4
    seq[0] = 1  # query 15 reads key 0: its only neighbours 1, 2 hold 4
    mask = neighbours_agree_wrong(torch.tensor([seq]))
    assert mask[0].nonzero().flatten().tolist() == [8, 15]
    seq[9] = 3  # now key 7's neighbours disagree (4 and 3) at radius 2, but agree at radius 1
    t = torch.tensor([seq])
    assert not neighbours_agree_wrong(t)[0, 8] and neighbours_agree_wrong(t, radius=1)[0, 8]
    assert not neighbours_agree_wrong(
        torch.zeros(1, N, dtype=torch.long)
    ).any()  # all agree on the right digit
    with pytest.raises(ValueError, match="radius"):
        neighbours_agree_wrong(t, radius=0)
    assert torch.equal(neighbours_agree_wrong(t, radius=np.int64(1)), neighbours_agree_wrong(t, radius=1))


def random_patterns(batch: int, seed: int, power: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(batch, N, N, generator=g) ** power  # peaked rows, no ties
    return w / w.sum(-1, keepdim=True)


def test_the_vote_machine_always_follows_the_vote():
    model = vote_machine()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 10, (64, N), generator=g)
    pattern = random_patterns(64, seed=1)
    with replace_pattern(model, 0, 0, lambda p: pattern.to(p.dtype)):
        logits = model(tokens)
    cols = readout_columns(pattern.unsqueeze(0), tokens, logits.unsqueeze(0))[0]
    named = dict(zip(READOUT_COLUMNS, cols.T))
    assert torch.equal(named["vote_agree"], torch.full((64,), float(N)))
    assert (named["argmax_agree"] < N).any()  # the rival rule does not always agree
    votes = digit_votes(pattern.double(), tokens, 10)
    mu = target_margin(votes, tokens.flip(-1))
    lam = target_margin(logits.double(), tokens.flip(-1))
    assert torch.equal(torch.sign(mu), torch.sign(lam))
    assert torch.allclose(named["m_vote"], mu.sum(-1)) and torch.allclose(
        named["m_cross"], (mu * lam).sum(-1)
    )
    assert torch.equal(named["vote_gap"], torch.zeros(64))


def neighbour_heavy(p: torch.Tensor) -> torch.Tensor:
    """0.4 on the flipped key, 0.3 on each of its ±1 neighbours (0.6 on the one existing at an edge)."""
    n = p.shape[-1]
    out = 0.4 * patterns.flip(p)
    out += 0.3 * patterns.flip(p, shift=1) + 0.3 * patterns.flip(p, shift=-1)
    out[..., torch.arange(n), torch.arange(n - 1, -1, -1)] = 0.4  # the clamped shifts landed on f(i)
    edge = out.sum(-1, keepdim=True) < 1
    return torch.where(edge & (out > 0) & (out < 0.4), torch.full_like(out, 0.6), out)


SEQ_ISOLATED = (
    [4] * 7 + [2] + [4] * 8
)  # query 8: flipped key 7 holds 2 (0.4), keys 6 and 8 hold 4 (0.3 + 0.3)


def test_where_the_rules_differ_the_vote_machine_sides_with_the_vote():
    tokens = torch.tensor([SEQ_ISOLATED])
    model = vote_machine()
    with replace_pattern(model, 0, 0, neighbour_heavy):
        sweep = family_sweep(
            model, [tokens], [PatternFamily("uniform", ())], statistics={"r": readout_columns}
        )
    named = dict(zip(READOUT_COLUMNS, sweep["uniform"]["r"][0, 0]))
    # query 8 outputs 4 (vote 0.6) instead of 2 (heaviest key 0.4): the model is wrong there, as the
    # vote says; every other query reads a 4 surrounded by 4s (or the 2 next to them, 0.3 < 0.7).
    assert sweep["uniform"]["accuracy"][0, 0] == 15 / 16
    assert named["vote_agree"] == 16 and named["argmax_agree"] == 15 and named["vote_right"] == 15
    assert named["adversarial"] == 1 and named["adversarial_vote_agree"] == 1
    assert named["adversarial_argmax_agree"] == 0 and named["adversarial_correct"] == 0


def test_pearson_from_moments_recovers_a_known_line():
    x = np.array([0.1, 0.5, -0.3, 0.9])
    y = 2 * x + 1
    m = np.array([x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum()])
    r, slope, intercept = pearson_from_moments(m, len(x))
    assert r == pytest.approx(1.0) and slope == pytest.approx(2.0) and intercept == pytest.approx(1.0)
    r, *_ = pearson_from_moments(np.array([4.0, 2.0, 4.0, 1.0, 2.0]), 4)  # x constant: no correlation
    assert np.isnan(r)


def test_readout_estimates_are_ratios_of_sums_with_cis():
    cols = np.zeros((3, 2, len(READOUT_COLUMNS)))
    k = {name: i for i, name in enumerate(READOUT_COLUMNS)}
    cols[:, :, k["vote_agree"]] = [[16, 8], [16, 8], [16, 8]]
    cols[:, :, k["vote_gap"]] = [[0, 4], [0, 4], [0, 4]]  # 8 disagreements, gap 0.5 each
    cols[:, 0, k["adversarial"]] = [2, 0, 0]
    cols[:, 0, k["adversarial_vote_agree"]] = [1, 0, 0]
    x = np.arange(16) / 16
    for i in range(3):
        cols[i, :, k["m_vote"] :] = [
            x.sum(),
            (3 * x).sum(),
            (x * x).sum(),
            (9 * x * x).sum(),
            (3 * x * x).sum(),
        ]
    est = readout_estimates(cols, N, resamples=50)
    assert [e.mean for e in est["vote_agreement"]] == [1.0, 0.5]
    assert est["vote_gap"][1].mean == 0.5 and np.isnan(est["vote_gap"][0].mean)  # no disagreement
    assert est["adversarial_vote_agreement"][0].mean == 0.5
    assert np.isnan(est["adversarial_vote_agreement"][1].mean)  # no adversarial position at point 1
    assert est["pearson"][0].mean == pytest.approx(1.0) and est["slope"][1].mean == pytest.approx(3.0)
    with pytest.raises(ValueError, match="readout sums"):
        readout_estimates(cols[:, :, :5], N)


def test_margin_bins_count_positions_and_sum_logit_margins_per_vote_margin_bin():
    model = vote_machine()
    tokens = torch.tensor([SEQ_ISOLATED])
    stat = margin_bins([-1.0, -0.05, 0.05, 1.01])  # float32 weights: a margin of 1 may round above 1
    with replace_pattern(model, 0, 0, neighbour_heavy):
        out = family_sweep(model, [tokens], [PatternFamily("uniform", ())], statistics={"bins": stat})
    counts, sums = out["uniform"]["bins"][0, 0, :3], out["uniform"]["bins"][0, 0, 3:]
    # query 8: vote margin 0.4 − 0.6 = −0.2 (first bin); every other query is right by ≥ 0.4
    assert counts.tolist() == [1, 0, 15]
    assert sums[0] < 0 < sums[2] and sums[1] == 0
    with pytest.raises(ValueError, match="increasing"):
        margin_bins([0.5, 0.1])


def test_margin_bins_close_the_last_edge_and_drop_outside_values():
    stat = margin_bins([0.0, 0.5, 1.0])
    one_hot = patterns.flip(torch.zeros(1, N, N)).unsqueeze(0)  # vote margin exactly 1 everywhere
    tokens = torch.arange(N).remainder(10).unsqueeze(0)
    logits = torch.zeros(1, 1, N, 10)
    out = stat(one_hot, tokens, logits)[0, 0]
    assert out[:2].tolist() == [0, N]  # 1.0 falls in the closed last bin
    out = margin_bins([0.0, 0.5])(one_hot, tokens, logits)[0, 0]
    assert out[:1].tolist() == [0]  # above the last edge: not counted


def test_one_readout_statistic_is_the_columns_and_the_bins_side_by_side():
    g = torch.Generator().manual_seed(0)
    pats = torch.randn(3, 4, N, N, generator=g).softmax(-1)  # [point, batch, query, key]
    tokens = torch.randint(0, 10, (4, N), generator=g)
    logits = torch.randn(3, 4, N, 10, generator=g)
    edges = [-1.0, -0.2, 0.0, 0.3, 1.0]
    both = readout_statistic(radius=1, edges=edges)(pats, tokens, logits)
    columns = readout_columns(pats, tokens, logits, radius=1)
    assert torch.equal(both, torch.cat([columns, margin_bins(edges)(pats, tokens, logits)], -1))
    assert torch.equal(readout_statistic(radius=1)(pats, tokens, logits), columns)
    assert both[..., len(READOUT_COLUMNS) : len(READOUT_COLUMNS) + 4].sum(-1).eq(N).all()  # every μ binned
    with pytest.raises(ValueError, match="radius must be a positive integer"):
        readout_statistic(radius=0)
