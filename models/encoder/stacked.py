"""The encoder's forward pass for M models at once: parameters stacked on a leading model axis.

``stacked_logits(cfg, params, tokens)`` computes, for every model m, exactly the function
``HookedReverseEncoder.forward`` computes (see ``models.encoder.components``), on ``tokens[m]``:

    params[name]  [M, *shape of the encoder's parameter `name`]   (e.g. "blocks.0.attn.qkv_proj.weight")
    tokens        [M, batch, pos]   int64, already checked (0 <= token < d_vocab)
    logits        [M, batch, pos, d_vocab]

Why a batched re-statement and not ``torch.func.vmap`` over ``functional_call``: measured on this
model (d_model 32, batch 32, 5 models, one CPU thread), vmap's per-operator batching overhead made a
forward + backward of 5 models *slower* than 5 plain forwards one after the other (31 ms vs 20-28 ms),
while this module's batched operators (``baddbmm``, one einsum over model × batch × head) cost about one
model's worth of Python dispatch for all M — the ``n_instances`` pattern of the toy-models literature.
The price is a second statement of the maths, so ``tests/test_ensemble.py`` checks it against the
hooked model for every architecture switch (post/pre-LN, each positional encoding, heads, layers).
No hook points here: this is the training path of ``models.train.ensemble``; inspection goes through the
hooked model that every member is saved as. Dropout is not implemented (ensembles need dropout 0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from models.encoder.config import EncoderConfig

Params = dict[str, Tensor]


def _linear(x: Float[Tensor, "M b n i"], params: Params, name: str) -> Float[Tensor, "M b n o"]:
    """``nn.Linear`` of every model: ``x[m] @ W[m]ᵀ + b[m]`` as one batched GEMM."""
    weight, bias = params[f"{name}.weight"], params[f"{name}.bias"]  # [M, o, i], [M, o]
    m, b, n, i = x.shape
    out = torch.baddbmm(bias.unsqueeze(1), x.reshape(m, b * n, i), weight.transpose(1, 2))
    return out.view(m, b, n, -1)


def _layer_norm(x: Float[Tensor, "M b n d"], params: Params, name: str, eps: float) -> Tensor:
    """``models.encoder.components.LayerNorm``: centre, divide by sqrt(mean square + eps), scale and shift."""
    x = x - x.mean(-1, keepdim=True)
    scale = (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    w, b = params[f"{name}.w"][:, None, None], params[f"{name}.b"][:, None, None]
    # The same operations in the same order as the hooked model's, in place where autograd allows:
    # every in-place step here writes a fresh tensor that no backward formula needs.
    if torch.is_grad_enabled():
        return (x / scale * w).add_(b)
    return x.div_(scale).mul_(w).add_(b)


def _add(x: Tensor, y: Tensor) -> Tensor:
    """x + y, in place into ``y`` (a fresh output that no backward needs; addition commutes exactly)."""
    return y.add_(x)


def _attention(x: Float[Tensor, "M b n d"], params: Params, name: str, cfg: EncoderConfig) -> Tensor:
    """``models.encoder.components.Attention`` (fused per-head qkv_proj: rows grouped by head, then q/k/v)."""
    m, b, n, _ = x.shape
    h, dh = cfg.n_heads, cfg.d_head
    qkv = _linear(x, params, f"{name}.qkv_proj").view(m, b, n, h, 3, dh)
    q, k, v = qkv.unbind(-2)  # the values of qkv[..., i, :]; its backward stacks instead of zero-filling
    # The batch axis of one model's einsums becomes (model, batch): the same per-item products.
    q, k, v = (t.reshape(m * b, n, h, dh) for t in (q, k, v))
    scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(dh)
    pattern = scores.softmax(dim=-1)
    z = torch.einsum("bhqk,bkhe->bqhe", pattern, v).reshape(m, b, n, h * dh)
    return _linear(z, params, f"{name}.o_proj")


def _relu(x: Tensor) -> Tensor:
    return F.relu(x, inplace=True)  # x is a fresh output; ReLU's backward reads its own result


def _mlp(x: Tensor, params: Params, name: str) -> Tensor:
    return _linear(_relu(_linear(x, params, f"{name}.fc_in")), params, f"{name}.fc_out")


def _embed(tokens: Int[Tensor, "M b n"], params: Params, cfg: EncoderConfig) -> Float[Tensor, "M b n d"]:
    """``Embed`` (a row lookup of W_E = proj.weightᵀ, plus the bias) and the positional encoding.

    The M lookup tables are laid end to end and token t of model m reads row m·d_vocab + t, so one
    ``F.embedding`` (and its backward, one scatter-add) serves every model."""
    weight = params["embed.proj.weight"]  # [M, d_model, d_vocab]
    m = weight.shape[0]
    table = weight.transpose(1, 2).reshape(m * cfg.d_vocab, cfg.d_model)
    offsets = (torch.arange(m, device=tokens.device) * cfg.d_vocab).view(m, 1, 1)
    x = F.embedding(tokens + offsets, table) + params["embed.proj.bias"][:, None, None]
    pos = tokens.shape[-1]
    if cfg.positional_embedding == "learned":
        return x + params["pos_embed.W_pos"][:, None, :pos]
    if cfg.positional_embedding == "sinusoidal":
        return x + params["pos_embed.table"][:pos]  # a buffer shared by every model: [pos, d_model]
    return x


def stacked_logits(
    cfg: EncoderConfig, params: Params, tokens: Int[Tensor, "M batch pos"]
) -> Float[Tensor, "M batch pos d_vocab"]:
    """Logits of M encoders of architecture ``cfg`` (see the module docstring for the shapes).

    ``params`` holds every parameter of ``HookedReverseEncoder.named_parameters()`` stacked on a new
    first axis, and for a sinusoidal encoding the (shared, unstacked) table as ``"pos_embed.table"``.
    """
    if cfg.dropout or cfg.input_dropout:
        raise ValueError("stacked_logits: dropout is not implemented (train models with dropout alone)")
    resid = _embed(tokens, params, cfg)
    eps = cfg.layer_norm_eps
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}"
        if cfg.normalization == "post":  # x = LN1(x + Attn(x)); x = LN2(x + MLP(x))
            mid = _layer_norm(
                _add(resid, _attention(resid, params, f"{p}.attn", cfg)), params, f"{p}.ln1", eps
            )
            resid = _layer_norm(_add(mid, _mlp(mid, params, f"{p}.mlp")), params, f"{p}.ln2", eps)
        else:  # x = x + Attn(LN1(x)); x = x + MLP(LN2(x))
            attn = _attention(_layer_norm(resid, params, f"{p}.ln1", eps), params, f"{p}.attn", cfg)
            mid = _add(resid, attn)
            resid = _add(mid, _mlp(_layer_norm(mid, params, f"{p}.ln2", eps), params, f"{p}.mlp"))
    hidden = _relu(_layer_norm(_linear(resid, params, "head.fc_in"), params, "head.ln", eps))
    return _linear(hidden, params, "head.fc_out")


def stacked_loss(
    logits: Float[Tensor, "M batch pos d_vocab"], tokens: Int[Tensor, "M batch pos"]
) -> Float[Tensor, " M"]:
    """Each model's loss: cross entropy against the reversed sequence, mean over its batch and positions
    (``HookedReverseEncoder.loss_fn`` per model)."""
    m, b, n, c = logits.shape
    per_token = F.cross_entropy(
        logits.reshape(m * b, n, c).transpose(1, 2), tokens.reshape(m * b, n).flip(-1), reduction="none"
    )
    return per_token.view(m, b * n).mean(1)
