"""Pattern metrics on hand-built patterns whose answers are known exactly, plus properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from interp import metrics

N = 16


def anti_diagonal(n: int = N, batch: int = 2, heads: int = 3) -> torch.Tensor:
    """Perfect reversal: query i attends only to key N−1−i."""
    return torch.eye(n).flip(-1).expand(batch, heads, n, n).clone()


def uniform(n: int = N, batch: int = 2, heads: int = 1) -> torch.Tensor:
    return torch.full((batch, heads, n, n), 1.0 / n)


def shifted(shift: int, n: int = N) -> torch.Tensor:
    """Query i attends only to key (N−1−i+shift) mod N."""
    pattern = torch.zeros(1, 1, n, n)
    for i in range(n):
        pattern[0, 0, i, (n - 1 - i + shift) % n] = 1.0
    return pattern


def random_pattern(seed: int, batch: int, heads: int, n: int, temperature: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, heads, n, n, generator=g, dtype=torch.float64) * temperature).softmax(-1)


def test_anti_diagonal_is_a_perfect_flip():
    p = anti_diagonal()
    assert torch.equal(metrics.flip_mass(p), torch.ones(2, 3, N))
    assert metrics.argmax_hit(p).all()
    assert torch.equal(metrics.row_entropy(p), torch.zeros(2, 3, N))
    assert torch.equal(metrics.neighbour_mass(p), torch.zeros(2, 3, N))
    assert torch.equal(metrics.remainder_mass(p), torch.zeros(2, 3, N))
    offsets = metrics.offset_mass(p)
    assert torch.equal(offsets[..., metrics.OFFSETS.index(0)], torch.ones(2, 3, N))
    assert offsets.sum() == offsets[..., metrics.OFFSETS.index(0)].sum()


def test_uniform_pattern_gives_one_over_n_and_log_n():
    p = uniform()
    assert torch.allclose(metrics.flip_mass(p), torch.full((2, 1, N), 1 / N))
    assert torch.allclose(metrics.row_entropy(p), torch.full((2, 1, N), math.log(N)))
    offsets = metrics.offset_mass(p)[0, 0]  # [query, offset]
    _, valid = metrics.offset_keys(N)
    assert torch.allclose(offsets[valid], torch.full_like(offsets[valid], 1 / N))
    assert torch.equal(offsets[~valid], torch.zeros_like(offsets[~valid]))
    # Query 0: flipped key 15, the window |d| ≤ 3 holds keys 12..15, so 12 keys remain.
    assert metrics.remainder_mass(p)[0, 0, 0].item() == pytest.approx(12 / N)
    # Query 8: flipped key 7, window keys 4..10 (7 keys), 9 remain; neighbours 5, 6, 8, 9.
    assert metrics.remainder_mass(p)[0, 0, 8].item() == pytest.approx(9 / N)
    assert metrics.neighbour_mass(p)[0, 0, 8].item() == pytest.approx(4 / N)


@pytest.mark.parametrize("shift", [1, -1, 2])
def test_shifted_anti_diagonal_puts_all_mass_at_that_offset(shift):
    p = shifted(shift)
    stats = metrics.sequence_statistics(p, torch.zeros(1, N, dtype=torch.long))
    offset_means = dict(zip(metrics.OFFSETS, stats["offset_mass"][0, 0].tolist()))
    # Key N−1−i+shift exists for N−|shift| queries, and each of them puts weight 1 there.
    assert offset_means[shift] == 1.0
    assert all(v == 0.0 for d, v in offset_means.items() if d != shift)
    assert stats["flip_mass"].item() == 0.0
    assert stats["argmax_hit_rate"].item() == 0.0
    # The |shift| queries without that key wrap around to a far key: remainder mass.
    assert stats["remainder_mass"].item() == pytest.approx(abs(shift) / N)
    assert metrics.offset_query_counts(N)[metrics.OFFSETS.index(shift)] == N - abs(shift)


def test_offset_sign_convention():
    """d = +1 is the key one to the right of the flipped key (key index N − 1 − i + 1)."""
    p = torch.zeros(1, 1, 4, 4)
    p[0, 0, 1, 3] = 1.0  # query 1: flipped key 2, key 3 is d = +1
    p[0, 0, [0, 2, 3], 0] = 1.0
    mass = metrics.offset_mass(p, offsets=(-1, 0, 1))
    assert mass[0, 0, 1].tolist() == [0.0, 0.0, 1.0]


def test_split_row_by_hand():
    p = torch.zeros(1, 1, N, N, dtype=torch.float64)
    p[0, 0, :, 0] = 1.0  # every other row: all on key 0
    # query 5: flipped key 10 gets .5, key 11 (+1) .3, key 8 (−2) .15, key 0 (d = −10) .05
    p[0, 0, 5] = 0.0
    p[0, 0, 5, [10, 11, 8, 0]] = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    assert metrics.flip_mass(p)[0, 0, 5].item() == 0.5
    assert metrics.neighbour_mass(p)[0, 0, 5].item() == pytest.approx(0.45)
    assert metrics.remainder_mass(p)[0, 0, 5].item() == pytest.approx(0.05)
    expected = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.15 * math.log(0.15) + 0.05 * math.log(0.05))
    assert metrics.row_entropy(p)[0, 0, 5].item() == pytest.approx(expected)
    assert metrics.argmax_hit(p)[0, 0, 5].item()
    assert metrics.argmax_hit(p)[0, 0].sum().item() == 2  # query 5, and query 15 whose flipped key is 0


def test_argmax_ties_go_to_the_lowest_key():
    p = torch.zeros(1, 1, 4, 4)
    p[0, 0, :, 1] = 0.5
    p[0, 0, :, 2] = 0.5  # query 1 (flipped key 2) ties keys 1 and 2 → key 1 wins → miss
    assert metrics.argmax_hit(p)[0, 0].tolist() == [False, False, True, False]


def test_target_digit_and_duplicate_neighbours_by_hand():
    tokens = torch.tensor([[1, 2, 1, 3, 1]])  # N = 5
    p = uniform(5, batch=1)
    # Targets are the reversed sequence 1 3 1 2 1: digit 1 sits on 3 keys, digits 3 and 2 on one each.
    assert metrics.target_digit_mass(p, tokens)[0, 0].tolist() == pytest.approx(
        [3 / 5, 1 / 5, 3 / 5, 1 / 5, 3 / 5]
    )
    dup, n_dup, other, n_other = metrics.duplicate_neighbour_mass(p, tokens)
    # Query 0: flipped key 4 (digit 1); neighbours at ±1, ±2 that exist: keys 3 (3), 2 (1) → 1 duplicate.
    # Query 2: flipped key 2 (digit 1); neighbours 0 (1), 1 (2), 3 (3), 4 (1) → 2 duplicates.
    # Query 4: flipped key 0 (digit 1); neighbours 1 (2), 2 (1) → 1 duplicate.
    assert n_dup[0].tolist() == [1, 0, 2, 0, 1]
    assert n_other[0].tolist() == [1, 3, 2, 3, 1]
    assert dup[0, 0].tolist() == pytest.approx([0.2, 0.0, 0.4, 0.0, 0.2])
    assert other[0, 0].tolist() == pytest.approx([0.2, 0.6, 0.4, 0.6, 0.2])


def test_reversal_correct():
    tokens = torch.tensor([[3, 1, 4]])
    logits = torch.nn.functional.one_hot(torch.tensor([[4, 1, 0]]), 5).float()
    assert metrics.reversal_correct(logits, tokens).tolist() == [[True, True, False]]


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="query == key"):
        metrics.flip_mass(torch.ones(1, 1, 3, 4))
    with pytest.raises(ValueError, match="batch, head"):
        metrics.row_entropy(torch.ones(3, 3))
    with pytest.raises(ValueError, match="tokens must have shape"):
        metrics.target_digit_mass(uniform(4, batch=1), torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="disagree"):
        metrics.reversal_correct(torch.zeros(1, 3, 5), torch.zeros(1, 4, dtype=torch.long))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 12),
    heads=st.integers(1, 3),
    temperature=st.floats(0.1, 20.0),
)
def test_offsets_and_remainder_sum_to_one(seed, n, heads, temperature):
    p = random_pattern(seed, 3, heads, n, temperature)
    total = metrics.offset_mass(p).sum(-1) + metrics.remainder_mass(p)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-12)
    # All offsets −(N−1)..N−1 cover every key exactly once.
    every = metrics.offset_mass(p, offsets=range(-(n - 1), n)).sum(-1)
    assert torch.allclose(every, torch.ones_like(every), atol=1e-12)
    entropy = metrics.row_entropy(p)
    assert (entropy >= 0).all() and (entropy <= math.log(n) + 1e-9).all()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 10), split=st.integers(1, 7))
def test_streaming_in_batches_equals_computing_at_once(seed, n, split):
    batch = 8
    p = random_pattern(seed, batch, 2, n, temperature=3.0)
    tokens = torch.randint(0, 3, (batch, n), generator=torch.Generator().manual_seed(seed))
    whole = metrics.sequence_statistics(p, tokens)
    parts = [
        metrics.sequence_statistics(p[i : i + split], tokens[i : i + split]) for i in range(0, batch, split)
    ]
    for name, value in whole.items():
        streamed = torch.cat([part[name] for part in parts])
        assert torch.allclose(streamed, value, atol=1e-12, equal_nan=True), name
    # Per-sequence means of per-row values average back to the all-rows mean.
    assert whole["flip_mass"].mean().item() == pytest.approx(metrics.flip_mass(p).mean().item())


# --- input checks and one head ----------------------------------------------------------------------
PATTERN_METRICS = [
    metrics.flip_mass,
    metrics.offset_mass,
    metrics.neighbour_mass,
    metrics.remainder_mass,
    metrics.argmax_hit,
    metrics.row_entropy,
]


@pytest.mark.parametrize("metric", PATTERN_METRICS, ids=lambda f: f.__name__)
def test_one_heads_pattern_gives_one_value_per_row(metric):
    pattern = torch.rand(3, 2, 6, 6).softmax(-1)
    both = metric(pattern)
    single = metric(pattern[:, 1])
    assert single.shape == both[:, 1].shape
    torch.testing.assert_close(single, both[:, 1])


def test_token_metrics_take_one_head_too():
    pattern = torch.rand(3, 2, 6, 6).softmax(-1)
    tokens = torch.randint(0, 3, (3, 6))
    torch.testing.assert_close(
        metrics.target_digit_mass(pattern[:, 0], tokens), metrics.target_digit_mass(pattern, tokens)[:, 0]
    )
    one, both = (
        metrics.sequence_statistics(pattern[:, 0], tokens),
        metrics.sequence_statistics(pattern, tokens),
    )
    for name, value in one.items():
        expected = both[name] if name.endswith("_keys") else both[name][:, 0]
        torch.testing.assert_close(value, expected, msg=name)


@pytest.mark.parametrize("metric", PATTERN_METRICS, ids=lambda f: f.__name__)
def test_scores_are_not_a_pattern(metric):
    scores = torch.randn(2, 1, 5, 5) * 4  # what hook_attn_scores holds: rows do not sum to one
    with pytest.raises(
        ValueError, match=r"pattern rows must sum to one .*\(hook_attn_scores\) are not a pattern"
    ):
        metric(scores)
    metric(scores.softmax(-1))  # the same numbers as a pattern are fine
    nan_rows = scores.softmax(-1)
    nan_rows[0, 0, 2] = float("nan")
    assert metric(nan_rows).shape[0] == 2  # undefined rows propagate as NaN, they are not an error


def test_numpy_patterns_are_refused_with_the_conversion():
    pattern = np.full((2, 1, 4, 4), 0.25)
    with pytest.raises(TypeError, match=r"got numpy.ndarray \(convert with torch.from_numpy\(pattern\)\)"):
        metrics.flip_mass(pattern)
    with pytest.raises(ValueError, match="query == key"):
        metrics.flip_mass(torch.full((2, 4, 5), 0.2))
