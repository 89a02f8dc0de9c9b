"""The no-position ceiling: exact sum = brute-force enumeration = Monte Carlo, and hand cases."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
import torch
from conftest import make_model

from interp import baselines
from interp.ablation import ablate_positional_encoding


@pytest.mark.parametrize(
    "n,c", [(1, 3), (2, 2), (3, 2), (3, 3), (4, 3), (5, 3), (6, 3), (5, 4), (6, 4), (7, 2), (4, 1)]
)
def test_exact_ceiling_equals_brute_force(n, c):
    exact = baselines.no_position_ceiling(n, c)
    brute = baselines.no_position_ceiling_brute_force(n, c)
    assert exact.accuracy == brute.accuracy  # exact fractions
    assert exact.loss == pytest.approx(brute.loss, abs=1e-12)


def test_hand_cases():
    # N = 2: the other token is the multiset minus one's own token, so the reversal is always known.
    assert baselines.no_position_ceiling(2, 10).accuracy == 1
    # N = 3, C = 2 (odd N: best guess = the majority token): counts (3,0) w.p. 2/8 → 3 hits,
    # (2,1) w.p. 6/8 → 2 hits; accuracy = (2/8·3 + 6/8·2)/3 = 3/4.
    assert baselines.no_position_ceiling(3, 2).accuracy == Fraction(3, 4)
    # One category: everything is right and the loss is 0.
    assert baselines.no_position_ceiling(5, 1).accuracy == 1 and baselines.no_position_ceiling(5, 1).loss == 0
    # Chance and the loss floor's upper end.
    bound = baselines.no_position_ceiling(16, 10)
    assert baselines.chance_accuracy(10) < bound.accuracy < 1
    assert 0 < bound.loss < math.log(10)


def test_optimal_predictor_reaches_the_ceiling_on_every_sequence_of_a_small_case():
    n, c = 4, 3
    tokens = torch.tensor(list(itertools.product(range(c), repeat=n)))
    hits = baselines.no_position_predictions(tokens, c) == tokens.flip(-1)
    assert Fraction(int(hits.sum()), hits.numel()) == baselines.no_position_ceiling(n, c).accuracy


def test_optimal_predictor_is_position_blind():
    tokens = torch.randint(0, 10, (50, 16), generator=torch.Generator().manual_seed(0))
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    pred = baselines.no_position_predictions(tokens, 10)
    assert torch.equal(baselines.no_position_predictions(tokens[:, perm], 10), pred[:, perm])
    same = tokens.unsqueeze(2) == tokens.unsqueeze(1)
    assert ((pred.unsqueeze(2) == pred.unsqueeze(1)) | ~same).all()


@pytest.mark.parametrize("n,c", [(6, 4), (16, 10)])
def test_monte_carlo_interval_covers_the_exact_value(n, c):
    est = baselines.no_position_ceiling_monte_carlo(n, c, num_sequences=20_000, seed=0, resamples=500)
    assert est.ci_low <= float(baselines.no_position_ceiling(n, c).accuracy) <= est.ci_high
    assert est.ci_high - est.ci_low < 0.02
    assert est == baselines.no_position_ceiling_monte_carlo(n, c, num_sequences=20_000, seed=0, resamples=500)


def test_a_model_without_positions_never_beats_the_ceiling_on_an_enumerable_case():
    # Every sequence of N = 4 over C = 3: a random encoder with its encoding zeroed is position-blind,
    # so its accuracy over all 81 sequences is at most the ceiling.
    model = make_model(d_vocab=3, n_ctx=4)
    tokens = torch.tensor(list(itertools.product(range(3), repeat=4)))
    ceiling = baselines.no_position_ceiling(4, 3).accuracy
    for seed in range(5):
        model = make_model(seed=seed, d_vocab=3, n_ctx=4)
        with torch.no_grad(), ablate_positional_encoding(model, "zero"):
            hits = model(tokens).argmax(-1) == tokens.flip(-1)
        assert Fraction(int(hits.sum()), hits.numel()) <= ceiling


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: baselines.no_position_ceiling(0, 10), "seq_len must be a positive integer"),
        (lambda: baselines.no_position_ceiling(4, 2.5), "num_categories must be an integer, got 2.5"),
        (lambda: baselines.no_position_ceiling_brute_force(16, 10), "too large"),
        (lambda: baselines.no_position_ceiling_monte_carlo(4, 3, num_sequences=0), "num_sequences"),
        (lambda: baselines.no_position_predictions(torch.zeros(4, dtype=torch.long), 3), r"\[batch, pos\]"),
    ],
)
def test_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()
