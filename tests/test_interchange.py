"""Interchange interventions on machines that are (or are exactly not) the reverse program."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from vote_machine import vote_machine

from interp import patterns
from interp.ablation import replace_pattern
from interp.interchange import (
    SITES,
    VARIABLES,
    aligned_outputs,
    batched_hits,
    counterfactual_outputs,
    head_iia,
    interchange_hits,
    make_sources,
    pair_batches,
    patched_predictions,
    program_dependency,
    selector_head,
    site_hook,
    streamed_summary,
    summarise_interchange,
)

N = 16


def pairs(batch: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    base = torch.randint(0, 10, (batch, N), generator=torch.Generator().manual_seed(seed))
    return base, make_sources(base, 10, seed=seed + 1)


def test_program_counterfactuals_and_sources():
    base = torch.tensor([[1, 2, 3, 4]])
    source = torch.tensor([[5, 6, 7, 8]])
    out = counterfactual_outputs(base, source, "z")  # output i takes the source's t_{N−1−i}
    assert out[0].tolist() == [[8, 3, 2, 1], [4, 7, 2, 1], [4, 3, 6, 1], [4, 3, 2, 5]]
    out = counterfactual_outputs(base, source, "resid_pre")  # input j changes output N−1−j to s_j
    assert out[0].tolist() == [[4, 3, 2, 5], [4, 3, 6, 1], [4, 7, 2, 1], [8, 3, 2, 1]]
    assert aligned_outputs("resid_pre", 4).tolist() == [3, 2, 1, 0]
    assert torch.equal(program_dependency("resid_mid", 3), torch.eye(3, dtype=torch.float64))
    b, s = pairs(500)
    assert (b != s).all() and torch.equal(s, make_sources(b, 10, seed=1))
    assert site_hook("resid_pre", 1) == "blocks.1.hook_resid_pre"


@pytest.mark.parametrize("site", SITES)
def test_a_machine_that_is_the_reverse_program_has_iia_one_and_the_programs_dependencies(site):
    model = vote_machine()  # with the perfect flip pattern: output i = t_{N−1−i} by construction
    base, source = pairs()
    with replace_pattern(model, 0, 0, patterns.flip):
        hits = interchange_hits(model, base, source, site)
    summary = summarise_interchange(hits, site, resamples=50)
    assert summary.iia.mean == summary.iia_whole.mean == 1.0
    # 100% of P pairs: the exact sequence-level bound (α/2)^(1/P), never the zero-width [1, 1]
    assert summary.iia.ci_low == pytest.approx(0.025 ** (1 / summary.num_pairs)) and summary.iia.ci_high == 1
    # a max of 0/P over the N² − N off-program cells: the Bonferroni bound 1 − (α/2/(N² − N))^(1/P)
    cells = N * N - N
    assert summary.off_program_max.ci_high == pytest.approx(1 - (0.025 / cells) ** (1 / summary.num_pairs))
    assert np.array_equal(summary.dependency, program_dependency(site, N).numpy())
    assert summary.on_program.mean == 1.0 and summary.off_program_max.mean == 0.0
    assert len(summary.iia_by_position) == N


def test_a_machine_reading_the_next_key_fails_interchange_exactly_where_predicted():
    """Pattern one-hot on key clamp(N − i): output k reads input 16 − k (k ≥ 1) and 15 (k = 0).
    Base all 0s, source all 1s: patching input j changes the outputs that read j, and the aligned
    output N − 1 − j reads j only for j = 15."""
    model = vote_machine()
    base, source = torch.zeros(3, N, dtype=torch.long), torch.ones(3, N, dtype=torch.long)
    with replace_pattern(model, 0, 0, partial(patterns.flip, shift=1)):
        hits = interchange_hits(model, base, source, "resid_pre")
    summary = summarise_interchange(hits, "resid_pre", resamples=20)
    assert summary.iia.mean == pytest.approx(1 / N)
    assert summary.iia_whole.mean == 0.0  # j = 15 also changes output 1
    expected = np.zeros((N, N))
    for k in range(N):
        expected[min(N - k, N - 1), k] = 1.0
    assert np.array_equal(summary.dependency, expected)
    assert summary.off_program_max.mean == 1.0 and summary.on_program.mean == pytest.approx(1 / N)


def test_head_iia_names_the_head_that_carries_the_aggregate():
    model = vote_machine(n_heads=2)  # head 0 votes, head 1 writes nothing
    base, source = pairs(16)

    def both_flip(p):
        return patterns.flip(p)

    with replace_pattern(model, 0, 0, both_flip), replace_pattern(model, 0, 1, both_flip):
        per_head = head_iia(model, base, source, resamples=30, batch_size=5)
        all_heads = summarise_interchange(batched_hits(model, base, source, "z"), "z")
    assert per_head[0, 0].iia.mean == 1.0 and per_head[0, 1].iia.mean == 0.0
    assert per_head[0, 1].on_program.mean == 0.0  # patching the silent head changes nothing
    assert all_heads.iia.mean == 1.0
    assert selector_head(per_head) == ((0, 0), True)
    tie = {(0, 0): per_head[0, 0], (0, 1): per_head[0, 0]}
    assert selector_head(tie)[1] is False
    assert selector_head({(0, 1): per_head[0, 1]}) == ((0, 1), False)  # alone, but carries nothing
    assert selector_head({(0, 0): per_head[0, 0]}) == ((0, 0), True)


def test_patching_a_source_equal_to_the_base_changes_nothing_in_a_multi_layer_model(multi_model):
    base, _ = pairs(6)
    clean = multi_model(base).argmax(-1)
    for site in SITES:
        for layer in (0, 1):
            got = patched_predictions(multi_model, base, base, site, layer, head=2 if site == "z" else None)
            assert torch.equal(got, clean.unsqueeze(1).expand(6, N, N)), (site, layer)
    assert not any(p.fwd_hooks for p in multi_model.hook_dict.values())


def test_patching_one_position_changes_only_that_tile(tiny_model):
    base, source = pairs(4)
    one = patched_predictions(tiny_model, base, source, "resid_mid", positions=[5])
    every = patched_predictions(tiny_model, base, source, "resid_mid")
    assert one.shape == (4, 1, N) and torch.equal(one[:, 0], every[:, 5])
    # resid_mid at 5 feeds only position 5 afterwards (no attention after it in one layer)
    clean = tiny_model(base).argmax(-1)
    assert torch.equal(
        torch.cat([one[:, 0, :5], one[:, 0, 6:]], 1), torch.cat([clean[:, :5], clean[:, 6:]], 1)
    )


def test_interchange_rejects_bad_input(tiny_model):
    base, source = pairs(2)
    with pytest.raises(ValueError, match="unknown site"):
        site_hook("mlp", 0)
    with pytest.raises(ValueError, match="'z' site only"):
        patched_predictions(tiny_model, base, source, "resid_pre", head=0)
    with pytest.raises(ValueError, match="positions"):
        patched_predictions(tiny_model, base, source, "z", positions=[16])
    with pytest.raises(ValueError, match="equal"):
        patched_predictions(tiny_model, base, source[:, :8], "z")
    with pytest.raises(ValueError, match="layer 1 does not exist"):
        patched_predictions(tiny_model, base, source, "z", layer=1)
    with pytest.raises(ValueError, match="batch_size"):
        batched_hits(tiny_model, base, source, "z", batch_size=0)
    with pytest.raises(ValueError, match="no head summaries"):
        selector_head({})


def test_pairs_stream_in_groups_as_the_whole_base_would_be_split(tiny_model):
    base = torch.randint(0, 10, (23, N), generator=torch.Generator().manual_seed(3))
    whole = make_sources(base, 10, seed=4)
    uneven = [base[:5], base[5:6], base[6:20], base[20:]]  # base batches of any sizes
    groups = list(pair_batches(uneven, 10, seed=4, pairs=4))
    assert [len(b) for b, _ in groups] == [4, 4, 4, 4, 4, 3]
    assert torch.equal(torch.cat([b for b, _ in groups]), base)
    assert torch.equal(torch.cat([s for _, s in groups]), whole)
    # streamed: the same summary, bit for bit, as all hits at once
    hits = batched_hits(tiny_model, base, whole, "z", batch_size=4)
    want = summarise_interchange(hits, "z", resamples=40, seed=[0, 1]).to_dict()
    got = streamed_summary(
        tiny_model, lambda: pair_batches(uneven, 10, 4, 4), 23, "z", resamples=40, seed=[0, 1]
    ).to_dict()
    assert got == want
    with pytest.raises(ValueError, match="expected 24 pairs, got 23"):
        streamed_summary(tiny_model, lambda: pair_batches(uneven, 10, 4, 4), 24, "z", resamples=4)


def test_the_variable_a_site_carries_is_searched():
    """With the flip pattern, resid_mid at query i carries the aggregate V_i = t_{N−1−i} and resid_pre at
    key j the token t_j. Scored against the other variable a site shows IIA near 0 (only where the
    source happens to repeat a digit); the search scores both on the same predictions and finds each
    site's own variable with IIA 1."""
    model = vote_machine()
    base, source = pairs()
    batches = lambda: [(base, source)]  # noqa: E731
    with replace_pattern(model, 0, 0, patterns.flip):
        mid = streamed_summary(model, batches, len(base), "resid_mid", resamples=50, variables=VARIABLES)
        wrong = streamed_summary(
            model, batches, len(base), "resid_pre", resamples=50, variables=["aggregate"]
        )
        pre = streamed_summary(model, batches, len(base), "resid_pre", resamples=50, variables=VARIABLES)
    assert (mid.variable, mid.iia.mean) == ("aggregate", 1.0) and mid.other_variables["token"].mean < 0.2
    assert wrong.variable == "aggregate" and wrong.iia.mean < 0.2
    assert (pre.variable, pre.iia.mean) == ("token", 1.0)
    assert pre.other_variables["aggregate"].mean == wrong.iia.mean
    assert np.array_equal(pre.dependency, program_dependency("resid_pre", N, "token").numpy())
    assert np.array_equal(wrong.dependency, pre.dependency)  # the same patched predictions
