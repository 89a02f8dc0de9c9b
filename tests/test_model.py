"""The hooked encoder: hook points, TransformerLens compatibility, weight views, input checks."""

from __future__ import annotations

import math

import pytest
import torch
import transformer_lens.patching as patching
from transformer_lens import ActivationCache, FactoredMatrix

from models import EncoderConfig, HookedReverseEncoder
from tests.conftest import make_model

EXPECTED_BLOCK_HOOKS = [
    "hook_resid_pre",
    "attn.hook_q",
    "attn.hook_k",
    "attn.hook_v",
    "attn.hook_attn_scores",
    "attn.hook_pattern",
    "attn.hook_z",
    "attn.hook_result",
    "hook_attn_out",
    "hook_resid_mid",
    "ln1.hook_scale",
    "ln1.hook_normalized",
    "mlp.hook_pre",
    "mlp.hook_post",
    "hook_mlp_out",
    "ln2.hook_scale",
    "ln2.hook_normalized",
    "hook_resid_post",
]


def test_hook_names_are_the_documented_api(multi_model):
    names = set(multi_model.hook_dict)
    for layer in range(2):
        for hook in EXPECTED_BLOCK_HOOKS:
            assert f"blocks.{layer}.{hook}" in names
    for hook in (
        "hook_embed",
        "hook_pos_embed",
        "head.hook_pre",
        "head.ln.hook_normalized",
        "head.hook_post",
    ):
        assert hook in names


def test_a_name_not_in_the_cache_says_what_is(multi_model, tokens):
    _, cache = multi_model.run_with_cache(tokens)
    with pytest.raises(KeyError, match=r"did you mean 'blocks.0.attn.hook_pattern'"):
        cache["blocks.0.attn.hook_patern"]
    with pytest.raises(
        KeyError, match=r"'bad' is not in the cache \(\d+ hook points\); cached names look like"
    ):
        cache["bad"]
    assert (
        cache["pattern", 0].shape == cache["blocks.0.attn.hook_pattern"].shape
    )  # TL's shorthand still works


def test_cached_shapes(multi_model, tokens):
    _, cache = multi_model.run_with_cache(tokens)
    assert isinstance(cache, ActivationCache)
    b, n, h, dh, d = 8, 16, 4, 4, 16
    assert cache["blocks.1.attn.hook_q"].shape == (b, n, h, dh)
    assert cache["blocks.1.attn.hook_z"].shape == (b, n, h, dh)
    assert cache["blocks.0.attn.hook_pattern"].shape == (b, h, n, n)
    assert cache["blocks.0.attn.hook_attn_scores"].shape == (b, h, n, n)
    assert cache["blocks.0.hook_resid_post"].shape == (b, n, d)
    assert cache["hook_pos_embed"].shape == (b, n, d)
    torch.testing.assert_close(cache["blocks.0.attn.hook_pattern"].sum(-1), torch.ones(b, h, n))


def _manual_forward(model: HookedReverseEncoder, tokens: torch.Tensor) -> torch.Tensor:
    """The model's function written from the TL weight views (checks the views and the fused layout)."""
    cfg = model.cfg
    x = model.W_E[tokens] + model.embed.proj.bias + model.W_pos[: tokens.shape[1]]

    def ln(x, mod):
        x = x - x.mean(-1, keepdim=True)
        return x / (x.pow(2).mean(-1, keepdim=True) + cfg.layer_norm_eps).sqrt() * mod.w + mod.b

    for block in model.blocks:
        a = block.attn
        q = torch.einsum("bpd,hde->bphe", x, a.W_Q) + a.b_Q
        k = torch.einsum("bpd,hde->bphe", x, a.W_K) + a.b_K
        v = torch.einsum("bpd,hde->bphe", x, a.W_V) + a.b_V
        pattern = (torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(cfg.d_head)).softmax(-1)
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        attn_out = torch.einsum("bqhe,hed->bqd", z, a.W_O) + a.b_O
        x = ln(x + attn_out, block.ln1)
        x = ln(x + block.mlp.fc_out(torch.relu(block.mlp.fc_in(x))), block.ln2)
    h = model.head
    return h.fc_out(torch.relu(ln(h.fc_in(x), h.ln)))


@pytest.mark.parametrize("n_layers,n_heads", [(1, 1), (2, 2), (2, 4)])
def test_weight_views_reproduce_forward(n_layers, n_heads, tokens):
    model = make_model(seed=n_layers * 10 + n_heads, n_layers=n_layers, n_heads=n_heads)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), _manual_forward(model, tokens), atol=1e-5, rtol=1e-5)


def test_weight_view_shapes(multi_model):
    attn = multi_model.blocks[0].attn
    assert attn.W_Q.shape == attn.W_K.shape == attn.W_V.shape == (4, 16, 4)
    assert attn.W_O.shape == (4, 4, 16)
    assert attn.b_Q.shape == (4, 4) and attn.b_O.shape == (16,)
    assert multi_model.W_Q.shape == (2, 4, 16, 4)


def test_factored_matrix_matches_explicit_product(multi_model):
    attn = multi_model.blocks[1].attn
    fm = FactoredMatrix(attn.W_Q, attn.W_K.transpose(-1, -2))
    explicit = attn.W_Q @ attn.W_K.transpose(-1, -2)
    torch.testing.assert_close(fm.AB, explicit)


@pytest.mark.parametrize("normalization", ["post", "pre"])
def test_forward_without_autograd_gives_the_same_bits(normalization, tokens):
    # Without autograd LayerNorm runs in place on its own temporaries: every cached activation and the
    # logits must equal the autograd forward's bit for bit.
    model = make_model(seed=2, n_layers=2, n_heads=2, normalization=normalization)
    logits, cache = model.run_with_cache(tokens)
    with torch.inference_mode():
        fast_logits, fast_cache = model.run_with_cache(tokens)
    assert torch.equal(logits, fast_logits)
    assert all(torch.equal(cache[name], fast_cache[name]) for name in cache.keys())


def test_no_hooks_leaves_output_unchanged(multi_model, tokens):
    with torch.no_grad():
        plain = multi_model(tokens)
        identity = multi_model.run_with_hooks(tokens, fwd_hooks=[(lambda name: True, lambda act, hook: act)])
        cached, _ = multi_model.run_with_cache(tokens)
    torch.testing.assert_close(plain, identity, atol=0, rtol=0)
    torch.testing.assert_close(plain, cached, atol=0, rtol=0)


def test_every_hook_can_be_read_and_replaced(multi_model, tokens):
    _, cache = multi_model.run_with_cache(tokens)
    # attn.hook_result fires only with cfg.use_attn_result, hook_{q,k,v}_input only with
    # cfg.use_split_qkv_input.
    optional = ("attn.hook_result", "attn.hook_q_input", "attn.hook_k_input", "attn.hook_v_input")
    assert set(cache.keys()) == set(multi_model.hook_dict) - {
        f"blocks.{i}.{h}" for i in range(2) for h in optional
    }
    with torch.no_grad():
        base = multi_model(tokens)
        for name in cache.keys():
            seen = {}

            def replace(act, hook, seen=seen):
                seen["shape"] = act.shape
                return act * 0.5 + 0.1

            out = multi_model.run_with_hooks(tokens, fwd_hooks=[(name, replace)])
            assert seen["shape"] == cache[name].shape, name
            assert not torch.allclose(out, base), f"replacing {name} did not change the output"


def test_hooks_removed_after_exception(multi_model, tokens):
    def boom(act, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        multi_model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.attn.hook_pattern", boom)])
    assert all(not hp.fwd_hooks for hp in multi_model.hook_dict.values())
    multi_model(tokens)  # runs cleanly afterwards


def test_stack_head_results_plus_bias_equals_attn_out(multi_model, tokens):
    _, cache = multi_model.run_with_cache(tokens)
    for layer in range(2):
        heads = cache.stack_head_results(layer=layer + 1)[-4:]  # [head, batch, pos, d_model]
        expected = cache[f"blocks.{layer}.hook_attn_out"]
        torch.testing.assert_close(
            heads.sum(0) + multi_model.blocks[layer].attn.b_O, expected, atol=1e-5, rtol=1e-5
        )


def test_use_attn_result_gives_same_function(tokens):
    plain = make_model(seed=3, n_layers=2, n_heads=4)
    with_result = make_model(seed=3, n_layers=2, n_heads=4, use_attn_result=True)
    with torch.no_grad():
        torch.testing.assert_close(plain(tokens), with_result(tokens), atol=1e-5, rtol=1e-5)
    _, cache = with_result.run_with_cache(tokens)
    assert cache["blocks.1.attn.hook_result"].shape == (8, 16, 4, 16)


def test_patching_sweep_runs_with_expected_shape(multi_model, tokens):
    corrupted = tokens.roll(1, dims=-1)
    _, clean_cache = multi_model.run_with_cache(tokens)

    def metric(logits):
        return multi_model.loss_fn(logits, tokens)

    result = patching.get_act_patch_attn_head_out_by_pos(multi_model, corrupted, clean_cache, metric)
    assert result.shape == (2, 16, 4)
    assert torch.isfinite(result).all()
    all_pos = patching.get_act_patch_attn_head_out_all_pos(multi_model, corrupted, clean_cache, metric)
    assert all_pos.shape == (2, 4)


@pytest.mark.parametrize("positional_embedding", ["sinusoidal", "learned", "none"])
@pytest.mark.parametrize("normalization", ["post", "pre"])
def test_variants_run(positional_embedding, normalization, tokens):
    model = make_model(positional_embedding=positional_embedding, normalization=normalization)
    logits = model(tokens)
    assert logits.shape == (8, 16, 10)
    loss = model.loss_fn(logits, tokens)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_no_positional_embedding_is_permutation_equivariant(tokens):
    model = make_model(positional_embedding="none")
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens)[:, perm], model(tokens[:, perm]), atol=1e-5, rtol=1e-5)


def test_sinusoidal_table_values():
    model = make_model(d_model=8)
    pe = model.pos_embed.table
    assert pe.shape == (5000, 8)
    # TransformerLens' W_pos: the n_ctx rows of the training length, the table's first rows.
    assert model.W_pos.shape == model.pos_embed.W_pos.shape == (16, 8)
    assert torch.equal(model.W_pos, pe[:16])
    for p in (0, 1, 7):
        for k in range(4):
            freq = 10000 ** (-2 * k / 8)
            assert pe[p, 2 * k].item() == pytest.approx(math.sin(p * freq), abs=1e-6)
            assert pe[p, 2 * k + 1].item() == pytest.approx(math.cos(p * freq), abs=1e-6)


def test_loss_targets_the_reversed_sequence():
    tokens = torch.tensor([[1, 2, 3]])
    logits = torch.full((1, 3, 10), -1e4)
    logits[0, torch.arange(3), torch.tensor([3, 2, 1])] = 1e4
    assert HookedReverseEncoder.loss_fn(logits, tokens).item() == pytest.approx(0.0)


@pytest.mark.parametrize(
    "bad,message",
    [
        (torch.tensor([[0, 1, 10]]), "token id 10 is outside the vocabulary 0..9"),
        (torch.tensor([[0, -1, 2]]), "token id -1 is outside the vocabulary 0..9"),
        (torch.tensor([[0.0, 1.0]]), "integer dtype"),
        (torch.tensor([[True, False]]), "integer dtype"),
        ([[0, 1]], "torch.Tensor"),
        (torch.zeros(2, 3, 4, dtype=torch.long), r"shape \[batch, pos\]"),
        (torch.zeros(1, 0, dtype=torch.long), "empty"),
    ],
)
def test_bad_tokens_raise_clear_errors(tiny_model, bad, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(bad)


def test_too_long_for_positional_encoding():
    learned = make_model(positional_embedding="learned", n_ctx=16)
    with pytest.raises(
        ValueError, match="sequence length 17 exceeds what the learned positional encoding supports"
    ):
        learned(torch.zeros(1, 17, dtype=torch.long))
    sinusoidal = make_model(pe_max_len=32)
    with pytest.raises(ValueError, match="supports \\(32 positions\\)"):
        sinusoidal(torch.zeros(1, 33, dtype=torch.long))
    sinusoidal(torch.zeros(1, 32, dtype=torch.long))  # at the limit is fine
    make_model(positional_embedding="none")(torch.zeros(1, 6000, dtype=torch.long))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(d_model=30, n_heads=4), "not divisible"),
        (dict(n_layers=0), "n_layers must be a positive integer"),
        (dict(positional_embedding="rotary"), "positional_embedding must be one of"),
        (dict(normalization="mid"), "normalization must be one of"),
        (dict(dropout=1.0), "dropout must be in"),
        (dict(n_ctx=6000), r"n_ctx=6000 exceeds the sinusoidal table \(pe_max_len=5000\)"),
        # a corrupt config must not try to allocate terabytes: 10^12 table rows x 32
        (dict(pe_max_len=10**12, n_ctx=16), "exceed the 1,073,741,824 this toolkit builds"),
        (dict(d_model=2**16, d_mlp=2**16), "exceed the 1,073,741,824"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EncoderConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{}, dict(n_layers=2, n_heads=4, d_model=16), dict(positional_embedding="learned"),
     dict(positional_embedding="none", d_mlp=50, d_vocab=7), dict(normalization="pre", d_vocab=3)],
)  # fmt: skip
def test_num_elements_counts_what_building_the_model_allocates(kwargs):
    cfg = EncoderConfig(**kwargs)
    model = HookedReverseEncoder(cfg)
    allocated = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    assert cfg.num_elements() == allocated


def test_config_round_trip():
    cfg = EncoderConfig(n_heads=4, d_model=64, positional_embedding="learned")
    assert cfg.d_head == 16 and cfg.d_mlp == 128
    assert EncoderConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown fields"):
        EncoderConfig.from_dict({**cfg.to_dict(), "bogus": 1})
