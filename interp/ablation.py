"""Ablations and interventions as context managers on the model's HookPoints.

Each manager adds forward hooks on entry and removes exactly the hooks it added on exit, in a
``try/finally`` (as tuned-lens does), so an exception inside the ``with`` block never leaves a hook
behind, and hooks that someone else added stay where they are::

    with ablate_positional_encoding(model, "zero"):
        logits = model(tokens)            # as if the model had no positional encoding
    with ablate_heads(model, [(0, 0)], "mean", reference=ref_tokens):
        logits = model(tokens)
    with replace_pattern(model, 0, 0, patterns.uniform):
        logits = model(tokens)

Positional-encoding ablations act on ``hook_pos_embed`` (``P[i]``, the row added at position i, the
same for every sequence). Head ablations act on ``blocks.l.attn.hook_z`` (``z[b, i, h] = Σ_k A[b, h, i, k]
v[b, k, h]``, the head's output before ``W_O``); pattern interventions on ``blocks.l.attn.hook_pattern``.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal, get_args

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from machine.scalars import as_float, as_int

PEMethod = Literal["zero", "mean", "shuffle", "shift", "mirror", "scale", "remove_band", "keep_band"]
PE_METHODS: tuple[str, ...] = get_args(PEMethod)
HeadMethod = Literal["zero", "mean", "resample"]
HEAD_METHODS: tuple[str, ...] = get_args(HeadMethod)

HookFn = Callable[[Tensor], Tensor]
Head = tuple[int, int]


# --- the one hook routine -------------------------------------------------------------------------
@contextmanager
def intervene(
    model: torch.nn.Module, hooks: Sequence[tuple[str, HookFn]] | Mapping[str, HookFn]
) -> Iterator[torch.nn.Module]:
    """Replace the activation at each named hook point by ``fn(activation)`` inside the block.

    ``hooks`` is a list of ``(name, fn)`` pairs or a dict ``{name: fn}``. ``fn`` is either ours,
    ``fn(activation)``, or TransformerLens-style, ``fn(activation, hook)`` (it has a parameter named
    ``hook`` or takes two positional arguments); it returns a tensor of the activation's shape, or
    None after editing the activation in place (TransformerLens' convention). The hooks are removed on
    exit, also when the block raises; only the hooks added here are removed. An unknown name is a
    ``ValueError`` that suggests the closest hook point.
    """
    pairs = list(hooks.items()) if isinstance(hooks, Mapping) else list(hooks)
    points = model.hook_dict
    for item in pairs:
        if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str)):
            raise ValueError(f"interventions must be (hook name, function) pairs or a dict, got {item!r}")
        name, fn = item
        if name not in points:
            close = difflib.get_close_matches(name, list(points), n=1, cutoff=0.8)
            hint = f"; did you mean {close[0]!r}?" if close else " (model.hook_dict lists them all)"
            raise ValueError(f"unknown hook point {name!r}{hint}")
        if not callable(fn):
            raise ValueError(f"the intervention at {name!r} must be callable, got {type(fn).__name__}")
    added = []
    try:
        for name, fn in pairs:
            point = points[name]
            added.append((point, point.add_hook(_checked(name, fn))))
        yield model
    finally:
        for point, handle in reversed(added):
            handle.hook.remove()  # idempotent: fine if model.reset_hooks() already removed it
            point.fwd_hooks = [h for h in point.fwd_hooks if h is not handle]


def takes_hook(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is a TransformerLens hook function, ``fn(activation, hook)``: it has a parameter
    named ``hook``, or accepts a second positional argument."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature: called with the activation only
        return False
    if any(p.name == "hook" for p in parameters):
        return True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in parameters)


def _checked(name: str, fn: HookFn) -> Callable[..., Tensor]:
    call_with_hook = takes_hook(fn)

    def hook(activation: Tensor, hook: object) -> Tensor:
        out = fn(activation, hook=hook) if call_with_hook else fn(activation)
        if out is None:  # edited in place, TransformerLens-style
            return activation
        if not isinstance(out, Tensor) or out.shape != activation.shape:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"the intervention at {name!r} returned {shape}, expected {tuple(activation.shape)}"
            )
        return out.to(activation.dtype)

    return hook


# --- positional encoding --------------------------------------------------------------------------
def positional_rows(model: torch.nn.Module, positions: Int[Tensor, " n"]) -> Float[Tensor, "n d_model"]:
    """The model's encoding at arbitrary integer positions.

    Sinusoidal: ``PE[p, 2k] = sin(p ω_k)``, ``PE[p, 2k+1] = cos(p ω_k)``, ``ω_k = 10000^(−2k/d)`` is
    defined for every integer p, so positions below 0 or past the table are computed from the formula
    (rows inside the table are the table's, bit for bit). Learned: no encoding exists outside
    0..n_ctx−1, so positions are clamped to that range.
    """
    cfg = model.cfg
    table = model.pos_embed.table.detach()
    positions = torch.as_tensor(positions, device=table.device).long()
    if cfg.positional_embedding == "learned":
        return table[positions.clamp(0, table.shape[0] - 1)]
    d = cfg.d_model
    omega = torch.exp(torch.arange(0, d, 2, device=table.device).float() * (-math.log(10000.0) / d))
    angle = positions.float().unsqueeze(-1) * omega
    rows = torch.zeros(*positions.shape, d, device=table.device)
    rows[..., 0::2] = torch.sin(angle)
    rows[..., 1::2] = torch.cos(angle)[..., : d // 2]
    inside = (positions >= 0) & (positions < table.shape[0])
    rows[inside] = table[positions[inside]]
    return rows


def shuffled_positions(n: int, seed: int) -> Int[Tensor, " n"]:
    """The seeded permutation σ used by ``method="shuffle"``: position i gets the encoding of σ(i)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))


def num_bands(d_model: int) -> int:
    """Number of sin/cos pairs (dims 2k, 2k+1) in a d_model-wide sinusoidal encoding."""
    return (d_model + 1) // 2


def positional_transform(
    model: torch.nn.Module,
    method: PEMethod,
    *,
    shift: int | None = None,
    alpha: float | None = None,
    band: int | None = None,
    seed: int | None = None,
) -> HookFn:
    """The map ``P ↦ P'`` applied to the encodings ``P`` [batch, pos, d_model] (validated eagerly).

    - ``zero``:   P'[i] = 0 (the model without positional encoding)
    - ``mean``:   P'[i] = (1/N) Σ_j P[j] (every position gets the same, average encoding)
    - ``shuffle``: P'[i] = P[σ(i)], σ a random permutation drawn from ``seed``
    - ``shift``:  P'[i] = PE(i + shift) (see :func:`positional_rows` for positions outside 0..N−1)
    - ``mirror``: P'[i] = P[N − 1 − i]
    - ``scale``:  P'[i] = α P[i]
    - ``remove_band``: P'[i, 2k] = P'[i, 2k+1] = 0 for k = ``band`` (one sin/cos frequency removed)
    - ``keep_band``: P'[i, 2k : 2k+2] = P[i, 2k : 2k+2] for k = ``band``, every other dimension 0 (only
      that frequency left)
    """
    if method not in PE_METHODS:
        raise ValueError(f"unknown positional-encoding ablation {method!r}; methods: {', '.join(PE_METHODS)}")
    if model.cfg.positional_embedding == "none":
        raise ValueError("the model has no positional encoding to ablate (positional_embedding='none')")
    given = {"shift": shift, "alpha": alpha, "band": band, "seed": seed}
    needs = {"shift": "shift", "scale": "alpha", "shuffle": "seed"}.get(method)
    needs = "band" if method in ("remove_band", "keep_band") else needs
    for name, value in given.items():
        if value is not None and name != needs:
            raise ValueError(f"{name}= is not used by the {method!r} ablation")
    if needs is not None and given[needs] is None:
        raise ValueError(f"the {method!r} ablation needs {needs}=")
    shift, band, seed = (None if given[n] is None else as_int(given[n], n) for n in ("shift", "band", "seed"))
    alpha = None if alpha is None else as_float(alpha, "alpha")
    if band is not None and not 0 <= band < num_bands(model.cfg.d_model):
        last = num_bands(model.cfg.d_model) - 1
        raise ValueError(f"band {band} does not exist: d_model={model.cfg.d_model} has bands 0..{last}")

    if method == "zero":
        return torch.zeros_like
    if method == "mean":
        return lambda pe: pe.mean(dim=1, keepdim=True).expand_as(pe)
    if method == "shuffle":
        return lambda pe: pe[:, shuffled_positions(pe.shape[1], seed).to(pe.device)]
    if method == "shift":

        def shifted(pe: Tensor) -> Tensor:
            positions = torch.arange(pe.shape[1], device=pe.device) + shift
            return positional_rows(model, positions).to(pe.dtype).expand_as(pe)

        return shifted
    if method == "mirror":
        return lambda pe: pe.flip(1)
    if method == "scale":
        return lambda pe: pe * alpha

    def without_band(pe: Tensor) -> Tensor:
        out = pe.clone()
        out[..., 2 * band : 2 * band + 2] = 0
        return out

    def only_band(pe: Tensor) -> Tensor:
        out = torch.zeros_like(pe)
        out[..., 2 * band : 2 * band + 2] = pe[..., 2 * band : 2 * band + 2]
        return out

    return only_band if method == "keep_band" else without_band


@contextmanager
def ablate_positional_encoding(
    model: torch.nn.Module,
    method: PEMethod,
    *,
    shift: int | None = None,
    alpha: float | None = None,
    band: int | None = None,
    seed: int | None = None,
) -> Iterator[torch.nn.Module]:
    """Run the model with its positional encoding transformed (see :func:`positional_transform`)."""
    fn = positional_transform(model, method, shift=shift, alpha=alpha, band=band, seed=seed)
    with intervene(model, [("hook_pos_embed", fn)]):
        yield model


# --- heads ----------------------------------------------------------------------------------------
def check_heads(model: torch.nn.Module, heads: Iterable[Head]) -> list[Head]:
    """Validate (layer, head) pairs; return them sorted and without duplicates."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    out = set()
    for item in heads:
        if isinstance(item, Tensor | np.ndarray):
            item = item.tolist()
        if not (isinstance(item, tuple | list) and len(item) == 2):
            raise ValueError(f"heads must be (layer, head) pairs, got {item!r}")
        layer, head = as_int(item[0], "layer"), as_int(item[1], "head")
        if not 0 <= layer < n_layers:
            raise ValueError(f"layer {layer} does not exist: the model has layers 0..{n_layers - 1}")
        if not 0 <= head < n_heads:
            raise ValueError(f"head {head} does not exist: each layer has heads 0..{n_heads - 1}")
        out.add((layer, head))
    if not out:
        raise ValueError("heads must list at least one (layer, head) pair")
    return sorted(out)


def z_name(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


@torch.no_grad()
def head_activations(
    model: torch.nn.Module, tokens: Int[Tensor, "batch pos"], layers: Sequence[int], batch_size: int = 1024
) -> dict[int, Float[Tensor, "batch pos head d_head"]]:
    """``hook_z`` of the given layers on a clean forward pass over ``tokens`` (in batches)."""
    names = {z_name(layer): layer for layer in layers}
    parts: dict[int, list[Tensor]] = {layer: [] for layer in layers}
    for start in range(0, tokens.shape[0], batch_size):
        _, cache = model.run_with_cache(tokens[start : start + batch_size], names_filter=list(names))
        for name, layer in names.items():
            parts[layer].append(cache[name])
    return {layer: torch.cat(chunks) for layer, chunks in parts.items()}


@torch.no_grad()
def head_means(
    model: torch.nn.Module, batches: Iterable[Int[Tensor, "batch pos"]]
) -> dict[int, Float[Tensor, "pos head d_head"]]:
    """Mean of ``hook_z`` over all sequences of ``batches``, per position: z̄[i, h] = (1/B) Σ_b z[b, i, h].

    Streams the batches (constant memory) and accumulates in float64.
    """
    layers = range(model.cfg.n_layers)
    total: dict[int, Tensor] = {}
    count = 0
    for tokens in batches:
        _, cache = model.run_with_cache(tokens, names_filter=[z_name(layer) for layer in layers])
        for layer in layers:
            part = cache[z_name(layer)].double().sum(0)
            total[layer] = part if layer not in total else total[layer] + part
        count += tokens.shape[0]
    if count == 0:
        raise ValueError("head_means needs at least one reference sequence")
    return {layer: (value / count).float() for layer, value in total.items()}


@contextmanager
def ablate_heads(
    model: torch.nn.Module,
    heads: Iterable[Head],
    method: HeadMethod = "zero",
    *,
    reference: Int[Tensor, "ref pos"] | None = None,
    means: dict[int, Tensor] | None = None,
    seed: int = 0,
) -> Iterator[torch.nn.Module]:
    """Replace the output ``z`` of each (layer, head) in ``heads`` at every position.

    - ``zero``:     z[b, i, h] = 0
    - ``mean``:     z[b, i, h] = z̄[i, h], the mean over the reference sequences (``means`` from
      :func:`head_means`, or computed here from ``reference``)
    - ``resample``: z[b, i, h] = z_clean[r_b, i, h], the head's output on reference sequence r_b of a
      clean run, r_b drawn uniformly (independently per sequence and head) from a generator seeded
      with ``seed``; pass reference sequences other than the evaluated ones.
    """
    heads = check_heads(model, heads)
    if method not in HEAD_METHODS:
        raise ValueError(f"unknown head ablation {method!r}; methods: {', '.join(HEAD_METHODS)}")
    layers = sorted({layer for layer, _ in heads})
    if method == "mean" and means is None:
        if reference is None:
            raise ValueError("the 'mean' head ablation needs reference= tokens or means=")
        means = head_means(model, [reference])
    if method == "resample" and reference is None:
        raise ValueError("the 'resample' head ablation needs reference= tokens to resample from")
    pool = head_activations(model, reference, layers) if method == "resample" else {}
    generator = torch.Generator().manual_seed(as_int(seed, "seed", minimum=0))

    def make_hook(layer: int) -> HookFn:
        layer_heads = [h for lay, h in heads if lay == layer]

        def hook(z: Float[Tensor, "batch pos head d_head"]) -> Tensor:
            z = z.clone()
            for h in layer_heads:
                if method == "zero":
                    z[:, :, h] = 0
                elif method == "mean":
                    mean = means[layer]
                    if mean.shape[0] != z.shape[1]:
                        raise ValueError(f"means cover {mean.shape[0]} positions, the input has {z.shape[1]}")
                    z[:, :, h] = mean[:, h].to(z.device)
                else:
                    source = pool[layer]
                    if source.shape[1] != z.shape[1]:
                        raise ValueError(
                            f"reference sequences have {source.shape[1]} positions, the input {z.shape[1]}"
                        )
                    rows = torch.randint(0, source.shape[0], (z.shape[0],), generator=generator)
                    z[:, :, h] = source[rows.to(source.device), :, h].to(z.device)
            return z

        return hook

    with intervene(model, [(z_name(layer), make_hook(layer)) for layer in layers]):
        yield model


# --- attention patterns ---------------------------------------------------------------------------
@contextmanager
def replace_pattern(
    model: torch.nn.Module,
    layer: int,
    head: int,
    fn: Callable[[Float[Tensor, "batch query key"]], Float[Tensor, "batch query key"]],
) -> Iterator[torch.nn.Module]:
    """Replace head ``head`` of layer ``layer``'s attention pattern A[b, i, k] by ``fn(A)``.

    ``fn`` receives the model's own pattern of that head (rows sum to one) and returns the new one;
    see :mod:`interp.patterns` for the flip, uniform, shifted, permuted and tempered patterns.
    """
    ((layer, head),) = check_heads(model, [(layer, head)])

    def hook(pattern: Float[Tensor, "batch head query key"]) -> Tensor:
        new = fn(pattern[:, head])
        if not isinstance(new, Tensor) or new.shape != pattern[:, head].shape:
            shape = tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__
            raise ValueError(
                f"the pattern function returned {shape}, expected {tuple(pattern[:, head].shape)}"
            )
        out = pattern.clone()
        out[:, head] = new.to(pattern.dtype)
        return out

    with intervene(model, [(f"blocks.{layer}.attn.hook_pattern", hook)]):
        yield model
