"""Every analysis that bootstraps keeps memory independent of the number of sequences (issue 16, item
4): beyond ``interp.stats.MAX_UNITS`` sequences it resamples blocks of sequences. Lowering MAX_UNITS
puts a small run on that path: every point estimate stays the mean over all sequences (to rounding),
every CI stays a CI around it, and the settings name the resampling unit."""

from __future__ import annotations

import math

import pytest
from conftest import make_model

from analyses import flip_alignment, head_ablation, interchange, length_generalisation, pe_ablation, tolerance
from interp import baselines, stats

N = 48
KW = dict(num_sequences=N, seed=1, bootstrap_resamples=50, batch_size=20)
PE = dict(shuffle_seeds=2, alphas=(0.5,), monte_carlo_sequences=200)
HA = dict(permutations=2, permutation_sequences=30, reference_sequences=20, patch_sequences=8, taus=(0.5,))
TOL = dict(
    temperatures=(0.5, 1.0, 4.0), mixes=(0.0, 0.5, 1.0), adversarial_sequences=6, beam_width=2, beam_steps=1
)
RUNS = {
    "flip_alignment": lambda m: flip_alignment.run(m, **KW),
    "pe_ablation": lambda m: pe_ablation.run(m, **KW, **PE),
    "head_ablation": lambda m: head_ablation.run(m, **KW, **HA, progress=False),
    "length_generalisation": lambda m: length_generalisation.run(m, **KW, lengths=(12, 16)),
    "interchange": lambda m: interchange.run(m, **KW, sites=("z", "resid_pre")),
    "tolerance": lambda m: tolerance.run(m, **KW, **TOL),
}
UNIT = {"interchange": "pair"}  # what one resampling unit is called, if not a sequence


def estimates(doc, path=""):
    """Every {"mean", "ci_low", "ci_high"} in a metrics.json document, by path."""
    if isinstance(doc, dict):
        if {"mean", "ci_low", "ci_high"} <= set(doc) and not isinstance(doc["mean"], list):
            yield path, doc
        for key, value in doc.items():
            yield from estimates(value, f"{path}/{key}")
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from estimates(value, f"{path}[{i}]")


@pytest.fixture(scope="module")
def model():
    return make_model(seed=2, n_layers=1, n_heads=2)


@pytest.mark.parametrize("name", list(RUNS))
def test_blocks_of_sequences_keep_every_mean_and_give_intervals_around_it(name, model, monkeypatch):
    per_sequence = RUNS[name](model).to_dict()
    monkeypatch.setattr(stats, "MAX_UNITS", 8)  # 48 sequences in 8 blocks of 6
    blocks = RUNS[name](model).to_dict()
    unit = UNIT.get(name, "sequence")
    assert per_sequence["settings"]["resampling_unit"] == unit
    assert blocks["settings"]["resampling_unit"] == f"block of 6 consecutive {unit}s"
    want, got = dict(estimates(per_sequence)), dict(estimates(blocks))
    assert want.keys() == got.keys() and len(want) > 5
    wider = 0
    for path, w in want.items():
        g = got[path]
        if w["mean"] is None:
            assert g["mean"] is None, path
            continue
        assert g["mean"] == pytest.approx(w["mean"], rel=1e-9, abs=1e-12), path
        if g["ci_low"] is not None:
            assert g["ci_low"] <= g["mean"] + 1e-12 and g["mean"] <= g["ci_high"] + 1e-12, path
            wider += (g["ci_high"] - g["ci_low"]) >= (w["ci_high"] - w["ci_low"])
    assert wider > 0  # the intervals were drawn anew, not copied


def test_the_monte_carlo_ceiling_uses_blocks_beyond_max_units(monkeypatch):
    exact = baselines.no_position_ceiling(6, 3).accuracy
    monkeypatch.setattr(stats, "MAX_UNITS", 100)
    est = baselines.no_position_ceiling_monte_carlo(6, 3, num_sequences=20_000, resamples=300)
    assert est.ci_low <= float(exact) <= est.ci_high and est.ci_high - est.ci_low < 0.02
    assert not math.isnan(est.mean)
