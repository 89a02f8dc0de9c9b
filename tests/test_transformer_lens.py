"""TransformerLens compatibility, as a researcher uses it from a notebook: every patching sweep of the
installed TransformerLens, the cache's residual decompositions (working on pre-LN models, refused with
a reason on the tutorial's post-LN one), return types, circuits, hook-name checks."""

from __future__ import annotations

import inspect
import pydoc
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformer_lens.patching as patching

from models import HookedReverseEncoder
from models.encoder.cache import NO_UNEMBED
from tests.conftest import make_model

SWEEPS = sorted(name for name in dir(patching) if name.startswith("get_act_patch_"))
DIRECT_PATH = {name for name in SWEEPS if "direct_path" in name}
SHAPES = [(1, 1), (1, 2), (2, 1), (2, 2)]
ROOT = Path(__file__).resolve().parent.parent


def corrupted_pair(model: HookedReverseEncoder, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, 10, (3, model.cfg.n_ctx), generator=g)
    corrupted = clean.clone()
    corrupted[:, 3] = (clean[:, 3] + 1) % 10
    return clean, corrupted


def metric(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, logits.shape[1] - 1 - 3, 0].mean()  # the output that reads the corrupted input 3


def call_sweep(name: str, model: HookedReverseEncoder, clean: torch.Tensor, corrupted: torch.Tensor):
    fn = getattr(patching, name)
    _, clean_cache = model.run_with_cache(clean)
    params = inspect.signature(fn).parameters
    kwargs = dict(model=model, corrupted_tokens=corrupted, clean_cache=clean_cache)
    kwargs["patching_metric" if "patching_metric" in params else "metric"] = metric
    if "corrupted_cache" in params:
        kwargs["corrupted_cache"] = model.run_with_cache(corrupted)[1]
    if "src_layer" in params:
        kwargs.update(src_layer=0, src_head=0)
    if "verbose" in params:
        kwargs["verbose"] = False
    return fn(**kwargs)


LIGHT_IMPORT = """
import sys
import torch
import models.encoder.hooked
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"transformers", "datasets", "pandas"})
assert not heavy, heavy  # the encoder alone imports none of TransformerLens' Hugging Face side
import transformer_lens.patching
from transformer_lens import ActivationCache, FactoredMatrix, HookedRootModule, TransformerBridge, utilities
from models import HookedReverseEncoder
assert issubclass(HookedReverseEncoder, HookedRootModule) and isinstance(TransformerBridge, type)
config = models.encoder.config.EncoderConfig()
_, cache = HookedReverseEncoder(config).run_with_cache(torch.zeros(1, 16, dtype=int))
assert isinstance(cache, ActivationCache) and isinstance(FactoredMatrix, type)
assert utilities.get_dataset and "datasets" in sys.modules  # a name it lacked completed the package
print("ok")
"""


def test_the_encoder_imports_transformer_lens_without_its_hugging_face_side():
    # models.encoder.transformer_lens_parts defers transformer_lens' package __init__ (transformers, datasets:
    # ~2 s); whatever asks for more gets the whole package, with the same classes. A fresh process:
    # this one may have completed the package already.
    done = subprocess.run([sys.executable, "-c", LIGHT_IMPORT], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout == "ok\n", done.stderr


def test_the_installed_transformer_lens_has_the_sweeps_we_test():
    assert len(SWEEPS) >= 18 and DIRECT_PATH  # a renamed module would silently test nothing


@pytest.mark.parametrize("name", SWEEPS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}L{s[1]}H")
def test_every_patching_sweep_runs_on_the_tutorials_post_ln_model(name, shape, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    # Length 8 keeps the position × position sweeps short (their cost grows as N²).
    model = make_model(seed=shape[0] * 3 + shape[1], n_layers=shape[0], n_heads=shape[1], n_ctx=8)
    clean, corrupted = corrupted_pair(model)
    if name in DIRECT_PATH:
        # A head's output reaches later heads only through LayerNorm: no additive direct path.
        with pytest.raises(ValueError, match="needs a pre-LN model"):
            call_sweep(name, model, clean, corrupted)
        return
    out = call_sweep(name, model, clean, corrupted)
    assert torch.isfinite(torch.as_tensor(out)).all()


PRE_LN_CASES = [(name, (2, 2)) for name in SWEEPS] + [
    (name, shape) for name in sorted(DIRECT_PATH) for shape in SHAPES if shape != (2, 2)
]


@pytest.mark.parametrize("name,shape", PRE_LN_CASES, ids=[f"{s[0]}L{s[1]}H-{n}" for n, s in PRE_LN_CASES])
def test_every_patching_sweep_runs_on_pre_ln_models(name, shape, monkeypatch):
    """Every sweep on a 2-layer, 2-head pre-LN model; the direct-path ones (pre-LN only) on every shape."""
    monkeypatch.setenv("TQDM_DISABLE", "1")
    model = make_model(
        seed=shape[0] * 5 + shape[1], n_layers=shape[0], n_heads=shape[1], n_ctx=8, normalization="pre"
    )
    clean, corrupted = corrupted_pair(model)
    out = torch.as_tensor(call_sweep(name, model, clean, corrupted))
    assert torch.isfinite(out).all()
    assert not model.cfg.use_split_qkv_input  # the direct-path sweeps restore the switch


def test_a_sweep_equals_a_hand_written_patch(multi_model, monkeypatch):
    """get_act_patch_attn_head_v_all_pos: head h's values at every position taken from the clean run."""
    monkeypatch.setenv("TQDM_DISABLE", "1")
    clean, corrupted = corrupted_pair(multi_model, seed=4)
    swept = call_sweep("get_act_patch_attn_head_v_all_pos", multi_model, clean, corrupted)
    _, clean_cache = multi_model.run_with_cache(clean)
    expected = torch.zeros(2, 4)
    for layer in range(2):
        for head in range(4):
            name = f"blocks.{layer}.attn.hook_v"

            def patch(v, hook, head=head, name=name):
                v = v.clone()
                v[:, :, head] = clean_cache[name][:, :, head]
                return v

            expected[layer, head] = metric(multi_model.run_with_hooks(corrupted, fwd_hooks=[(name, patch)]))
    torch.testing.assert_close(swept, expected)


def test_per_head_inputs_compute_the_same_function():
    model = make_model(seed=8, n_layers=2, n_heads=4, normalization="pre")
    tokens = corrupted_pair(model)[0]
    plain = model(tokens)
    model.set_use_split_qkv_input(True)
    _, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(model(tokens), plain, atol=1e-5, rtol=1e-5)
    assert cache["blocks.1.attn.hook_k_input"].shape == (3, 16, 4, 16)
    with pytest.raises(ValueError, match="needs a pre-LN model"):
        make_model().set_use_split_qkv_input(True)


# --- the cache's decompositions -------------------------------------------------------------------
@pytest.fixture
def pre_ln():
    model = make_model(seed=9, n_layers=2, n_heads=2, normalization="pre")
    tokens = corrupted_pair(model)[0]
    return model, tokens, model.run_with_cache(tokens)[1]


def test_pre_ln_decompositions_sum_to_the_residual(pre_ln):
    model, _, cache = pre_ln
    for layer in range(3):
        target = cache[f"blocks.{layer}.hook_resid_pre"] if layer < 2 else cache["blocks.1.hook_resid_post"]
        stack, labels = cache.decompose_resid(layer, return_labels=True)
        torch.testing.assert_close(stack.sum(0), target, atol=1e-5, rtol=1e-5)
        assert labels[:2] == ["embed", "pos_embed"]
        for expand in (True, False):
            full = cache.get_full_resid_decomposition(layer, expand_neurons=expand)
            torch.testing.assert_close(full.sum(0), target, atol=1e-4, rtol=1e-4)
    heads = cache.stack_head_results(layer=1)
    torch.testing.assert_close(heads.sum(0) + model.blocks[0].attn.b_O, cache["blocks.0.hook_attn_out"])


def test_pre_ln_layer_norm_of_a_stack_is_the_cached_scale(pre_ln):
    model, _, cache = pre_ln
    stack = cache.decompose_resid(1)
    applied = cache.apply_ln_to_stack(stack, layer=1)
    ln = model.blocks[1].ln1
    # Σ of the scaled components, times w plus b, is exactly what LN1 of layer 1 outputs.
    torch.testing.assert_close(
        applied.sum(0) * ln.w + ln.b, cache["blocks.1.ln1.hook_normalized"], atol=1e-5, rtol=1e-5
    )
    # No LayerNorm sits between the last block and the head: the final stack is unchanged.
    torch.testing.assert_close(cache.apply_ln_to_stack(stack, layer=None), stack)
    accumulated, labels = cache.accumulated_resid(apply_ln=True, return_labels=True)
    assert labels == ["0_pre", "1_pre", "final_post"]
    torch.testing.assert_close(accumulated[-1], cache["blocks.1.hook_resid_post"])


def test_post_ln_decompositions_are_refused_with_the_reason(multi_model, tokens):
    _, cache = multi_model.run_with_cache(tokens)
    stack = torch.zeros(2, *cache["hook_embed"].shape)
    refused = [
        lambda: cache.decompose_resid(),
        lambda: cache.get_full_resid_decomposition(),
        lambda: cache.apply_ln_to_stack(stack, layer=1),
        lambda: cache.accumulated_resid(apply_ln=True),
        lambda: cache.stack_head_results(apply_ln=True),
        lambda: cache.stack_neuron_results(1, apply_ln=True),
    ]
    for call in refused:
        with pytest.raises(ValueError, match=r"post-LayerNorm .*frozen_ln_decomposition") as info:
            call()
        assert "\n" not in str(info.value)


def test_post_ln_accumulated_resid_ends_with_the_head_input(multi_model, tokens):
    _, cache = multi_model.run_with_cache(tokens)
    stack, labels = cache.accumulated_resid(return_labels=True, incl_mid=True)
    assert labels == ["0_pre", "0_mid", "1_pre", "1_mid", "final_post"]
    torch.testing.assert_close(stack[-1], cache["blocks.1.ln2.hook_normalized"], rtol=0, atol=0)
    torch.testing.assert_close(stack[2], cache["blocks.0.ln2.hook_normalized"], rtol=0, atol=0)


def test_there_is_no_unembedding_and_the_model_says_so(multi_model, tokens):
    _, cache = multi_model.run_with_cache(tokens)
    for name in ("W_U", "b_U", "unembed", "ln_final"):
        with pytest.raises(AttributeError, match="there is no W_U: the output head is an MLP"):
            getattr(multi_model, name)
        assert not hasattr(multi_model, name)
    with pytest.raises(ValueError, match="no W_U"):
        cache.logit_attrs(torch.zeros(1, 8, 16, 16), tokens=0)
    with pytest.raises(ValueError, match="no W_U"):
        cache.logit_lens()
    with pytest.raises(ValueError, match="no W_U"):
        multi_model.tokens_to_residual_directions(torch.tensor([1]))
    assert "MLP" in NO_UNEMBED


# --- forward, circuits, switches ------------------------------------------------------------------
def test_return_types(multi_model, tokens):
    logits = multi_model(tokens)
    loss = multi_model(tokens, return_type="loss")
    torch.testing.assert_close(loss, HookedReverseEncoder.loss_fn(logits, tokens))
    both = multi_model(tokens, return_type="both")
    torch.testing.assert_close(both[0], logits) and torch.testing.assert_close(both[1], loss)
    assert multi_model(tokens, return_type=None) is None
    per_token = multi_model(tokens, return_type="loss", loss_per_token=True)
    assert per_token.shape == tokens.shape and torch.isclose(per_token.mean(), loss)
    with pytest.raises(ValueError, match="return_type must be one of"):
        multi_model(tokens, return_type="probs")


def test_backward_caching_and_attribution(multi_model, tokens):
    """run_with_cache(incl_bwd=True) caches gradients; the linear attribution of a small patch of
    attn_out equals the real effect to first order."""
    multi_model.zero_grad()
    loss, cache = multi_model.run_with_cache(tokens, return_type="loss", incl_bwd=True)
    grad = cache["blocks.1.hook_attn_out_grad"]
    assert grad.shape == cache["blocks.1.hook_attn_out"].shape and grad.abs().sum() > 0
    direction = torch.randn_like(grad) * 1e-3
    with torch.no_grad():
        patched = multi_model.run_with_hooks(
            tokens, return_type="loss", fwd_hooks=[("blocks.1.hook_attn_out", lambda a, hook: a + direction)]
        )
    torch.testing.assert_close(patched - loss.detach(), (grad * direction).sum(), atol=1e-6, rtol=1e-2)


def test_qk_and_ov_circuits(multi_model):
    qk, ov = multi_model.QK, multi_model.OV
    assert qk.shape == ov.shape == (2, 4, 16, 16)
    block = multi_model.blocks[1].attn
    torch.testing.assert_close(qk.AB[1, 2], block.W_Q[2] @ block.W_K[2].T)
    torch.testing.assert_close(
        ov.AB[0, 3], multi_model.blocks[0].attn.W_V[3] @ multi_model.blocks[0].attn.W_O[3]
    )
    assert multi_model.W_in.shape == (2, 16, 32) and multi_model.W_out.shape == (2, 32, 16)


def test_set_use_attn_result(multi_model, tokens):
    _, cache = multi_model.run_with_cache(tokens)
    assert "blocks.0.attn.hook_result" not in cache.keys()
    multi_model.set_use_attn_result(True)
    logits, cache = multi_model.run_with_cache(tokens)
    result = cache["blocks.0.attn.hook_result"]
    assert result.shape == (8, 16, 4, 16)
    torch.testing.assert_close(
        result.sum(2) + multi_model.blocks[0].attn.b_O, cache["blocks.0.hook_attn_out"]
    )
    multi_model.set_use_attn_result(False)
    torch.testing.assert_close(multi_model(tokens), logits, atol=1e-5, rtol=1e-5)


def test_w_pos_has_the_training_length_and_the_table_every_row():
    for pe, rows in (("sinusoidal", 5000), ("learned", 16), ("none", 0)):
        model = make_model(positional_embedding=pe)
        assert model.W_pos.shape == (16, 16), pe
        assert model.pos_embed.table.shape == (rows, 16), pe
    assert make_model(positional_embedding="none").W_pos.abs().sum() == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda m, t: m.run_with_cache(t, names_filter=["blocks.0.attn.hook_patern"]),
        lambda m, t: m.run_with_cache(t, names_filter="blocks.0.attn.hook_patern"),
        lambda m, t: m.run_with_hooks(t, fwd_hooks=[("blocks.0.attn.hook_patern", lambda a, hook: a)]),
        lambda m, t: m.add_hook("blocks.0.attn.hook_patern", lambda a, hook: a),
    ],
)
def test_hook_name_typos_get_a_suggestion(multi_model, tokens, call):
    with pytest.raises(
        ValueError,
        match=r"unknown hook point 'blocks.0.attn.hook_patern'; did you mean 'blocks.0.attn.hook_pattern'\?",
    ):
        call(multi_model, tokens)
    assert not any(p.fwd_hooks for p in multi_model.hook_dict.values())


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_any_integer_dtype_is_a_token(multi_model, tokens, dtype):
    torch.testing.assert_close(multi_model(tokens.to(dtype)), multi_model(tokens), rtol=0, atol=0)


def test_help_documents_our_forward():
    text = pydoc.render_doc(HookedReverseEncoder.forward, renderer=pydoc.plaintext)
    assert "return_type" in text and "reversed sequence" in text
    assert "Define the computation performed at every call" not in text
