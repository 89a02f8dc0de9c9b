"""The residual stream as a sum of components, for post-LayerNorm models too (LayerNorm scales frozen).

In the tutorial's post-LN block, ``x ↦ LN1(x + attn_out)`` then ``LN2(· + mlp_out)``, and
``LN(y) = (y − mean y) / s ⊙ w + b`` with a scale ``s`` (``hook_scale``) computed from the whole sum y.
Given ``s`` — *frozen* at its value in one forward pass — LayerNorm is affine, so it distributes over a
sum: ``LN(Σ c) = Σ (c − mean c) / s ⊙ w  +  b``. Carrying every component through every LayerNorm this
way gives an exact decomposition of the residual at the input cached, with one extra component per
LayerNorm (its bias ``b``):

    resid = embed' + pos_embed' + Σ_l (l_attn_out' + l_ln1_bias' + l_mlp_out' + l_ln2_bias')

(primes: passed through the later LayerNorms with their frozen scales). On a pre-LN model no LayerNorm
sits on the stream and this equals TransformerLens' ``decompose_resid``.

Exact is not causal: removing a component changes the scales it was frozen at. :func:`removal_error`
measures how far the frozen-scale estimate of "remove component c" is from actually removing it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from jaxtyping import Float, Int
from torch import Tensor

from machine.scalars import as_int


def _check_layer(model: torch.nn.Module, layer: int | None) -> int:
    n_layers = model.cfg.n_layers
    if layer is None or (not isinstance(layer, bool) and layer == -1):
        return n_layers
    return as_int(layer, "layer", minimum=0, maximum=n_layers)


def decomposition_hooks(model: torch.nn.Module, layer: int | None = None) -> list[str]:
    """The hook names :func:`frozen_ln_decomposition` reads (a ``names_filter`` for ``run_with_cache``)."""
    names = ["hook_embed", "hook_pos_embed"]
    for i in range(_check_layer(model, layer)):
        names += [f"blocks.{i}.hook_attn_out", f"blocks.{i}.hook_mlp_out"]
        if model.cfg.normalization == "post":
            names += [f"blocks.{i}.ln1.hook_scale", f"blocks.{i}.ln2.hook_scale"]
    return names


def target_name(model: torch.nn.Module, layer: int | None = None) -> str:
    """The hook holding the residual that the decomposition sums to: the input of block ``layer``, or
    of the output head for ``layer`` None / n_layers."""
    layer = _check_layer(model, layer)
    if layer < model.cfg.n_layers:
        return f"blocks.{layer}.hook_resid_pre"
    last = model.cfg.n_layers - 1
    return (
        f"blocks.{last}.ln2.hook_normalized"
        if model.cfg.normalization == "post"
        else f"blocks.{last}.hook_resid_post"
    )


def frozen_ln_decomposition(
    model: torch.nn.Module, cache: Mapping[str, Tensor], layer: int | None = None
) -> tuple[Float[Tensor, "component batch pos d_model"], list[str]]:
    """Components that sum exactly to the residual entering block ``layer`` (None: the output head).

    ``cache`` must hold :func:`decomposition_hooks`. Labels: ``embed``, ``pos_embed``, then per layer
    l ``l_attn_out``, ``l_ln1_bias``, ``l_mlp_out``, ``l_ln2_bias`` (the bias components only on a
    post-LN model), each as it arrives at the target through the frozen LayerNorms.
    """
    layer = _check_layer(model, layer)
    missing = [name for name in decomposition_hooks(model, layer) if name not in cache]
    if missing:
        raise ValueError(
            f"the cache lacks {missing}: run_with_cache(names_filter=decomposition_hooks(model))"
        )
    post = model.cfg.normalization == "post"
    parts: list[Tensor] = [cache["hook_embed"], cache["hook_pos_embed"]]
    labels = ["embed", "pos_embed"]

    def through(ln: torch.nn.Module, scale: Tensor, bias_label: str) -> None:
        w, b = ln.w.detach(), ln.b.detach()
        for i, part in enumerate(parts):
            parts[i] = (part - part.mean(-1, keepdim=True)) / scale * w
        parts.append(b.expand_as(parts[0]))
        labels.append(bias_label)

    for i in range(layer):
        block = model.blocks[i]
        parts.append(cache[f"blocks.{i}.hook_attn_out"])
        labels.append(f"{i}_attn_out")
        if post:
            through(block.ln1, cache[f"blocks.{i}.ln1.hook_scale"], f"{i}_ln1_bias")
        parts.append(cache[f"blocks.{i}.hook_mlp_out"])
        labels.append(f"{i}_mlp_out")
        if post:
            through(block.ln2, cache[f"blocks.{i}.ln2.hook_scale"], f"{i}_ln2_bias")
    return torch.stack(parts), labels


def _hook_of(label: str) -> str:
    if label in ("embed", "pos_embed"):
        return f"hook_{label}"
    layer, part = label.split("_", 1)
    return f"blocks.{layer}.hook_{part}"


@torch.no_grad()
def removal_error(
    model: torch.nn.Module, tokens: Int[Tensor, "batch pos"], layer: int | None = None
) -> dict[str, Float[Tensor, " batch"]]:
    """How far the frozen-scale decomposition is from removing a component for real.

    For each component c (not the LayerNorm biases), per sequence: ``‖Δ_real − Δ_frozen‖ / ‖Δ_real‖``
    (norms over positions and d_model). Δ_frozen = −c's entry of :func:`frozen_ln_decomposition`; Δ_real
    is the change of the target residual when c's hook (``hook_embed``, ``hook_pos_embed``,
    ``blocks.l.hook_attn_out`` / ``hook_mlp_out``) is set to zero while every later sublayer output is
    held at its clean value — so only the LayerNorm scales recompute, and the error is the
    linearisation's alone: exactly 0 on a pre-LN model, whose stream has no LayerNorm.
    """
    tokens = model.validate_tokens(tokens)
    target = target_name(model, layer)
    _, cache = model.run_with_cache(tokens, names_filter=[*decomposition_hooks(model, layer), target])
    stack, labels = frozen_ln_decomposition(model, cache, layer)
    sublayers = [label for label in labels if label.endswith(("_attn_out", "_mlp_out"))]
    errors = {}
    for index, label in enumerate(labels):
        if label.endswith("_bias"):
            continue
        # Zero c; hold every sublayer output after c at its clean value (the LayerNorms recompute).
        later = sublayers[sublayers.index(label) + 1 :] if label in sublayers else sublayers
        hooks = [(_hook_of(label), lambda act, hook: torch.zeros_like(act))]
        hooks += [(_hook_of(other), lambda act, hook: cache[hook.name]) for other in later]
        with model.hooks(fwd_hooks=hooks):
            _, ablated = model.run_with_cache(tokens, names_filter=[target])
        real = ablated[target] - cache[target]
        errors[label] = (real + stack[index]).flatten(1).norm(dim=1) / real.flatten(1).norm(dim=1)
    return errors
