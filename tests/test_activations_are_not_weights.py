"""An activation is never an alias of a weight: editing any hook's activation (or a cached tensor) in
place leaves every parameter and buffer bit-identical, in every configuration of the encoder."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import make_model

CONFIGS = [
    dict(positional_embedding=pe, normalization=norm)
    for pe in ("sinusoidal", "learned", "none")
    for norm in ("post", "pre")
]


def snapshot(model) -> dict[str, torch.Tensor]:
    state = {f"param {k}": v.detach().clone() for k, v in model.named_parameters()}
    state.update({f"buffer {k}": v.detach().clone() for k, v in model.named_buffers()})
    return state


def assert_unchanged(model, before: dict[str, torch.Tensor]) -> None:
    after = snapshot(model)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"editing activations changed {changed}"


def configured(config: dict) -> torch.nn.Module:
    model = make_model(seed=3, n_layers=2, n_heads=2, **config)
    model.set_use_attn_result(True)
    if config["normalization"] == "pre":
        model.set_use_split_qkv_input(True)  # the per-head input copies are activations too
    return model


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(c.values()))
def test_editing_every_hook_in_place_leaves_the_weights_alone(config, tokens):
    model = configured(config)
    before = snapshot(model)
    fired = set()

    def edit(act, hook):
        fired.add(hook.name)
        act[0] += 1.0  # one sequence's activation, in place
        act[:, 0] = 0.0  # and a slice across the whole batch (raised on a broadcast view before)
        return act

    with torch.no_grad():
        for name in model.hook_dict:
            model.run_with_hooks(tokens, fwd_hooks=[(name, edit)])
    split = {f"blocks.{i}.attn.hook_{x}_input" for i in range(2) for x in "qkv"}
    expected = set(model.hook_dict) - (split if config["normalization"] == "post" else set())
    assert fired == expected  # every hook point fired and was edited
    assert_unchanged(model, before)
    # And the model still computes what it computed before (nothing was left behind).
    fresh = configured(config)
    torch.testing.assert_close(model(tokens), fresh(tokens), rtol=0, atol=0)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(c.values()))
def test_editing_cached_tensors_leaves_the_weights_alone(config, tokens):
    model = configured(config)
    before = snapshot(model)
    _, cache = model.run_with_cache(tokens)
    for name in cache.keys():
        cache[name][0] += 1.0
        cache[name][:] = 0.0
    assert_unchanged(model, before)


def test_the_reported_case_one_sequence_of_the_positional_encoding(tokens):
    """The issue's reproduction: zeroing position 3 of one sequence's encoding used to zero W_pos[3]."""
    model = make_model(seed=0)
    clean = model(tokens)

    def h(pe, hook):
        pe[0, 3] = 0
        return pe

    model.run_with_hooks(tokens, fwd_hooks=[("hook_pos_embed", h)])
    assert model.pos_embed.table[3].abs().sum() > 0
    torch.testing.assert_close(model(tokens), clean, rtol=0, atol=0)
