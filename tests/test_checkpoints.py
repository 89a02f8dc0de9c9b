"""Checkpoint I/O: every format loads into a model that computes the tutorial's function, checked
against literal re-statements of the tutorial's forward (written here, independent of models/);
every bad input gets one clear error naming the file and the problem."""

from __future__ import annotations

import hashlib
import math
import os
import pickle
from collections import OrderedDict

import msgpack
import numpy as np
import pytest
import torch

from models import CheckpointError, EncoderConfig, load_model, save_model, sha256_file
from models.storage.checkpoints import to_flax_tree, to_tutorial_state_dict, write_flax_msgpack
from models.storage.flax_msgpack import FlaxMsgpackError, unpack_tree
from tests.conftest import make_model

C, D = 10, 16  # vocabulary and model width of the tiny test models


# -------------------------------------------------------------------------------------------------
# Random tutorial-format weights: every entry distinct, LayerNorms far from (1, 0).
def random_tutorial_state_dict(n_layers: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def linear(name: str, d_out: int, d_in: int) -> dict[str, torch.Tensor]:
        return {
            f"{name}.weight": torch.randn(d_out, d_in, generator=g) * 1.5 / math.sqrt(d_in),
            f"{name}.bias": 0.3 * torch.randn(d_out, generator=g),
        }

    def norm(name: str) -> dict[str, torch.Tensor]:
        return {
            f"{name}.weight": 1 + 0.4 * torch.randn(D, generator=g),
            f"{name}.bias": 0.4 * torch.randn(D, generator=g),
        }

    sd = linear("input_net.1", D, C)
    for layer in range(n_layers):
        p = f"transformer.layers.{layer}."
        sd |= linear(p + "self_attn.qkv_proj", 3 * D, D) | linear(p + "self_attn.o_proj", D, D)
        sd |= linear(p + "linear_net.0", 2 * D, D) | linear(p + "linear_net.3", D, 2 * D)
        sd |= norm(p + "norm1") | norm(p + "norm2")
    sd |= linear("output_net.0", D, D) | norm("output_net.1") | linear("output_net.4", C, D)
    return sd


def tutorial_checkpoint(sd: dict[str, torch.Tensor], n_heads: int, n_layers: int) -> dict:
    """What the tutorial's Lightning Trainer writes (plain values only, as Lightning stores them)."""
    return {
        "epoch": 9,
        "global_step": 3910,
        "pytorch-lightning_version": "1.8.6",
        "state_dict": OrderedDict(sd),
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 5e-4, "params": [0, 1]}]}],
        "lr_schedulers": [{"warmup": 50, "max_num_iters": 3910, "base_lrs": [5e-4], "last_epoch": 3910}],
        "hparams_name": "kwargs",
        "hyper_parameters": {
            "input_dim": C,
            "model_dim": D,
            "num_classes": C,
            "num_heads": n_heads,
            "num_layers": n_layers,
            "lr": 5e-4,
            "warmup": 50,
            "max_iters": 3910,
            "dropout": 0.0,
            "input_dropout": 0.0,
        },
    }


def positional_encoding(n: int, d: int) -> np.ndarray:
    """PE[p, 2k] = sin(p / 10000^(2k/d)), PE[p, 2k+1] = cos(p / 10000^(2k/d))."""
    pe = np.zeros((n, d))
    for p in range(n):
        for k in range(d // 2):
            angle = p / 10000 ** (2 * k / d)
            pe[p, 2 * k], pe[p, 2 * k + 1] = math.sin(angle), math.cos(angle)
    return pe


def reference_torch(sd, tokens, n_heads: int, eps: float = 1e-5, wrong_split: bool = False) -> torch.Tensor:
    """The tutorial's PyTorch TransformerPredictor.forward, restated in float64 functional torch."""
    sd = {k: v.double() for k, v in sd.items()}
    B, N = tokens.shape

    def linear(x, name):
        return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]

    def layer_norm(x, name):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return (x - mean) / torch.sqrt(var + eps) * sd[f"{name}.weight"] + sd[f"{name}.bias"]

    x = linear(torch.nn.functional.one_hot(tokens, C).double(), "input_net.1")
    x = x + torch.from_numpy(positional_encoding(N, D))
    layer = 0
    while f"transformer.layers.{layer}.self_attn.qkv_proj.weight" in sd:
        p = f"transformer.layers.{layer}."
        qkv = linear(x, p + "self_attn.qkv_proj")  # [B, N, 3d]
        dh = D // n_heads
        if wrong_split:  # q, k, v as the first, second, third thirds of all 3d outputs: NOT the tutorial
            q, k, v = (t.reshape(B, N, n_heads, dh).permute(0, 2, 1, 3) for t in qkv.chunk(3, dim=-1))
        else:
            qkv = qkv.reshape(B, N, n_heads, 3 * dh).permute(0, 2, 1, 3)
            q, k, v = qkv.chunk(3, dim=-1)
        attention = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dh), dim=-1)
        values = (attention @ v).permute(0, 2, 1, 3).reshape(B, N, D)
        x = layer_norm(x + linear(values, p + "self_attn.o_proj"), p + "norm1")
        mlp = linear(torch.relu(linear(x, p + "linear_net.0")), p + "linear_net.3")
        x = layer_norm(x + mlp, p + "norm2")
        layer += 1
    x = torch.relu(layer_norm(linear(x, "output_net.0"), "output_net.1"))
    return linear(x, "output_net.4")


def random_flax_tree(n_layers: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)

    def dense(d_in, d_out):
        kernel = rng.standard_normal((d_in, d_out)) * 1.5 / math.sqrt(d_in)
        return {
            "kernel": kernel.astype(np.float32),
            "bias": (0.3 * rng.standard_normal(d_out)).astype(np.float32),
        }

    def norm():
        return {
            "scale": (1 + 0.4 * rng.standard_normal(D)).astype(np.float32),
            "bias": (0.4 * rng.standard_normal(D)).astype(np.float32),
        }

    layers = {
        f"layers_{layer}": {
            "self_attn": {"qkv_proj": dense(D, 3 * D), "o_proj": dense(D, D)},
            "linear_0": dense(D, 2 * D),
            "linear_3": dense(2 * D, D),
            "norm1": norm(),
            "norm2": norm(),
        }
        for layer in range(n_layers)
    }
    return {
        "input_layer": dense(C, D),
        "transformer": layers,
        "output_net_0": dense(D, D),
        "output_net_1": norm(),
        "output_net_4": dense(D, C),
    }


def reference_flax(tree, tokens: np.ndarray, n_heads: int, eps: float = 1e-6) -> np.ndarray:
    """The tutorial's Flax TransformerPredictor.__call__ (train=False), restated in float64 numpy."""
    B, N = tokens.shape

    def dense(x, p):
        return x @ p["kernel"].astype(np.float64) + p["bias"]

    def layer_norm(x, p):  # flax.linen.LayerNorm: var = E[x²] − E[x]²
        mean = x.mean(-1, keepdims=True)
        var = (x**2).mean(-1, keepdims=True) - mean**2
        return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]

    x = dense(np.eye(C)[tokens], tree["input_layer"]) + positional_encoding(N, D)
    for layer in range(len(tree["transformer"])):
        p = tree["transformer"][f"layers_{layer}"]
        qkv = dense(x, p["self_attn"]["qkv_proj"]).reshape(B, N, n_heads, -1).transpose(0, 2, 1, 3)
        q, k, v = np.array_split(qkv, 3, axis=-1)
        logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])
        attention = np.exp(logits - logits.max(-1, keepdims=True))
        attention /= attention.sum(-1, keepdims=True)
        values = (attention @ v).transpose(0, 2, 1, 3).reshape(B, N, D)
        x = layer_norm(x + dense(values, p["self_attn"]["o_proj"]), p["norm1"])
        x = layer_norm(x + dense(np.maximum(dense(x, p["linear_0"]), 0), p["linear_3"]), p["norm2"])
    x = np.maximum(layer_norm(dense(x, tree["output_net_0"]), tree["output_net_1"]), 0)
    return dense(x, tree["output_net_4"])


def flax_ext(obj):
    """flax.serialization's msgpack encoding of leaves, restated (ext 1 array, 3 scalar, 2 complex)."""
    if isinstance(obj, np.ndarray):
        code = 3 if obj.ndim == 0 else 1
        return msgpack.ExtType(
            code, msgpack.packb((obj.shape, obj.dtype.name, obj.tobytes()), use_bin_type=True)
        )
    if isinstance(obj, complex):
        return msgpack.ExtType(2, msgpack.packb((obj.real, obj.imag)))
    raise TypeError(obj)


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(0, C, (6, 16), generator=torch.Generator().manual_seed(3))


def logits_of(model, tokens) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens)


def assert_error(path, *fragments, **load_kwargs) -> str:
    with pytest.raises(CheckpointError) as info:
        load_model(path, **load_kwargs)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# -------------------------------------------------------------------------------------------------
# Ground truth: the loaded model computes the tutorial's function.
@pytest.mark.parametrize("n_layers", [1, 2])
@pytest.mark.parametrize("n_heads", [1, 2, 4])
def test_tutorial_lightning_checkpoint_matches_literal_forward(tmp_path, tokens, n_layers, n_heads):
    sd = random_tutorial_state_dict(n_layers, seed=10 * n_layers + n_heads)
    path = tmp_path / "ReverseTask.ckpt"
    torch.save(tutorial_checkpoint(sd, n_heads, n_layers), path)
    model = load_model(path)
    assert (model.cfg.n_layers, model.cfg.n_heads, model.cfg.layer_norm_eps) == (n_layers, n_heads, 1e-5)
    assert not model.training
    expected = reference_torch(sd, tokens, n_heads)
    torch.testing.assert_close(logits_of(model, tokens).double(), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("n_layers", [1, 2])
@pytest.mark.parametrize("n_heads", [1, 2, 4])
def test_flax_msgpack_matches_literal_forward(tmp_path, tokens, n_layers, n_heads):
    tree = random_flax_tree(n_layers, seed=10 * n_layers + n_heads)
    path = tmp_path / "ReverseTask.ckpt"
    # The tutorial saves state.params bare; model.init returns {"params": ...}: both must load.
    write_flax_msgpack({"params": tree} if n_heads == 2 else tree, path)
    model = load_model(path, n_heads=n_heads)
    assert (model.cfg.n_layers, model.cfg.n_heads, model.cfg.layer_norm_eps) == (n_layers, n_heads, 1e-6)
    expected = reference_flax(tree, tokens.numpy(), n_heads)
    torch.testing.assert_close(
        logits_of(model, tokens).double(), torch.from_numpy(expected), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("n_heads", [2, 4])
def test_wrong_qkv_split_does_not_match(tmp_path, tokens, n_heads):
    """The reference has teeth: q/k/v chunked over all 3d outputs before splitting heads is a
    different function, and the loaded model agrees with the tutorial's split only."""
    sd = random_tutorial_state_dict(1, seed=7)
    torch.save(tutorial_checkpoint(sd, n_heads, 1), tmp_path / "a.ckpt")
    logits = logits_of(load_model(tmp_path / "a.ckpt"), tokens).double()
    wrong = reference_torch(sd, tokens, n_heads, wrong_split=True)
    assert (logits - wrong).abs().max() > 0.1
    torch.testing.assert_close(logits, reference_torch(sd, tokens, n_heads), atol=1e-5, rtol=0)


def test_flax_reference_and_eps_have_teeth(tokens):
    """The two references agree on the same weights (transposed kernels) only with the right eps."""
    sd = random_tutorial_state_dict(1, seed=5)
    tree = random_flax_tree(1, seed=0)
    for ours, theirs in [
        ("input_net.1", "input_layer"),
        ("output_net.0", "output_net_0"),
        ("output_net.4", "output_net_4"),
    ]:
        tree[theirs] = {"kernel": sd[f"{ours}.weight"].T.numpy(), "bias": sd[f"{ours}.bias"].numpy()}
    tree["output_net_1"] = {
        "scale": sd["output_net.1.weight"].numpy(),
        "bias": sd["output_net.1.bias"].numpy(),
    }
    layer, p = tree["transformer"]["layers_0"], "transformer.layers.0."
    for sub, name in [(layer["self_attn"], "qkv_proj"), (layer["self_attn"], "o_proj")]:
        sub[name] = {
            "kernel": sd[f"{p}self_attn.{name}.weight"].T.numpy(),
            "bias": sd[f"{p}self_attn.{name}.bias"].numpy(),
        }
    for flax_name, torch_name in [("linear_0", "linear_net.0"), ("linear_3", "linear_net.3")]:
        layer[flax_name] = {
            "kernel": sd[f"{p}{torch_name}.weight"].T.numpy(),
            "bias": sd[f"{p}{torch_name}.bias"].numpy(),
        }
    for norm in ("norm1", "norm2"):
        layer[norm] = {"scale": sd[f"{p}{norm}.weight"].numpy(), "bias": sd[f"{p}{norm}.bias"].numpy()}
    flax_out = torch.from_numpy(reference_flax(tree, tokens.numpy(), 2, eps=1e-5))
    torch.testing.assert_close(flax_out, reference_torch(sd, tokens, 2, eps=1e-5), atol=1e-9, rtol=0)
    assert (flax_out - reference_torch(sd, tokens, 2, eps=1e-3)).abs().max() > 1e-5


# -------------------------------------------------------------------------------------------------
# Round trips.
@pytest.mark.parametrize(
    "overrides",
    [{}, dict(n_layers=2, n_heads=4, positional_embedding="learned", normalization="pre", d_mlp=24)],
)
def test_own_format_round_trip(tmp_path, tokens, overrides):
    model = make_model(seed=2, **overrides)
    path = save_model(model, tmp_path / "sub" / "model.pt", metadata={"seed": 2, "tags": ["a", None, 1.5]})
    # The file and, beside it, the record of its sha256 (checked by load_model and by `sha256sum -c`).
    assert path == tmp_path / "sub" / "model.pt"
    assert sorted(os.listdir(tmp_path / "sub")) == ["SHA256SUMS", "model.pt"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert (tmp_path / "sub" / "SHA256SUMS").read_text() == f"{digest}  model.pt\n"
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == "reverse-encoder-interp" and raw["format_version"] == 1
    assert raw["metadata"] == {"seed": 2, "tags": ["a", None, 1.5]}
    loaded = load_model(path)
    assert loaded.cfg == model.cfg and not loaded.training
    assert torch.equal(logits_of(loaded, tokens), logits_of(model, tokens))
    # A run folder is loaded through its model.pt.
    assert torch.equal(logits_of(load_model(tmp_path / "sub"), tokens), logits_of(model, tokens))


def test_tutorial_exporters_round_trip(tmp_path, tokens):
    model = make_model(seed=4, n_layers=2, n_heads=4)
    torch.save(tutorial_checkpoint(to_tutorial_state_dict(model), 4, 2), tmp_path / "t.ckpt")
    assert torch.equal(logits_of(load_model(tmp_path / "t.ckpt"), tokens), logits_of(model, tokens))

    flax_model = make_model(seed=4, n_layers=2, n_heads=4, layer_norm_eps=1e-6)
    write_flax_msgpack(to_flax_tree(flax_model), tmp_path / "f.msgpack")
    assert torch.equal(
        logits_of(load_model(tmp_path / "f.msgpack", n_heads=4), tokens), logits_of(flax_model, tokens)
    )


def test_exporters_refuse_models_the_tutorial_cannot_express():
    with pytest.raises(CheckpointError, match="positional_embedding='learned'.*; normalization='pre'"):
        to_tutorial_state_dict(make_model(positional_embedding="learned", normalization="pre"))
    with pytest.raises(CheckpointError, match="layer_norm_eps=1e-05 .the tutorial's Flax format uses 1e-06"):
        to_flax_tree(make_model())
    with pytest.raises(CheckpointError, match="d_mlp=24"):
        to_tutorial_state_dict(make_model(d_mlp=24))


def our_lightning_checkpoint(model, extra_state=None) -> dict:
    """The layout Lightning writes for ReverseTaskModule (keys observed from a real Trainer)."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()} | (extra_state or {})
    return {
        "epoch": 0,
        "global_step": 1,
        "pytorch-lightning_version": "2.6.0",
        "state_dict": OrderedDict(state),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 1}}}},
        "callbacks": {},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3, "params": [0]}]}],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": {"config": model.cfg.to_dict(), "lr": 5e-4},
    }


def test_our_lightning_checkpoint(tmp_path, tokens):
    model = make_model(seed=6, n_layers=2, n_heads=2)
    torch.save(our_lightning_checkpoint(model), tmp_path / "epoch=0.ckpt")
    loaded = load_model(tmp_path / "epoch=0.ckpt")
    assert loaded.cfg == model.cfg
    assert torch.equal(logits_of(loaded, tokens), logits_of(model, tokens))
    torch.save(our_lightning_checkpoint(model, {"embed.proj.bias": torch.zeros(D)}), tmp_path / "x.ckpt")
    assert_error(tmp_path / "x.ckpt", "unexpected keys [(outside model.) embed.proj.bias]", "Lightning")


def test_checkpoint_written_by_a_real_lightning_trainer(tmp_path, tokens):
    """The contract with models.train.lightning_module, checked on what Lightning really writes."""
    from models.train.lightning_import import pl
    from models.train.lightning_module import ReverseTaskModule

    module = ReverseTaskModule(EncoderConfig(d_model=D, n_heads=2, n_layers=2).to_dict(), max_iters=2)
    trainer = pl.Trainer(
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    data = torch.utils.data.TensorDataset(
        torch.randint(0, C, (8, 16), generator=torch.Generator().manual_seed(0))
    )
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    loaded = load_model(tmp_path / "last.ckpt")
    assert loaded.cfg == module.model.cfg
    assert torch.equal(logits_of(loaded, tokens), logits_of(module.model.eval(), tokens))


def test_format_is_detected_from_content_not_name(tmp_path, tokens):
    model = make_model(seed=8, layer_norm_eps=1e-6)
    save_model(model, tmp_path / "weights.msgpack")
    write_flax_msgpack(to_flax_tree(model), tmp_path / "model.pt")
    for name in ("weights.msgpack", "model.pt"):
        assert torch.equal(logits_of(load_model(tmp_path / name), tokens), logits_of(model, tokens))


def test_legacy_torch_serialization_loads(tmp_path, tokens):
    sd = random_tutorial_state_dict(1, seed=9)
    torch.save(tutorial_checkpoint(sd, 2, 1), tmp_path / "old.ckpt", _use_new_zipfile_serialization=False)
    torch.testing.assert_close(
        logits_of(load_model(tmp_path / "old.ckpt"), tokens).double(),
        reference_torch(sd, tokens, 2),
        atol=1e-5,
        rtol=0,
    )


def test_chunked_flax_arrays_and_sha256(tmp_path, tokens):
    """Flax splits huge arrays into {"__msgpack_chunked_array__": True, ...}; joined back on load."""
    model = make_model(seed=3, layer_norm_eps=1e-6)
    tree = to_flax_tree(model)
    kernel = tree["input_layer"]["kernel"]
    flat = kernel.reshape(-1)
    tree["input_layer"]["kernel"] = {
        "__msgpack_chunked_array__": True,
        "shape": {"0": kernel.shape[0], "1": kernel.shape[1]},
        "chunks": {"0": flat[:70].copy(), "1": flat[70:].copy()},
    }
    path = tmp_path / "chunked"
    path.write_bytes(msgpack.packb(tree, default=flax_ext, strict_types=True))
    assert torch.equal(logits_of(load_model(path), tokens), logits_of(model, tokens))
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


# -------------------------------------------------------------------------------------------------
# Bad inputs: one clear error naming the file and the problem.
class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle-2", "pickle-5"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    payload = {"state_dict": Exploit(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=int(writer[-1])))
    # Protocol 5 is refused even earlier (its FRAME opcode); either way nothing is executed.
    assert_error(path, "refusing to unpickle arbitrary objects", "system" if writer != "pickle-5" else "")
    assert not marker.exists()


def test_missing_empty_and_directory_errors(tmp_path):
    assert_error(tmp_path / "nope.ckpt", "no such file")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    assert_error(tmp_path / "run", "directory without model.pt", "checkpoints/*.ckpt")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    assert_error(tmp_path / "empty.ckpt", "empty file")
    with pytest.raises(CheckpointError, match="nope.*no such file"):
        sha256_file(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="n_heads must be a positive integer, got 0"):
        load_model(tmp_path / "empty.ckpt", n_heads=0)


def test_truncated_and_random_files(tmp_path):
    model = make_model(layer_norm_eps=1e-6)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, 300, dtype=np.uint8).tobytes()
    cases = {
        "zip": save_model(model, tmp_path / "a.pt").read_bytes(),
        "msgpack": write_flax_msgpack(to_flax_tree(model), tmp_path / "b").read_bytes(),
    }
    torch.save({"a": torch.ones(50)}, tmp_path / "c.pt", _use_new_zipfile_serialization=False)
    cases["legacy"] = (tmp_path / "c.pt").read_bytes()
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        assert_error(tmp_path / name, "truncated or corrupt")
    (tmp_path / "noise").write_bytes(b"\x13" + noise)
    assert_error(tmp_path / "noise", "unrecognised content (first byte 0x13)")
    (tmp_path / "zipnoise").write_bytes(b"PK\x03\x04" + noise)
    assert_error(tmp_path / "zipnoise", "truncated or corrupt torch.save file")
    (tmp_path / "mapnoise").write_bytes(b"\x85" + noise)
    assert_error(tmp_path / "mapnoise", "not valid Flax msgpack")


def test_unrecognised_layouts(tmp_path):
    torch.save(torch.ones(3), tmp_path / "tensor.pt")
    assert_error(tmp_path / "tensor.pt", "holds a Tensor, expected a checkpoint dict")
    torch.save({"weights": torch.ones(3), "step": 1}, tmp_path / "dict.pt")
    assert_error(tmp_path / "dict.pt", "unrecognised checkpoint layout with keys [step, weights]")
    (tmp_path / "map.msgpack").write_bytes(msgpack.packb({"step": 3, "opt_state": {}}))
    assert_error(tmp_path / "map.msgpack", "keys [opt_state, step] is not the tutorial's Flax parameter tree")


def test_tutorial_checkpoint_key_and_shape_errors(tmp_path):
    sd = random_tutorial_state_dict(2, seed=1)

    def check(state, *fragments, n_heads=2, **hparams):
        ckpt = tutorial_checkpoint(state, n_heads, 2)
        ckpt["hyper_parameters"] |= hparams
        torch.save(ckpt, tmp_path / "t.ckpt")
        return assert_error(tmp_path / "t.ckpt", *fragments)

    check(
        {k: v for k, v in sd.items() if k != "transformer.layers.1.norm2.bias"},
        "missing keys [transformer.layers.1.norm2.bias]",
    )
    check(
        sd | {"positional_encoding.pe": torch.zeros(1, 5000, D)}, "unexpected keys [positional_encoding.pe]"
    )
    bad = sd | {"transformer.layers.0.self_attn.qkv_proj.weight": torch.zeros(3 * D, D + 1)}
    check(bad, "transformer.layers.0.self_attn.qkv_proj.weight has shape (48, 17), expected (48, 16)")
    check(sd | {"output_net.4.bias": [0.0] * C}, "output_net.4.bias holds a list, expected a tensor")
    check(sd, "n_heads=3", "divisible", n_heads=3)
    check(sd, "input_dim=7 differs from num_classes=10", input_dim=7)
    ckpt = tutorial_checkpoint(sd, 2, 2)
    del ckpt["hyper_parameters"]["num_layers"]
    torch.save(ckpt, tmp_path / "h.ckpt")
    assert_error(tmp_path / "h.ckpt", "lacks hyper_parameters [num_layers]")
    torch.save(tutorial_checkpoint(sd, 2, 2), tmp_path / "ok.ckpt")
    assert_error(tmp_path / "ok.ckpt", "n_heads=4 was requested but the checkpoint has 2", n_heads=4)


def test_own_format_errors(tmp_path):
    model = make_model()
    raw = torch.load(save_model(model, tmp_path / "m.pt"), weights_only=True)

    def check(obj, *fragments):
        torch.save(obj, tmp_path / "bad.pt")
        assert_error(tmp_path / "bad.pt", *fragments)

    check(raw | {"format_version": 2}, "format_version 2 is not supported")
    check(raw | {"config": raw["config"] | {"n_experts": 3}}, "invalid model configuration", "n_experts")
    state = dict(raw["state_dict"])
    del state["head.ln.b"]
    check(raw | {"state_dict": state}, "missing keys [head.ln.b] for a reverse-encoder-interp file")
    check({k: v for k, v in raw.items() if k != "state_dict"}, "missing keys [state_dict]")
    state = dict(raw["state_dict"])
    state["blocks.0.attn.qkv_proj.bias"] = torch.full_like(state["blocks.0.attn.qkv_proj.bias"], float("nan"))
    check(raw | {"state_dict": state}, "blocks.0.attn.qkv_proj.bias holds NaN or infinite values")
    check(raw | {"config": raw["config"] | {"pe_max_len": 10**12}}, "invalid model configuration", "exceed")
    with pytest.raises(CheckpointError, match=r"metadata\['run'\]\[1\] is a Tensor"):
        save_model(model, tmp_path / "n.pt", metadata={"run": [1, torch.ones(1)]})
    assert not (tmp_path / "n.pt").exists()


def test_save_is_atomic(tmp_path, monkeypatch):
    """A write that fails half-way leaves neither the target nor a temp file behind."""
    model = make_model()
    save_model(model, tmp_path / "model.pt")
    before = (tmp_path / "model.pt").read_bytes()

    def broken_save(obj, f):
        f.write(b"PK\x03\x04 half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(make_model(seed=1), tmp_path / "model.pt")
    assert sorted(os.listdir(tmp_path)) == ["SHA256SUMS", "model.pt"]
    assert (tmp_path / "model.pt").read_bytes() == before
    load_model(tmp_path / "model.pt", check_accuracy=False)  # the record still matches the old file


def test_flax_errors(tmp_path):
    tree = random_flax_tree(2, seed=4)

    def check(t, *fragments, n_heads=None):
        path = tmp_path / "f.msgpack"
        path.write_bytes(msgpack.packb(t, default=flax_ext, strict_types=True))
        return assert_error(path, *fragments, n_heads=n_heads)

    check(tree, "n_heads=3 does not divide d_model=16", n_heads=3)
    check(tree | {"step": np.array(7, dtype=np.int32)}, "unexpected keys [step]")
    check(tree | {"step": 1j}, "complex number (msgpack extension type 2)")
    check(
        tree | {"output_net_4": tree["output_net_4"] | {"bias": np.zeros(C, np.complex64)}},
        "dtype 'complex64' is not supported",
    )
    check(
        {k: v for k, v in tree.items() if k != "output_net_1"},
        "missing keys [output_net_1/bias, output_net_1/scale]",
    )
    wrong = tree | {
        "output_net_0": {"kernel": np.zeros((D, D + 1), np.float32), "bias": np.zeros(D, np.float32)}
    }
    check(wrong, "output_net_0/kernel has shape (16, 17), expected (16, 16)")
    check(tree | {"input_layer": {"bias": np.zeros(D, np.float32)}}, "input_layer/kernel is missing")
    check({k: v for k, v in tree.items() if k != "transformer"}, "no transformer/layers_<l> entries")
    gap = tree | {"transformer": {"layers_1": tree["transformer"]["layers_1"]}}
    check(gap, "missing keys [transformer/layers_0/linear_0/bias")

    def raw_check(ext, *fragments):
        path = tmp_path / "raw.msgpack"
        path.write_bytes(msgpack.packb({"input_layer": {"kernel": ext}}))
        assert_error(path, *fragments)

    raw_check(msgpack.ExtType(9, b"x"), "unknown msgpack extension type 9")
    raw_check(
        msgpack.ExtType(1, msgpack.packb(((2, 3), "O", b"x" * 48), use_bin_type=True)),
        "dtype 'O' is not supported",
    )
    short = msgpack.packb(((C, D), "float32", b"\0" * 100), use_bin_type=True)
    raw_check(msgpack.ExtType(1, short), "array data holds 100 bytes but shape (10, 16) of float32 needs 640")
    with pytest.raises(CheckpointError, match="cannot write a str leaf at /a"):
        write_flax_msgpack({"a": "b"}, tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_flax_head_count_comes_from_the_caller(tmp_path, tokens):
    """Flax files do not store n_heads: the default (1) is a different function from the trained one."""
    model = make_model(seed=5, n_heads=2, layer_norm_eps=1e-6)
    path = write_flax_msgpack(to_flax_tree(model), tmp_path / "p")
    one_head = load_model(path)
    assert one_head.cfg.n_heads == 1
    assert (logits_of(one_head, tokens) - logits_of(model, tokens)).abs().max() > 1e-3
    assert torch.equal(logits_of(load_model(path, n_heads=2), tokens), logits_of(model, tokens))


def _ext_array(shape, dtype, data) -> msgpack.ExtType:
    return msgpack.ExtType(1, msgpack.packb((shape, dtype, data), use_bin_type=True))


@pytest.mark.parametrize(
    "leaf, fragment",
    [
        (msgpack.ExtType(1, b"\xc1"), "corrupt array payload"),
        (msgpack.ExtType(1, msgpack.packb([1, 2])), "expected a (shape, dtype, bytes) triple"),
        (_ext_array((-1,), "float32", b""), "corrupt array payload (shape [-1])"),
        (_ext_array((1,), "float32", 12345), "data is not a byte string"),
        (
            {"__msgpack_chunked_array__": True, "shape": {"0": 3}, "chunks": {"1": 0}},
            "chunks is not an index dict",
        ),
        (
            {"__msgpack_chunked_array__": True, "shape": {"0": 1}, "chunks": {"0": 0}},
            "chunks must be 1-d arrays",
        ),
        (
            {
                "__msgpack_chunked_array__": True,
                "shape": {"0": 3},
                "chunks": {"0": _ext_array((5,), "float32", b"\0" * 20)},
            },
            "corrupt chunked array (5 values for shape [3])",
        ),
        (_ext_array((2, 3, 4), "float32", b"\0" * 96), "input_layer/kernel is of shape (2, 3, 4)"),
        (
            _ext_array((C, D), "int32", b"\0" * 640),
            "input_layer/kernel has dtype int32, expected floating point",
        ),
    ],
)
def test_corrupt_flax_leaves(tmp_path, leaf, fragment):
    tree = random_flax_tree(1, seed=2)
    tree["input_layer"]["kernel"] = leaf
    path = tmp_path / "bad.msgpack"
    path.write_bytes(msgpack.packb(tree, default=flax_ext, strict_types=True))
    assert_error(path, fragment)


def test_more_bad_inputs(tmp_path, monkeypatch):
    with pytest.raises(FlaxMsgpackError, match="holds a msgpack list"):
        unpack_tree(msgpack.packb([1, 2]))
    with pytest.raises(CheckpointError, match="non-string key 3 under /a"):
        write_flax_msgpack({"a": {3: np.zeros(2)}}, tmp_path / "w")
    with pytest.raises(CheckpointError, match=r"metadata\['x'\] has a non-string key 1"):
        save_model(make_model(), tmp_path / "m.pt", metadata={"x": {1: 2}})
    raw = torch.load(save_model(make_model(), tmp_path / "ok.pt"), weights_only=True)
    torch.save(raw | {"state_dict": [1]}, tmp_path / "list.pt")
    assert_error(tmp_path / "list.pt", "the state_dict is a list, expected a dict")
    torch.save(
        raw | {"state_dict": raw["state_dict"] | {"head.ln.b": torch.zeros(D, dtype=torch.long)}},
        tmp_path / "i.pt",
    )
    assert_error(tmp_path / "i.pt", "head.ln.b has dtype torch.int64, expected floating point")

    real_open = os.open

    def unreadable(path, *args, **kwargs):  # root reads files whatever their mode: refuse the open
        if str(path) == str(tmp_path / "ok.pt"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", unreadable)
    assert_error(tmp_path / "ok.pt", "cannot read the file (Permission denied)")
