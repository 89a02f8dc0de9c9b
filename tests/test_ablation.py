"""Ablation context managers and pattern interventions: hook hygiene and exact semantics."""

from __future__ import annotations

from functools import partial
from typing import get_args

import numpy as np
import pytest
import torch
from conftest import make_model

from interp import ablation, patterns
from interp.ablation import ablate_heads, ablate_positional_encoding, intervene, replace_pattern
from interp.metrics import flip_mass
from models import EncoderConfig, HookedReverseEncoder


def hooked_points(model) -> list[str]:
    return [name for name, point in model.hook_dict.items() if point.fwd_hooks or point._forward_hooks]


def pos_embed_under(model, tokens, **kwargs) -> torch.Tensor:
    """The encoding the model actually adds while the ablation is active."""
    with ablate_positional_encoding(model, **kwargs):
        _, cache = model.run_with_cache(tokens, names_filter="hook_pos_embed")
    return cache["hook_pos_embed"][0]


def z_under(model, tokens, layer, manager) -> torch.Tensor:
    with manager:
        _, cache = model.run_with_cache(tokens, names_filter=ablation.z_name(layer))
    return cache[ablation.z_name(layer)]


def clone_with(model, **overrides) -> HookedReverseEncoder:
    cfg = EncoderConfig.from_dict({**model.cfg.to_dict(), **overrides})
    other = HookedReverseEncoder(cfg)
    other.load_state_dict(model.state_dict())
    return other.eval()


def test_methods_are_literals():
    assert get_args(ablation.PEMethod) == ablation.PE_METHODS
    methods = {"zero", "mean", "shuffle", "shift", "mirror", "scale", "remove_band", "keep_band"}
    assert set(ablation.PE_METHODS) >= methods
    assert ablation.HEAD_METHODS == ("zero", "mean", "resample")


MANAGERS = [
    lambda m, t: ablate_positional_encoding(m, "zero"),
    lambda m, t: ablate_positional_encoding(m, "shift", shift=1),
    lambda m, t: ablate_heads(m, [(0, 1), (1, 2)], "zero"),
    lambda m, t: ablate_heads(m, [(1, 0)], "mean", reference=t),
    lambda m, t: ablate_heads(m, [(0, 3)], "resample", reference=t, seed=1),
    lambda m, t: replace_pattern(m, 1, 1, patterns.uniform),
]


@pytest.mark.parametrize("make", MANAGERS)
def test_hooks_are_gone_after_an_exception(multi_model, tokens, make):
    clean = multi_model(tokens)
    keep = multi_model.hook_dict["blocks.0.hook_resid_pre"].add_hook(lambda x, hook: x)  # someone else's
    with pytest.raises(RuntimeError, match="boom"):
        with make(multi_model, tokens):
            assert not torch.equal(multi_model(tokens), clean)  # the ablation was active
            raise RuntimeError("boom")
    assert hooked_points(multi_model) == ["blocks.0.hook_resid_pre"]
    assert multi_model.hook_dict["blocks.0.hook_resid_pre"].fwd_hooks == [keep]
    multi_model.reset_hooks()
    assert hooked_points(multi_model) == []
    assert torch.equal(multi_model(tokens), clean)


def test_hooks_are_removed_when_the_intervention_itself_fails(tiny_model, tokens):
    with pytest.raises(ValueError, match="returned"):
        with replace_pattern(tiny_model, 0, 0, lambda p: p[:, :3]):
            tiny_model(tokens)
    assert hooked_points(tiny_model) == []


def test_nested_managers_compose_and_unwind(multi_model, tokens):
    with ablate_positional_encoding(multi_model, "zero"), ablate_heads(multi_model, [(0, 0)]):
        assert len(hooked_points(multi_model)) == 2
    assert hooked_points(multi_model) == []


@pytest.mark.parametrize("fixture", ["tiny_model", "multi_model"])
def test_zero_pe_equals_the_model_without_positional_encoding(fixture, tokens, request):
    model = request.getfixturevalue(fixture)
    without = clone_with(model, positional_embedding="none")
    with ablate_positional_encoding(model, "zero"):
        ablated = model(tokens)
    assert torch.allclose(ablated, without(tokens), atol=1e-6)
    assert not torch.allclose(model(tokens), without(tokens), atol=1e-3)


def test_positional_methods_do_what_they_say(multi_model, tokens):
    n = tokens.shape[1]
    table = multi_model.pos_embed.table[: n + 1]
    pe = table[:n]
    assert torch.equal(pos_embed_under(multi_model, tokens, method="zero"), torch.zeros_like(pe))
    assert torch.allclose(pos_embed_under(multi_model, tokens, method="mean"), pe.mean(0).expand_as(pe))
    assert torch.equal(pos_embed_under(multi_model, tokens, method="mirror"), pe.flip(0))
    assert torch.allclose(pos_embed_under(multi_model, tokens, method="scale", alpha=0.5), 0.5 * pe)
    shuffled = pos_embed_under(multi_model, tokens, method="shuffle", seed=3)
    perm = ablation.shuffled_positions(n, 3)
    assert sorted(perm.tolist()) == list(range(n)) and perm.tolist() != list(range(n))
    assert torch.equal(shuffled, pe[perm])
    assert not torch.equal(ablation.shuffled_positions(n, 4), perm)
    # Shift +1: position i gets PE(i + 1); the last one reads the table's row N.
    assert torch.equal(pos_embed_under(multi_model, tokens, method="shift", shift=1), table[1 : n + 1])
    # Shift −1: position 0 gets PE(−1) = (sin(−ω), cos(−ω)) = (−sin ω, cos ω).
    down = pos_embed_under(multi_model, tokens, method="shift", shift=-1)
    assert torch.equal(down[1:], pe[:-1])
    expected = table[1].clone()
    expected[0::2] *= -1
    assert torch.allclose(down[0], expected, atol=1e-6)
    assert torch.equal(pos_embed_under(multi_model, tokens, method="shift", shift=0), pe)
    for band in (0, 3, 7):
        removed = pos_embed_under(multi_model, tokens, method="remove_band", band=band)
        keep = torch.ones(pe.shape[1], dtype=torch.bool)
        keep[2 * band : 2 * band + 2] = False
        assert torch.equal(removed[:, keep], pe[:, keep]) and (removed[:, ~keep] == 0).all()
        assert (pe[:, ~keep] != 0).any()
        kept = pos_embed_under(multi_model, tokens, method="keep_band", band=band)
        assert torch.equal(kept[:, ~keep], pe[:, ~keep]) and (kept[:, keep] == 0).all()
        assert torch.equal(kept + removed, pe)  # the two split the encoding exactly


def test_positional_rows_match_the_table_and_clamp_learned(tiny_model):
    positions = torch.tensor([0, 5, 15, 16, 4999])
    assert torch.equal(ablation.positional_rows(tiny_model, positions), tiny_model.pos_embed.table[positions])
    learned = make_model(positional_embedding="learned")
    rows = ablation.positional_rows(learned, torch.tensor([-1, 0, 15, 16]))
    assert torch.equal(rows, learned.W_pos[torch.tensor([0, 0, 15, 15])])


def test_unit_scale_and_identity_changes_nothing(multi_model, tokens):
    clean = multi_model(tokens)
    with ablate_positional_encoding(multi_model, "scale", alpha=1.0):
        assert torch.equal(multi_model(tokens), clean)
    with intervene(multi_model, [("hook_pos_embed", lambda x: x)]):
        assert torch.equal(multi_model(tokens), clean)


def test_zero_head_ablation_equals_zeroing_the_value_weights(multi_model, tokens):
    heads = [(0, 1), (1, 3)]
    reference = clone_with(multi_model)
    with torch.no_grad():
        for layer, head in heads:
            attn = reference.blocks[layer].attn
            d, dh = attn.cfg.d_model, attn.cfg.d_head
            rows = slice((3 * head + 2) * dh, (3 * head + 3) * dh)  # head h's v rows in qkv_proj
            assert rows.stop <= 3 * d
            attn.qkv_proj.weight[rows] = 0
            attn.qkv_proj.bias[rows] = 0
    with ablate_heads(multi_model, heads, "zero"):
        ablated = multi_model(tokens)
    assert torch.allclose(ablated, reference(tokens), atol=1e-6)


def test_mean_ablation_writes_the_reference_mean_and_nothing_else(multi_model, tokens):
    g = torch.Generator().manual_seed(5)
    reference = torch.randint(0, 10, (20, 16), generator=g)
    _, ref_cache = multi_model.run_with_cache(reference)
    _, clean = multi_model.run_with_cache(tokens)
    means = ablation.head_means(multi_model, [reference[:7], reference[7:]])  # streamed in two batches
    for layer in (0, 1):
        assert torch.allclose(means[layer], ref_cache[ablation.z_name(layer)].mean(0), atol=1e-6)
    z0 = z_under(multi_model, tokens, 0, ablate_heads(multi_model, [(0, 2)], "mean", reference=reference))
    assert torch.allclose(z0[:, :, 2], means[0][:, 2].expand(tokens.shape[0], -1, -1), atol=1e-6)
    others = [0, 1, 3]
    assert torch.equal(z0[:, :, others], clean[ablation.z_name(0)][:, :, others])
    # Precomputed means give the same run.
    with ablate_heads(multi_model, [(0, 2)], "mean", means=means):
        a = multi_model(tokens)
    with ablate_heads(multi_model, [(0, 2)], "mean", reference=reference):
        b = multi_model(tokens)
    assert torch.allclose(a, b, atol=1e-6)


def test_resample_copies_whole_sequences_from_the_reference(multi_model, tokens):
    g = torch.Generator().manual_seed(6)
    reference = torch.randint(0, 10, (2, 16), generator=g)
    _, ref_cache = multi_model.run_with_cache(reference)
    source = ref_cache[ablation.z_name(1)][:, :, 0]  # [2, pos, d_head]
    z1 = z_under(
        multi_model, tokens, 1, ablate_heads(multi_model, [(1, 0)], "resample", reference=reference, seed=9)
    )
    rows = torch.randint(0, 2, (tokens.shape[0],), generator=torch.Generator().manual_seed(9))
    assert set(rows.tolist()) == {0, 1}  # this seed uses both reference sequences
    assert torch.allclose(z1[:, :, 0], source[rows], atol=1e-6)
    again = z_under(
        multi_model, tokens, 1, ablate_heads(multi_model, [(1, 0)], "resample", reference=reference, seed=9)
    )
    assert torch.equal(z1, again)


def test_resampling_a_sequence_from_itself_changes_nothing(tiny_model, tokens):
    # One layer, one head: the head's output on the sequence itself is the clean output.
    one = tokens[:1]
    clean = tiny_model(one)
    with ablate_heads(tiny_model, [(0, 0)], "resample", reference=one):
        assert torch.allclose(tiny_model(one), clean, atol=1e-6)
    with ablate_heads(tiny_model, [(0, 0)], "mean", reference=one):  # the mean of one sequence is itself
        assert torch.allclose(tiny_model(one), clean, atol=1e-6)
    with ablate_heads(tiny_model, [(0, 0)], "resample", reference=tokens[1:2]):
        assert not torch.allclose(tiny_model(one), clean, atol=1e-3)


@pytest.mark.parametrize("layer,head", [(0, 0), (1, 3)])
def test_replacing_a_pattern_by_its_own_changes_nothing(multi_model, tokens, layer, head):
    clean = multi_model(tokens)
    with replace_pattern(multi_model, layer, head, lambda p: p.clone()):
        assert torch.equal(multi_model(tokens), clean)
    _, cache = multi_model.run_with_cache(tokens)
    own = cache[f"blocks.{layer}.attn.hook_pattern"][:, head]
    with replace_pattern(multi_model, layer, head, lambda p: own):
        assert torch.equal(multi_model(tokens), clean)


def test_flip_and_uniform_patterns_read_the_expected_values(multi_model, tokens):
    n = tokens.shape[1]
    _, cache = multi_model.run_with_cache(tokens)
    v = cache["blocks.0.attn.hook_v"][:, :, 1]  # [batch, key, d_head]
    for shift in (0, 1, -1):
        z = z_under(
            multi_model, tokens, 0, replace_pattern(multi_model, 0, 1, partial(patterns.flip, shift=shift))
        )
        keys = (torch.arange(n - 1, -1, -1) + shift).clamp(0, n - 1)
        assert torch.allclose(z[:, :, 1], v[:, keys], atol=1e-6)
    z = z_under(multi_model, tokens, 0, replace_pattern(multi_model, 0, 1, patterns.uniform))
    assert torch.allclose(z[:, :, 1], v.mean(1, keepdim=True).expand_as(v), atol=1e-6)


def test_permuted_and_tempered_patterns():
    pattern = torch.softmax(torch.randn(3, 6, 6, generator=torch.Generator().manual_seed(0)), -1)
    permuted = patterns.permute_rows(pattern, seed=2)
    assert torch.allclose(permuted.sort(-1).values, pattern.sort(-1).values)
    assert not torch.allclose(permuted, pattern)
    assert torch.equal(permuted, patterns.permute_rows(pattern, seed=2))
    assert not torch.equal(permuted, patterns.permute_rows(pattern, seed=3))
    assert torch.allclose(patterns.temperature(pattern, 1.0), pattern, atol=1e-6)
    sharp, flat = patterns.temperature(pattern, 0.25), patterns.temperature(pattern, 4.0)
    assert torch.allclose(sharp.sum(-1), torch.ones(3, 6)) and torch.allclose(flat.sum(-1), torch.ones(3, 6))
    assert (sharp.max(-1).values >= pattern.max(-1).values - 1e-6).all()
    assert (flat.max(-1).values <= pattern.max(-1).values + 1e-6).all()
    assert torch.equal(sharp.argmax(-1), pattern.argmax(-1))
    # softmax(S/τ) from the scores equals the tempered pattern.
    scores = torch.log(pattern) + 1.7
    assert torch.allclose(torch.softmax(scores / 0.5, -1), patterns.temperature(pattern, 0.5), atol=1e-6)


@pytest.mark.parametrize(
    "call,message",
    [
        (
            lambda m: ablate_positional_encoding(m, "blur"),
            r"unknown positional-encoding ablation 'blur'; methods: zero",
        ),
        (lambda m: ablate_positional_encoding(m, "scale"), r"needs alpha="),
        (lambda m: ablate_positional_encoding(m, "zero", alpha=2.0), r"alpha= is not used by the 'zero'"),
        (
            lambda m: ablate_positional_encoding(m, "remove_band", band=8),
            r"band 8 does not exist: .* bands 0..7",
        ),
        (lambda m: ablate_positional_encoding(m, "shift", shift=0.5), r"shift must be an integer"),
        (lambda m: ablate_heads(m, [(2, 0)]), r"layer 2 does not exist: the model has layers 0..1"),
        (lambda m: ablate_heads(m, [(0, 4)]), r"head 4 does not exist: each layer has heads 0..3"),
        (lambda m: ablate_heads(m, []), r"at least one"),
        (
            lambda m: ablate_heads(m, [(0, 0)], "noise"),
            r"unknown head ablation 'noise'; methods: zero, mean, resample",
        ),
        (lambda m: ablate_heads(m, [(0, 0)], "mean"), r"needs reference="),
        (lambda m: ablate_heads(m, [(0, 0)], "resample"), r"needs reference="),
        (lambda m: replace_pattern(m, 0, 9, patterns.uniform), r"head 9 does not exist"),
        (
            lambda m: intervene(m, [("blocks.7.hook_nothing", lambda x: x)]),
            r"unknown hook point 'blocks.7.hook_nothing' \(model.hook_dict lists them all\)",
        ),
        (
            lambda m: intervene(m, {"blocks.0.attn.hook_patern": lambda x: x}),
            r"unknown hook point 'blocks.0.attn.hook_patern'; did you mean 'blocks.0.attn.hook_pattern'\?",
        ),
    ],
)
def test_bad_inputs_raise_clear_errors(multi_model, call, message):
    with pytest.raises(ValueError, match=message):
        with call(multi_model):
            pass
    assert hooked_points(multi_model) == []


def test_a_model_without_positional_encoding_cannot_be_ablated():
    with pytest.raises(ValueError, match="no positional encoding"):
        with ablate_positional_encoding(make_model(positional_embedding="none"), "zero"):
            pass


def test_pattern_builders_reject_bad_shapes_and_parameters():
    with pytest.raises(ValueError, match="shape"):
        patterns.uniform(torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match="tau"):
        patterns.temperature(torch.ones(1, 2, 2) / 2, 0.0)


# --- TransformerLens-style hook functions, dicts, numpy and torch scalars --------------------------
def test_intervene_takes_transformer_lens_hook_functions_and_dicts(multi_model, tokens):
    name = "blocks.1.attn.hook_z"
    with intervene(multi_model, [(name, lambda z: z * 0.5)]):
        ours = multi_model(tokens)
    seen = []

    def tl_style(z, hook):
        seen.append(hook.name)
        return z * 0.5

    def in_place(z, hook):  # TransformerLens' convention: edit in place, return None
        z.mul_(0.5)

    for hooks in ([(name, tl_style)], {name: tl_style}, {name: in_place}, {name: lambda z, hook: z * 0.5}):
        with intervene(multi_model, hooks):
            torch.testing.assert_close(multi_model(tokens), ours, rtol=0, atol=0)
    assert seen == [name, name]
    assert not any(p.fwd_hooks for p in multi_model.hook_dict.values())


def test_numpy_and_torch_scalars_are_accepted(multi_model, tokens):
    with ablate_positional_encoding(multi_model, "scale", alpha=0.5):
        expected = multi_model(tokens)
    for alpha in (np.float32(0.5), np.float64(0.5), torch.tensor(0.5)):
        with ablate_positional_encoding(multi_model, "scale", alpha=alpha):
            torch.testing.assert_close(multi_model(tokens), expected)
    with ablate_heads(multi_model, [(0, 1)]):
        expected = multi_model(tokens)
    for heads in (
        [(np.int64(0), np.int64(1))],
        [(torch.tensor(0), 1)],
        [torch.tensor([0, 1])],
        np.array([[0, 1]]),
    ):
        with ablate_heads(multi_model, heads):
            torch.testing.assert_close(multi_model(tokens), expected)
    for layer in np.arange(2):  # a sweep over np.arange
        with replace_pattern(multi_model, layer, np.int64(0), patterns.uniform):
            multi_model(tokens)
    shifted = [
        ablation.positional_transform(multi_model, "shift", shift=s) for s in (np.int64(1), torch.tensor(1))
    ]
    assert all(callable(f) for f in shifted)
    with pytest.raises(ValueError, match="alpha must be a number, got True"):
        ablation.positional_transform(multi_model, "scale", alpha=True)
    with pytest.raises(ValueError, match="shift must be an integer, got 1.5"):
        ablation.positional_transform(multi_model, "shift", shift=1.5)


def test_neighbour_mix_and_pin_on_hand_built_patterns():
    n = 5
    flip = patterns.flip(torch.zeros(2, n, n))
    mixed = patterns.neighbour_mix(flip, 0.4)
    # query 0: flipped key 4, neighbours 2 and 3 exist (5 and 6 do not) -> 0.2 each; query 2: keys 0, 1, 3, 4
    assert torch.allclose(mixed[0, 0], torch.tensor([0.0, 0.0, 0.2, 0.2, 0.6]))
    assert torch.allclose(mixed[1, 2], torch.tensor([0.1, 0.1, 0.6, 0.1, 0.1]))
    assert torch.allclose(mixed.sum(-1), torch.ones(2, n))
    assert torch.equal(patterns.neighbour_mix(flip, 0.0), flip)
    assert torch.allclose(flip_mass(patterns.neighbour_mix(flip, 1.0)), torch.zeros(2, n))
    one = torch.ones(3, 1, 1)
    assert torch.equal(patterns.neighbour_mix(one, 0.5), one)  # N = 1: no neighbour, the row stays
    pinned = patterns.pin(flip, query=1, key=0)
    assert torch.equal(pinned[:, 1], torch.tensor([[1.0, 0, 0, 0, 0]] * 2))
    assert torch.equal(pinned[:, [0, 2, 3, 4]], flip[:, [0, 2, 3, 4]]) and torch.equal(
        flip[:, 1, 3], torch.ones(2)
    )
    with pytest.raises(ValueError, match="mixing weight s must lie in"):
        patterns.neighbour_mix(flip, 1.5)
    with pytest.raises(ValueError, match="key 5 does not exist: the pattern has positions 0..4"):
        patterns.pin(flip, query=0, key=5)
