"""The family sweep: exact accuracies on the vote machine, and equality with one intervention at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_model
from vote_machine import vote_machine

from interp import patterns, stats
from interp.ablation import replace_pattern
from interp.pattern_families import PatternFamily, family_points
from interp.thresholds import family_threshold
from interp.tolerance import family_sweep, sweep_batch, sweep_units

N = 16
GRID = (0.0, 0.25, 0.5, 0.6, 0.9, 0.95)

# A: fifteen 0s and one 1 at position 4 (read by query 11). B: 0..9 then 0..5 (digits 0–5 twice).
SEQ_A = [0, 0, 0, 0, 1] + [0] * 11
SEQ_B = list(range(10)) + list(range(6))


def expected_uniform_accuracy(s: float, seq: list[int]) -> float:
    """Vote machine with the one-hot flip mixed with uniform: query i votes (1 − s)[c = t_f] + s n_c / N
    for digit c, so it is right iff (1 − s) + s n_t / N > s n_c / N for every other digit c."""
    counts = np.bincount(seq, minlength=10)
    right = [(1 - s) + s * counts[t] / N > max(s * counts[c] / N for c in range(10) if c != t) for t in seq]
    return float(np.mean(right))


def test_uniform_mix_on_the_vote_machine_gives_the_closed_form_accuracy():
    model = vote_machine()
    tokens = torch.tensor([SEQ_A, SEQ_B])
    fam = PatternFamily("uniform", GRID)
    with replace_pattern(model, 0, 0, patterns.flip):  # the machine's own pattern: the perfect flip
        out = family_sweep(model, [tokens], [fam])["uniform"]
    for k, s in enumerate(GRID):
        assert out["accuracy"][0, k] == expected_uniform_accuracy(s, SEQ_A)
        assert out["accuracy"][1, k] == expected_uniform_accuracy(s, SEQ_B)
    # A breaks between s = 0.5 and 0.6 (at s = 8/15), B between 0.9 and 0.95 (at 16/17) on 4 queries
    assert out["accuracy"][0].tolist() == [1, 1, 1, 15 / 16, 15 / 16, 15 / 16]
    assert out["accuracy"][1].tolist() == [1, 1, 1, 1, 1, 12 / 16]
    assert out["sequence_accuracy"].tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]]
    s = np.array(GRID)
    assert np.allclose(out["flip_mass"], (1 - s) + s / N, atol=1e-7)


def test_threshold_of_the_vote_machine_is_the_interpolated_crossing():
    model = vote_machine()
    fam = PatternFamily("uniform", GRID)
    with replace_pattern(model, 0, 0, patterns.flip):
        out = family_sweep(model, [torch.tensor([SEQ_A] * 3)], [fam])["uniform"]
    t = family_threshold(fam, out["accuracy"], out["flip_mass"], 0.99, resamples=50)
    # accuracy 1 at s = 0.5 and 15/16 at 0.6: t = 0.01 / (1/16) = 0.16 of the way
    m05, m06 = 0.5 + 0.5 / N, 0.4 + 0.6 / N
    assert t.status == "crossed" and t.bracket == (0.5, 0.6)
    assert t.flip_mass.mean == pytest.approx(m05 + 0.16 * (m06 - m05), abs=1e-6)
    assert t.parameter.mean == pytest.approx(0.516, abs=1e-9)
    assert t.margin.mean == pytest.approx(1 - t.flip_mass.mean, abs=1e-6)
    # identical sequences: every resample is the same curve, so the CI is the grid bracket (the curve
    # between s = 0.5 and 0.6 was never observed)
    assert (t.flip_mass.ci_low, t.flip_mass.ci_high) == pytest.approx((m06, m05), abs=1e-6)


def _one_at_a_time(model, tokens, fam, layer, head):
    """Reference: one forward per point with the family's map as a plain replace_pattern."""
    rows = []
    for v in fam.values:

        def fn(p, v=v):
            return family_points(p.unsqueeze(0), fam, torch.tensor([v]))[0]

        with replace_pattern(model, layer, head, fn):
            rows.append(model(tokens))
    return torch.stack(rows)  # [point, batch, pos, vocab]


@pytest.mark.parametrize("layer, head", [(0, 0), (1, 2)])
def test_tiled_sweep_equals_one_intervention_at_a_time(layer, head, tokens):
    model = make_model(seed=1, n_layers=2, n_heads=4) if layer else make_model()
    fams = [PatternFamily("temperature", (0.5, 2.0)), PatternFamily("single_key", (0.3, 1.0), offset=-1)]

    def first_logits(p, t, logits):
        return logits[:, :, 0]

    stats = {"logits0": first_logits}
    got = sweep_batch(model, tokens, fams, layer, head, statistics=stats)
    small = sweep_batch(model, tokens, fams, layer, head, statistics=stats, max_rows=1)
    for name in got:
        assert torch.equal(got[name], small[name]), name  # chunking changes nothing
    want = torch.cat([_one_at_a_time(model, tokens, f, layer, head) for f in fams])
    assert torch.allclose(got["logits0"], want[:, :, 0].transpose(0, 1).double(), atol=1e-5)
    correct = (want.argmax(-1) == tokens.flip(-1)).double()
    assert torch.equal(got["accuracy"], correct.mean(-1).T)
    assert got["flip_mass"].shape == (len(tokens), 6)  # each family gained its identity point


def test_family_sweep_streams_batches_and_restores_training_mode(tiny_model, tokens):
    fams = [PatternFamily("uniform", (0.5,)), PatternFamily("neighbours", (0.5,))]
    tiny_model.train()
    whole = family_sweep(tiny_model, [tokens], fams)
    parts = family_sweep(tiny_model, tokens.split(3), fams)
    assert tiny_model.training
    assert set(whole) == {"uniform", "neighbours"}
    for name in whole:
        for stat in ("accuracy", "sequence_accuracy", "flip_mass"):
            assert whole[name][stat].shape == (8, 2)
            assert np.allclose(whole[name][stat], parts[name][stat])
    assert not any(p.fwd_hooks for p in tiny_model.hook_dict.values())


def test_sweep_rejects_bad_input(tiny_model, tokens):
    fam = PatternFamily("uniform", (0.5,))
    with pytest.raises(ValueError, match="distinct names"):
        sweep_batch(tiny_model, tokens, [fam, fam])
    with pytest.raises(ValueError, match="at least one pattern family"):
        sweep_batch(tiny_model, tokens, [])
    with pytest.raises(ValueError, match="built-in names"):
        sweep_batch(tiny_model, tokens, [fam], statistics={"accuracy": lambda p, t, lg: p})
    with pytest.raises(ValueError, match="head 3 does not exist"):
        sweep_batch(tiny_model, tokens, [fam], head=3)
    with pytest.raises(ValueError, match="max_rows"):
        sweep_batch(tiny_model, tokens, [fam], max_rows=0)
    with pytest.raises(ValueError, match="at least one batch"):
        family_sweep(tiny_model, [], [fam])


def test_sweep_units_sums_the_sweep_per_resampling_unit(tiny_model, tokens, monkeypatch):
    fams = [PatternFamily("uniform", (0.5,)), PatternFamily("neighbours", (0.5,))]
    rows = family_sweep(tiny_model, tokens.split(3), fams)
    each = sweep_units(tiny_model, tokens.split(3), 8, fams)  # 8 sequences: a unit each
    assert each.per_sequence
    for stat in ("accuracy", "sequence_accuracy", "flip_mass"):
        want = np.hstack([rows[f.name][stat] for f in fams])
        assert np.array_equal(each.sums[stat].numpy(), want)
    monkeypatch.setattr(stats, "MAX_UNITS", 3)  # units of 3, 3 and 2 sequences
    blocks = sweep_units(tiny_model, tokens.split(5), 8, fams, reduce=lambda v: {"acc": v["accuracy"]})
    assert blocks.counts.tolist() == [3.0, 3.0, 2.0] and set(blocks.sums) == {"acc"}
    want = np.hstack([rows[f.name]["accuracy"] for f in fams])
    sums = np.stack([want[:3].sum(0), want[3:6].sum(0), want[6:].sum(0)])
    assert np.allclose(blocks.sums["acc"].numpy(), sums, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="expected 9 sequences, got 8"):
        sweep_units(tiny_model, [tokens], 9, fams)
