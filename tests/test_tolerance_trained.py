"""Tolerance, readout and interchange together on a really trained (fast preset) model."""

from __future__ import annotations

import math

import numpy as np
import torch

from interp.interchange import batched_hits, make_sources, program_dependency, summarise_interchange
from interp.metrics import flip_mass
from interp.pattern_families import default_families
from interp.readout import READOUT_COLUMNS, readout_columns, readout_estimates
from interp.stats import bootstrap_ci
from interp.thresholds import family_threshold
from interp.tolerance import family_sweep
from interp.tolerance_verdict import LABELS, make_verdict
from models import load_model


def test_trained_model_end_to_end(trained_fast_run):
    model = load_model(trained_fast_run)
    tokens = torch.randint(0, 10, (200, 16), generator=torch.Generator().manual_seed(0))
    families = default_families(mixes=(0.0, 0.1, 0.2, 0.4, 0.7, 1.0))
    with torch.inference_mode():
        sweep = family_sweep(model, tokens.split(100), families, statistics={"r": readout_columns})
        logits, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    clean_acc = (logits.argmax(-1) == tokens.flip(-1)).double().mean(-1).numpy()
    clean_flip = flip_mass(cache["blocks.0.attn.hook_pattern"]).double().mean((1, 2)).numpy()
    thresholds = {}
    for fam in families:
        out = sweep[fam.name]
        own = fam.values.index(fam.identity)
        assert np.array_equal(out["accuracy"][:, own], clean_acc)  # the identity point is the clean run
        assert np.allclose(out["flip_mass"][:, own], clean_flip, atol=1e-6)
        for level in (0.99, 0.5):
            thresholds[fam.name, level] = family_threshold(
                fam, out["accuracy"], out["flip_mass"], level, resamples=100
            )
        high, low = thresholds[fam.name, 0.99], thresholds[fam.name, 0.5]
        assert high.status == "crossed", (fam.name, high.reason)
        assert low.flip_mass.mean < high.flip_mass.mean < high.own_flip_mass  # the model breaks later
        if fam.kind in ("neighbours", "single_key"):  # s = 1 leaves no weight on the flipped key
            assert low.status == "crossed", (fam.name, low.reason)
        assert high.flip_mass.ci_low <= high.flip_mass.mean <= high.flip_mass.ci_high
        readout = readout_estimates(out["r"], 16, resamples=50)
        assert readout["vote_agreement"][own].mean > 0.95 and readout["pearson"][own].mean > 0
        assert len(readout["argmax_agreement"]) == len(fam.values)
    acc = bootstrap_ci(clean_acc)[0]
    verdict = make_verdict(
        acc,
        bootstrap_ci(clean_flip)[0],
        [thresholds[f.name, 0.99] for f in families],
        [thresholds[f.name, 0.5] for f in families],
    )
    assert verdict.label in LABELS and verdict.label != "undetermined"
    assert f"{thresholds['uniform', 0.99].flip_mass.mean:.3f}" in verdict.text
    assert READOUT_COLUMNS[0] == "vote_agree"

    base = tokens[:64]
    with torch.inference_mode():
        hits = batched_hits(model, base, make_sources(base, 10, seed=1), "resid_pre", batch_size=32)
    summary = summarise_interchange(hits, "resid_pre", resamples=100)
    assert summary.iia.mean > 0.95 and summary.off_program_max.mean < 0.1
    program = program_dependency("resid_pre", 16).numpy()
    assert np.abs(summary.dependency - program).max() < 0.2
    assert not math.isnan(summary.iia.ci_low)
