"""interp.residual: the frozen-LayerNorm decomposition sums exactly to the residual, equals
TransformerLens' decomposition on pre-LN models, and its removal error is measured, not assumed."""

from __future__ import annotations

import pytest
import torch

from interp.residual import decomposition_hooks, frozen_ln_decomposition, removal_error, target_name
from tests.conftest import make_model


@pytest.mark.parametrize("normalization", ["post", "pre"])
@pytest.mark.parametrize("layer", [0, 1, None])
def test_components_sum_exactly_to_the_residual(normalization, layer, tokens):
    model = make_model(seed=6, n_layers=2, n_heads=2, normalization=normalization)
    _, cache = model.run_with_cache(tokens)
    stack, labels = frozen_ln_decomposition(model, cache, layer)
    torch.testing.assert_close(stack.sum(0), cache[target_name(model, layer)], atol=1e-5, rtol=1e-5)
    assert len(labels) == stack.shape[0] and labels[:2] == ["embed", "pos_embed"]
    if normalization == "post" and layer is None:
        assert labels[2:6] == ["0_attn_out", "0_ln1_bias", "0_mlp_out", "0_ln2_bias"]
        assert target_name(model, layer) == "blocks.1.ln2.hook_normalized"


def test_on_pre_ln_it_is_transformer_lens_decomposition(tokens):
    model = make_model(seed=7, n_layers=2, n_heads=2, normalization="pre")
    _, cache = model.run_with_cache(tokens)
    ours, our_labels = frozen_ln_decomposition(model, cache)
    theirs, their_labels = cache.decompose_resid(return_labels=True)
    assert our_labels == their_labels
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_a_one_component_stream_is_carried_through_the_layer_norm_exactly():
    """Embedding only (no positions, attention and MLP silenced): the frozen decomposition must give
    LN(embed) split as (embed − mean)/s·w plus the bias, which is LayerNorm by definition."""
    model = make_model(seed=1, positional_embedding="none")
    with torch.no_grad():
        block = model.blocks[0]
        for linear in (block.attn.o_proj, block.mlp.fc_out):
            linear.weight.zero_()
            linear.bias.zero_()
    tokens = torch.randint(0, 10, (4, 16))
    _, cache = model.run_with_cache(tokens)
    stack, labels = frozen_ln_decomposition(model, cache)
    embed = cache["hook_embed"]
    ln1, ln2 = block.ln1, block.ln2
    once = (embed - embed.mean(-1, keepdim=True)) / cache["blocks.0.ln1.hook_scale"] * ln1.w
    twice = (once - once.mean(-1, keepdim=True)) / cache["blocks.0.ln2.hook_scale"] * ln2.w
    torch.testing.assert_close(stack[labels.index("embed")], twice)
    torch.testing.assert_close(stack[labels.index("pos_embed")], torch.zeros_like(twice))
    torch.testing.assert_close(stack[labels.index("0_ln2_bias")], ln2.b.expand_as(twice))


def test_removal_error_is_zero_without_layer_norm_on_the_stream_and_measured_with_it(tokens):
    pre = removal_error(make_model(seed=2, n_layers=2, normalization="pre"), tokens)
    assert set(pre) == {"embed", "pos_embed", "0_attn_out", "0_mlp_out", "1_attn_out", "1_mlp_out"}
    for label, error in pre.items():
        assert error.shape == (8,) and error.max() < 1e-5, label
    post = removal_error(make_model(seed=2, n_layers=2), tokens)
    assert all(error.min() > 1e-3 for error in post.values())  # the scales move: a real, measured error


def test_the_cache_must_hold_the_hooks(tiny_model, tokens):
    _, cache = tiny_model.run_with_cache(tokens, names_filter=["hook_embed"])
    with pytest.raises(ValueError, match="the cache lacks"):
        frozen_ln_decomposition(tiny_model, cache)
    _, cache = tiny_model.run_with_cache(tokens, names_filter=decomposition_hooks(tiny_model))
    frozen_ln_decomposition(tiny_model, cache)
    with pytest.raises(ValueError, match="layer must be at most 1"):
        frozen_ln_decomposition(tiny_model, cache, layer=2)
