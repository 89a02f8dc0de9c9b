"""Pattern families on hand-built patterns whose flip mass and weights are known exactly."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_model

from interp import metrics, patterns
from interp.pattern_families import (
    FAMILY_KINDS,
    PatternFamily,
    apply_family,
    default_families,
    family_points,
    neighbour_target,
    single_keys,
)

N = 16


def random_rows(batch: int = 3, n: int = N, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n, n, generator=g, dtype=torch.float64).mul(2).softmax(-1)


def flip_of(p: torch.Tensor) -> torch.Tensor:
    """Flip mass per row, [..., batch, query] from [..., batch, query, key]."""
    n = p.shape[-1]
    return p[..., torch.arange(n), metrics.flipped_keys(n)]


def family(kind: str, values=(0.0, 0.3, 1.0), offset=None) -> PatternFamily:
    return PatternFamily(kind, values, offset=offset)


@pytest.mark.parametrize("kind", ["neighbours", "uniform", "single_key"])
def test_mixing_families_change_flip_mass_by_their_closed_form(kind):
    a = random_rows()
    fam = family(kind, offset=1 if kind == "single_key" else None)
    out = apply_family(a, fam)
    s = torch.tensor(fam.values, dtype=torch.float64).view(-1, 1, 1)
    expected = (1 - s) * flip_of(a) + (s / N if kind == "uniform" else 0)
    assert torch.allclose(flip_of(out), expected, atol=1e-12)
    assert torch.allclose(out.sum(-1), torch.ones_like(out.sum(-1)), atol=1e-12)
    assert (out >= 0).all()
    assert torch.equal(out[0], a)  # s = 0 is the model's own pattern, bit for bit


def test_temperature_is_softmax_of_the_scores_over_tau():
    model = make_model()
    tokens = torch.randint(0, 10, (4, N), generator=torch.Generator().manual_seed(1))
    _, cache = model.run_with_cache(tokens)
    scores = cache["blocks.0.attn.hook_attn_scores"][:, 0].double()
    own = cache["blocks.0.attn.hook_pattern"][:, 0].double()
    fam = PatternFamily("temperature", (0.25, 0.5, 1.0, 2.0, 8.0))
    out = apply_family(own, fam)
    for k, tau in enumerate(fam.values):
        assert torch.allclose(out[k], torch.softmax(scores / tau, -1), atol=1e-6), tau
    assert torch.allclose(out[2], own, atol=1e-12)
    # the existing single-τ intervention is the same map
    assert torch.allclose(out[3].float(), patterns.temperature(own.float(), 2.0), atol=1e-6)
    # sharper rows put more weight on their maximum, blurrier rows less
    peak = out.max(-1).values.mean((1, 2))
    assert (peak.diff() < 0).all()


def test_an_exactly_one_hot_flip_gives_flip_mass_one_and_stays_one_hot_under_temperature():
    one_hot = patterns.flip(torch.zeros(2, N, N))
    assert torch.equal(metrics.flip_mass(one_hot.unsqueeze(1)), torch.ones(2, 1, N))
    out = apply_family(one_hot, PatternFamily("temperature", (0.1, 1.0, 10.0)))
    assert torch.equal(out, one_hot.expand_as(out))  # zeros stay zero (log 0 = −inf) for every τ


def test_neighbour_target_is_uniform_over_existing_neighbours():
    b = neighbour_target(N)
    assert torch.allclose(b.sum(-1), torch.ones(N))
    # query 0: flipped key 15, neighbours 13 and 14 exist; query 8: key 7, neighbours 5, 6, 8, 9.
    assert b[0, 13] == b[0, 14] == 0.5 and b[0].count_nonzero() == 2
    assert all(b[8, k] == 0.25 for k in (5, 6, 8, 9)) and b[8].count_nonzero() == 4
    assert (b[torch.arange(N), metrics.flipped_keys(N)] == 0).all()
    out = apply_family(patterns.flip(torch.zeros(1, N, N)), family("neighbours", (1.0,)))
    assert torch.equal(out[-1, 0], b)


def test_single_key_moves_weight_to_one_key_reflected_at_the_edge():
    assert single_keys(N, 1).tolist() == [14] + [16 - i for i in range(1, N)]
    assert single_keys(N, -2).tolist() == [13 - i for i in range(14)] + [3, 2]  # queries 14, 15 reflect
    one_hot = patterns.flip(torch.zeros(1, N, N))
    out = apply_family(one_hot, family("single_key", (0.25,), offset=1))[-1, 0]
    assert out[0, 15] == 0.75 and out[0, 14] == 0.25  # key 16 does not exist: the weight goes to 14
    assert out[5, 10] == 0.75 and out[5, 11] == 0.25
    assert out.count_nonzero() == 2 * N


def test_family_points_uses_each_points_own_pattern():
    a, b = random_rows(seed=1), random_rows(seed=2)
    fam = family("uniform", (0.2, 0.6))
    out = family_points(torch.stack([a, b]), fam, torch.tensor([0.2, 0.6]))
    assert torch.allclose(out[0], 0.8 * a + 0.2 / N) and torch.allclose(out[1], 0.4 * b + 0.6 / N)
    with pytest.raises(ValueError, match="point or 1"):
        family_points(torch.stack([a, b, a]), fam, torch.tensor([0.2, 0.6]))


def test_identity_point_is_always_in_the_grid_and_names():
    assert PatternFamily("temperature", (2.0, 4.0)).values == (1.0, 2.0, 4.0)
    assert PatternFamily("uniform", (0.5,)).values == (0.0, 0.5)
    names = [f.name for f in default_families()]
    assert names == ["temperature", "neighbours", "uniform", "single_key+1"]
    assert PatternFamily("single_key", (0.1,), offset=-2).name == "single_key-2"
    temp = default_families()[0]
    assert temp.parameter == "tau" and temp.identity == 1.0 and 1.0 in temp.values
    assert min(temp.values) < 1 < max(temp.values)  # sharper and blurrier
    assert set(FAMILY_KINDS) == {"temperature", "neighbours", "uniform", "single_key"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kind="sharpen", values=(1.0,)), "unknown pattern family"),
        (dict(kind="temperature", values=(-1.0, 2.0)), "positive"),
        (dict(kind="uniform", values=(0.5, 1.5)), r"\[0, 1\]"),
        (dict(kind="uniform", values=(0.5, 0.2)), "increasing"),
        (dict(kind="uniform", values=(0.5, math.nan)), "finite"),
        (dict(kind="single_key", values=(0.5,)), "non-zero integer offset"),
        (dict(kind="single_key", values=(0.5,), offset=0), "non-zero integer offset"),
        (dict(kind="uniform", values=(0.5,), offset=1), "only used by the single_key"),
    ],
)
def test_bad_families_raise_one_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PatternFamily(**kwargs)


def test_bad_patterns_and_offsets_raise():
    with pytest.raises(ValueError, match=r"\[batch, query, key\]"):
        apply_family(torch.ones(2, 3, 4), family("uniform"))
    with pytest.raises(ValueError, match="must not contain 0"):
        neighbour_target(N, (0, 1))
    with pytest.raises(ValueError, match="no neighbour key"):
        neighbour_target(2, (5,))
    with pytest.raises(ValueError, match="either side"):
        single_keys(4, 10)
    with pytest.raises(TypeError, match="torch.from_numpy"):
        apply_family(random_rows().numpy(), family("uniform"))
    with pytest.raises(ValueError, match="sum to one"):
        apply_family(random_rows() * 2, family("uniform"))  # scores passed as a pattern


def test_families_take_numpy_and_torch_scalars():
    import numpy as np

    a = PatternFamily("single_key", (np.float32(0.5),), offset=np.int64(-1))
    b = PatternFamily("single_key", (0.5,), offset=torch.tensor(-1))
    assert a == PatternFamily("single_key", (0.5,), offset=-1) == b
    assert isinstance(a.offset, int) and a.name == "single_key-1"
