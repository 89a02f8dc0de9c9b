"""Checkpoint I/O: one door, :func:`load_model`, for every format the encoder comes in.

The format is read from the file's first bytes, never from its name:

- ``PK\\x03\\x04`` (a ``torch.save`` zip) or ``\\x80`` + pickle protocol 2..5 (legacy ``torch.save``)
  → ``torch.load(weights_only=True)``, then by the dict's keys:
  this project's file (``format == "reverse-encoder-interp"``, written by :func:`save_model`),
  a Lightning checkpoint of our ``ReverseTaskModule`` (``hyper_parameters["config"]``, state-dict keys
  prefixed ``model.``), or the tutorial's Lightning checkpoint (``hyper_parameters`` with
  ``model_dim``, ``num_heads``, ..., state-dict keys ``input_net.1.weight``, ``transformer.layers.l...``);
- a msgpack map (first byte 0x80-0x8f, 0xde or 0xdf) → the tutorial's Flax parameters
  (``flax.serialization.to_bytes``), read without Flax by :mod:`models.storage.flax_msgpack`.

A directory is a run folder and must contain ``model.pt``. Tutorial weights map onto ours by renaming
(both keep the fused per-head ``qkv_proj``); Flax Dense kernels are [in, out], the transpose of torch's
[out, in], and Flax LayerNorm uses eps 1e-6 instead of torch's 1e-5. Every problem raises a
:class:`CheckpointError` naming the file and what is wrong.

Before anything is unpickled (:mod:`models.storage.integrity`): the path must be a regular file (a FIFO or a
symlink loop is named, never opened for reading); a file with a sha256 recorded in its folder's
``SHA256SUMS`` (every model file this toolkit writes) must match it; a zip's declared member sizes
must fit a checkpoint of the largest model :mod:`models.encoder.config` builds and must not exceed the
file's own size many times over (a decompression bomb); and a zip without a recorded sha256 must
pass its members' CRC-32 checks. Legacy pickles and Flax files without a record cannot be verified.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import Tensor

from machine.devices import check_device
from machine.scalars import as_int
from models.encoder.config import EncoderConfig
from models.encoder.data import make_reverse_data
from models.encoder.hooked import HookedReverseEncoder
from models.storage.flax_msgpack import FlaxMsgpackError, flatten_tree, pack_tree, unpack_tree
from models.storage.integrity import (
    CheckpointError,
    atomic_write,
    check_zip,
    open_regular,
    sha256_file,
    verify_recorded,
)

FORMAT_NAME = "reverse-encoder-interp"
FORMAT_VERSION = 1
RUN_FOLDER_MODEL = "model.pt"
TUTORIAL_N_CTX = 16  # the tutorial's sequence length; not stored in its checkpoints
TORCH_LN_EPS = 1e-5
FLAX_LN_EPS = 1e-6
TUTORIAL_HPARAMS = ("input_dim", "model_dim", "num_classes", "num_heads", "num_layers")
_ZIP_MAGIC = b"PK\x03\x04"


__all__ = ["CheckpointError", "load_model", "save_model", "sha256_file", "write_flax_msgpack"]


def _atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Temp file in the same folder, fsync, ``os.replace``, mode 0644, sha256 recorded in the folder's
    SHA256SUMS (:func:`models.storage.integrity.atomic_write`): never a half-written or unrecorded model
    file."""
    atomic_write(path, write, record=True)
    return Path(path)


def _check_plain(value: Any, where: str) -> None:
    """Metadata must be plain Python data, or ``weights_only=True`` could not read the file back."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CheckpointError(f"metadata: {where} has a non-string key {key!r}")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise CheckpointError(
        f"metadata: {where} is a {type(value).__name__}; only str, int, float, bool, None, lists and "
        "dicts are allowed"
    )


def save_model(model: HookedReverseEncoder, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write ``{"format", "format_version", "config", "state_dict", "metadata"}`` with ``torch.save``.

    Only tensors and plain Python types go in, so ``torch.load(weights_only=True)`` reads it back.
    """
    metadata = {} if metadata is None else metadata
    _check_plain(metadata, "metadata")
    checkpoint = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": model.cfg.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metadata": metadata,
    }
    return _atomic_write(path, lambda f: torch.save(checkpoint, f))


# --------------------------------------------------------------------------------------------------
# Name maps between our parameters and the tutorial's (PyTorch and Flax).
def _param_map(n_layers: int, flavour: str) -> list[tuple[str, str, bool]]:
    """[(our name, tutorial name, transpose?)] for flavour "torch" or "flax"."""
    modules = [("linear", "embed.proj", "input_net.1", "input_layer")]
    for layer in range(n_layers):
        t, f = f"transformer.layers.{layer}.", f"transformer/layers_{layer}/"
        modules += [
            ("linear", f"blocks.{layer}.attn.qkv_proj", t + "self_attn.qkv_proj", f + "self_attn/qkv_proj"),
            ("linear", f"blocks.{layer}.attn.o_proj", t + "self_attn.o_proj", f + "self_attn/o_proj"),
            ("linear", f"blocks.{layer}.mlp.fc_in", t + "linear_net.0", f + "linear_0"),
            ("linear", f"blocks.{layer}.mlp.fc_out", t + "linear_net.3", f + "linear_3"),
            ("norm", f"blocks.{layer}.ln1", t + "norm1", f + "norm1"),
            ("norm", f"blocks.{layer}.ln2", t + "norm2", f + "norm2"),
        ]
    modules += [
        ("linear", "head.fc_in", "output_net.0", "output_net_0"),
        ("norm", "head.ln", "output_net.1", "output_net_1"),
        ("linear", "head.fc_out", "output_net.4", "output_net_4"),
    ]
    pairs = []
    for kind, ours, torch_name, flax_name in modules:
        if flavour == "torch":
            ours_w = f"{ours}.weight" if kind == "linear" else f"{ours}.w"
            ours_b = f"{ours}.bias" if kind == "linear" else f"{ours}.b"
            pairs += [(ours_w, f"{torch_name}.weight", False), (ours_b, f"{torch_name}.bias", False)]
        elif kind == "linear":
            pairs += [
                (f"{ours}.weight", f"{flax_name}/kernel", True),
                (f"{ours}.bias", f"{flax_name}/bias", False),
            ]
        else:
            pairs += [(f"{ours}.w", f"{flax_name}/scale", False), (f"{ours}.b", f"{flax_name}/bias", False)]
    return pairs


def _check_tutorial_compatible(model: HookedReverseEncoder, eps: float, what: str) -> None:
    cfg = model.cfg
    problems = []
    if cfg.positional_embedding != "sinusoidal":
        problems.append(f"positional_embedding={cfg.positional_embedding!r} (the tutorial's is sinusoidal)")
    if cfg.normalization != "post":
        problems.append(f"normalization={cfg.normalization!r} (the tutorial's is post-LayerNorm)")
    if cfg.d_mlp != 2 * cfg.d_model:
        problems.append(f"d_mlp={cfg.d_mlp} (the tutorial's is 2 * d_model = {2 * cfg.d_model})")
    if cfg.layer_norm_eps != eps:
        problems.append(f"layer_norm_eps={cfg.layer_norm_eps} (the {what} uses {eps})")
    if problems:
        raise CheckpointError(f"cannot export to the {what}: the model has " + "; ".join(problems))


def to_tutorial_state_dict(model: HookedReverseEncoder) -> dict[str, Tensor]:
    """The tutorial's PyTorch ``TransformerPredictor`` state dict holding this model's weights."""
    _check_tutorial_compatible(model, TORCH_LN_EPS, "tutorial's PyTorch format")
    ours = model.state_dict()
    return {
        theirs: ours[name].detach().cpu().clone()
        for name, theirs, _ in _param_map(model.cfg.n_layers, "torch")
    }


def to_flax_tree(model: HookedReverseEncoder) -> dict[str, Any]:
    """The tutorial's Flax parameter tree (nested dicts of float32 numpy arrays, no ``params`` level)."""
    _check_tutorial_compatible(model, FLAX_LN_EPS, "tutorial's Flax format")
    ours = model.state_dict()
    tree: dict[str, Any] = {}
    for name, theirs, transpose in _param_map(model.cfg.n_layers, "flax"):
        value = ours[name].detach().cpu()
        array = (value.T if transpose else value).numpy().astype(np.float32)
        node = tree
        *parents, leaf = theirs.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = array
    return tree


def write_flax_msgpack(tree: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a tree of numpy arrays as ``flax.serialization.to_bytes`` would (atomically)."""
    try:
        data = pack_tree(tree)
    except FlaxMsgpackError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return _atomic_write(path, lambda f: f.write(data))


# --------------------------------------------------------------------------------------------------
def _names(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}, ... ({len(keys) - limit} more)]" if len(keys) > limit else f"[{shown}]"


def _check_tensors(
    path: Path, found: dict[str, Any], expected: dict[str, tuple[int, ...]], what: str
) -> None:
    """Same keys, finite floating tensors/arrays, same shapes, or a CheckpointError naming the difference."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(map(str, set(found) - set(expected)))
    if missing or unexpected:
        parts = ([f"missing keys {_names(missing)}"] if missing else []) + (
            [f"unexpected keys {_names(unexpected)}"] if unexpected else []
        )
        raise CheckpointError(f"{path}: {'; '.join(parts)} for {what}")
    for key, shape in expected.items():
        value = found[key]
        if not isinstance(value, (Tensor, np.ndarray)):
            raise CheckpointError(f"{path}: {key} holds a {type(value).__name__}, expected a tensor")
        if isinstance(value, Tensor) and value.layout != torch.strided:
            raise CheckpointError(
                f"{path}: {key} is a {str(value.layout).removeprefix('torch.')} tensor, expected a dense one"
            )
        if not (value.dtype.is_floating_point if isinstance(value, Tensor) else value.dtype.kind == "f"):
            raise CheckpointError(f"{path}: {key} has dtype {value.dtype}, expected floating point")
        if tuple(value.shape) != shape:
            raise CheckpointError(
                f"{path}: {key} has shape {tuple(value.shape)}, expected {shape} for {what}"
            )
        finite = torch.isfinite(value).all() if isinstance(value, Tensor) else np.isfinite(value).all()
        if not bool(finite):
            raise CheckpointError(f"{path}: {key} holds NaN or infinite values (a diverged run?)")


def _build(
    path: Path, requested_heads: int | None, device: str, config: dict[str, Any]
) -> HookedReverseEncoder:
    try:
        cfg = EncoderConfig(**config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid model configuration: {exc}") from None
    if requested_heads is not None and requested_heads != cfg.n_heads:
        raise CheckpointError(
            f"{path}: n_heads={requested_heads} was requested but the checkpoint has {cfg.n_heads}"
        )
    cfg.device = device
    return HookedReverseEncoder(cfg)


def _load_ours(
    path: Path, config: Any, state: Any, n_heads: int | None, device: str, what: str
) -> HookedReverseEncoder:
    if not isinstance(config, dict) or not isinstance(state, dict):
        bad, value = ("config", config) if not isinstance(config, dict) else ("state_dict", state)
        raise CheckpointError(f"{path}: the {bad} is a {type(value).__name__}, expected a dict")
    try:
        known = EncoderConfig.from_dict(config).to_dict()  # validates field names
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid model configuration: {exc}") from None
    known.pop("d_head")
    known.pop("device")
    model = _build(path, n_heads, device, known)
    _check_tensors(path, state, {k: tuple(v.shape) for k, v in model.state_dict().items()}, what)
    model.load_state_dict(state)
    return model


def _load_tutorial_torch(
    path: Path, hparams: dict, state: dict, n_heads: int | None, device: str
) -> HookedReverseEncoder:
    missing = [k for k in TUTORIAL_HPARAMS if k not in hparams]
    if missing:
        raise CheckpointError(f"{path}: tutorial checkpoint lacks hyper_parameters {_names(missing)}")
    if hparams["input_dim"] != hparams["num_classes"]:
        raise CheckpointError(
            f"{path}: input_dim={hparams['input_dim']} differs from num_classes={hparams['num_classes']}; "
            "the reverse-task encoder reads and predicts the same vocabulary"
        )
    config = dict(
        n_layers=hparams["num_layers"],
        n_heads=hparams["num_heads"],
        d_model=hparams["model_dim"],
        d_vocab=hparams["num_classes"],
        n_ctx=TUTORIAL_N_CTX,
        dropout=hparams.get("dropout", 0.0),
        input_dropout=hparams.get("input_dropout", 0.0),
        layer_norm_eps=TORCH_LN_EPS,
    )
    model = _build(path, n_heads, device, config)
    pairs = _param_map(model.cfg.n_layers, "torch")
    ours = model.state_dict()
    _check_tensors(
        path, state, {theirs: tuple(ours[name].shape) for name, theirs, _ in pairs}, "the tutorial model"
    )
    model.load_state_dict({name: state[theirs] for name, theirs, _ in pairs})
    return model


def _load_flax(path: Path, data: bytes, n_heads: int | None, device: str) -> HookedReverseEncoder:
    try:
        tree = unpack_tree(data)
    except FlaxMsgpackError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    if set(tree) == {"params"} and isinstance(tree["params"], dict):
        tree = tree["params"]  # {"params": ...} as returned by model.init; the tutorial saves without it
    flat = flatten_tree(tree)
    if not any(key.startswith(("input_layer/", "transformer/", "output_net_")) for key in flat):
        raise CheckpointError(
            f"{path}: msgpack map with keys {_names(sorted(map(str, tree)))} is not the tutorial's Flax "
            "parameter tree (expected input_layer, transformer, output_net_0, output_net_1, output_net_4)"
        )
    kernel = flat.get("input_layer/kernel")
    if not isinstance(kernel, np.ndarray) or kernel.ndim != 2:
        found = "missing" if kernel is None else f"of shape {getattr(kernel, 'shape', type(kernel).__name__)}"
        raise CheckpointError(f"{path}: input_layer/kernel is {found}; need a [d_vocab, d_model] array")
    layers = {int(m.group(1)) for key in flat if (m := re.match(r"transformer/layers_(\d+)/", key))}
    if not layers:
        raise CheckpointError(f"{path}: no transformer/layers_<l> entries in the Flax parameter tree")
    d_vocab, d_model = kernel.shape
    n_heads = 1 if n_heads is None else n_heads
    if d_model % n_heads:
        raise CheckpointError(
            f"{path}: n_heads={n_heads} does not divide d_model={d_model} (from input_layer/kernel); "
            "Flax checkpoints do not store the head count, pass the one used in training"
        )
    config = dict(n_layers=max(layers) + 1, n_heads=n_heads, d_model=d_model, d_vocab=d_vocab)
    model = _build(path, None, device, config | dict(n_ctx=TUTORIAL_N_CTX, layer_norm_eps=FLAX_LN_EPS))
    pairs = _param_map(model.cfg.n_layers, "flax")
    ours = model.state_dict()
    expected = {theirs: tuple(ours[name].T.shape if t else ours[name].shape) for name, theirs, t in pairs}
    _check_tensors(path, flat, expected, "the tutorial's Flax model")
    state = {
        name: torch.from_numpy(flat[theirs].T if t else flat[theirs]).float() for name, theirs, t in pairs
    }
    model.load_state_dict(state)
    return model


def _torch_load(path: Path) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... on bad files
        text = str(exc)
        if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in text:
            if found := re.search(r"GLOBAL ([\w.]+)", text):
                detail = f" (it references {found.group(1)})"
            elif found := re.search(r"Unsupported [^\n.]+", text):
                detail = f" ({found.group(0).strip()})"
            else:
                detail = ""
            raise CheckpointError(
                f"{path}: refusing to unpickle arbitrary objects{detail}: torch.load(weights_only=True) "
                "accepts only tensors and plain Python types"
            ) from None
        reason = f"{type(exc).__name__}: {text.split('. ')[0].strip()}".rstrip(": ")
        raise CheckpointError(f"{path}: truncated or corrupt torch.save file ({reason})") from None


def _load_torch_dict(path: Path, obj: Any, n_heads: int | None, device: str) -> HookedReverseEncoder:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, expected a checkpoint dict")
    if obj.get("format") == FORMAT_NAME:
        if obj.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: format_version {obj.get('format_version')!r} is not supported (this code reads "
                f"{FORMAT_VERSION})"
            )
        missing = [k for k in ("config", "state_dict") if k not in obj]
        if missing:
            raise CheckpointError(f"{path}: missing keys {_names(missing)} in a {FORMAT_NAME} file")
        return _load_ours(path, obj["config"], obj["state_dict"], n_heads, device, f"a {FORMAT_NAME} file")
    hparams, state = obj.get("hyper_parameters"), obj.get("state_dict")
    if isinstance(hparams, dict) and isinstance(state, dict):
        if "config" in hparams:  # our ReverseTaskModule: the encoder is its attribute ``model``
            # Keys outside ``model.`` keep a marker so that they are reported as unexpected.
            state = {
                k[6:] if k.startswith("model.") else f"(outside model.) {k}": v for k, v in state.items()
            }
            return _load_ours(path, hparams["config"], state, n_heads, device, "our Lightning module")
        if any(k in hparams for k in TUTORIAL_HPARAMS):
            return _load_tutorial_torch(path, hparams, state, n_heads, device)
    raise CheckpointError(
        f"{path}: unrecognised checkpoint layout with keys {_names(sorted(map(str, obj)))} (expected this "
        f"project's format, our Lightning module's checkpoint, or the tutorial's Lightning checkpoint)"
    )


def load_model(
    path: str | os.PathLike,
    *,
    n_heads: int | None = None,
    device: str = "cpu",
    check_accuracy: bool = True,
    check_length: int | None = None,
) -> HookedReverseEncoder:
    """Load any supported checkpoint (see the module docstring) as a model in eval mode.

    ``models.load_model`` (:mod:`models.loading`) is this function with ``path`` optional (None: the
    cached default model). ``n_heads`` is needed only for Flax files, which do
    not store it (default 1, with a warning saying so); for the other formats it is read from the
    file, and a different explicit value is an error. ``device``: cpu, cuda[:N] or mps, checked first.
    With ``check_accuracy`` the model reverses 256 random sequences once and a warning says so when
    its accuracy is near chance (an untrained model, or a Flax file loaded with the wrong head count),
    on sequences of ``check_length`` tokens — the length being analysed — or, when None or beyond the
    model's recorded length, of that length ``cfg.n_ctx`` (a tutorial checkpoint records none: 16 is
    assumed, so a model trained at a shorter length is checked at the length analysed).
    """
    if path is None:
        raise CheckpointError("no checkpoint path given (models.load_model() without one: the default model)")
    path = Path(path)
    try:
        device = check_device(device)
    except ValueError as exc:
        raise CheckpointError(f"{path}: cannot load onto {exc}") from None
    if n_heads is not None:
        try:
            n_heads = as_int(n_heads, "n_heads", minimum=1)
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
    if path.is_dir():
        if not os.path.lexists(path / RUN_FOLDER_MODEL):  # present but not a file: named below
            hint = (
                " (its checkpoints/*.ckpt files can be loaded directly)"
                if (path / "checkpoints").is_dir()
                else ""
            )
            raise CheckpointError(f"{path}: directory without {RUN_FOLDER_MODEL}, so not a run folder{hint}")
        path = path / RUN_FOLDER_MODEL
    with open_regular(path) as f:  # a FIFO, a symlink loop, a device: named, never read
        head = f.read(4)
    if not head:
        raise CheckpointError(f"{path}: empty file")
    # The sha256 recorded when the file was written (SHA256SUMS beside it), when there is one.
    digest = sha256_file(path)
    recorded = verify_recorded(path, digest)
    # A pickle starts with PROTO (0x80) and its protocol; torch.save's legacy format uses protocol 2.
    flax = False
    if head == _ZIP_MAGIC:
        check_zip(path, crc=recorded is None)  # declared sizes before torch.load allocates them
        model = _load_torch_dict(path, _torch_load(path), n_heads, device)
    elif head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        model = _load_torch_dict(path, _torch_load(path), n_heads, device)
    elif 0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF):
        flax = True
        with open_regular(path) as f:
            data = f.read()
        model = _load_flax(path, data, n_heads, device)
        if n_heads is None:
            warnings.warn(
                f"{path}: a Flax checkpoint does not store its head count; assumed n_heads=1 (pass "
                "n_heads= if it was trained with more)",
                stacklevel=2,
            )
    else:
        raise CheckpointError(
            f"{path}: unrecognised content (first byte 0x{head[0]:02x}): not a torch.save file, not a "
            "pickle, not a Flax msgpack map"
        )
    # Where the weights came from, so results computed from this model can record it (provenance).
    model.checkpoint_path = str(path.absolute())
    model.checkpoint_sha256 = digest
    model.eval()
    if check_accuracy:
        _warn_if_near_chance(model, path, flax_heads_guessed=flax and n_heads is None, length=check_length)
    return model


CHECK_SEQUENCES = 256


@torch.no_grad()
def _warn_if_near_chance(
    model: HookedReverseEncoder, path: Path, flax_heads_guessed: bool, length: int | None = None
) -> None:
    """Warn when the model reverses 256 random sequences of ``length`` tokens (None, or more than its
    recorded length: its ``n_ctx``) no better than 1.5× chance."""
    cfg = model.cfg
    # Beyond the recorded length a model is not expected to reverse (length generalisation is a
    # question, not a check), and a no-PE model would run 256 sequences of any length asked for
    # (``--seq-len 1e6``: terabytes of attention before the analysis' own memory check speaks).
    if length is None or length < 1 or length > cfg.n_ctx:
        length = cfg.n_ctx
    tokens = make_reverse_data(CHECK_SEQUENCES, length, cfg.d_vocab, seed=0).to(
        model.embed.proj.weight.device
    )
    accuracy = float((model(tokens).argmax(-1) == tokens.flip(-1)).float().mean())
    chance = 1.0 / cfg.d_vocab
    if accuracy <= 1.5 * chance:
        hint = (
            f"; wrong n_heads? Flax files do not store it and {cfg.n_heads} was assumed"
            if flax_heads_guessed
            else f" (is it trained? for a Flax file, is n_heads={cfg.n_heads} right?)"
        )
        warnings.warn(
            f"{path}: accuracy {accuracy:.3f} on {CHECK_SEQUENCES} random sequences of length {length} is "
            "near chance "
            f"({chance:.2f}){hint}",
            stacklevel=3,
        )
