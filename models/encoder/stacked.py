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
No hook points here: this is the training path of ``models.train.ensemble`` (and, with layer 0 looked up
per token and position, ``eval_logits``, its validation and final metrics); inspection goes through the
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


def _attention(
    x: Float[Tensor, "M b n d"], params: Params, name: str, cfg: EncoderConfig, qkv: Tensor | None = None
) -> Tensor:
    """``models.encoder.components.Attention`` (fused per-head qkv_proj: rows grouped by head, then q/k/v).
    ``qkv [M, b, n, 3·d_model]``: qkv_proj(x) when already known (layer 0 of :func:`eval_logits`)."""
    m, b, n, _ = x.shape
    h, dh = cfg.n_heads, cfg.d_head
    if qkv is None:
        qkv = _linear(x, params, f"{name}.qkv_proj")
    qkv = qkv.view(m, b, n, h, 3, dh)
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
    cfg: EncoderConfig, params: Params, tokens: Int[Tensor, "M batch pos"], tables: Layer0 | None = None
) -> Float[Tensor, "M batch pos d_vocab"]:
    """Logits of M encoders of architecture ``cfg`` (see the module docstring for the shapes).

    ``params`` holds every parameter of ``HookedReverseEncoder.named_parameters()`` stacked on a new
    first axis, and for a sinusoidal encoding the (shared, unstacked) table as ``"pos_embed.table"``.
    ``tables``: :func:`layer0_tables` of these parameters (no autograd; see :func:`eval_logits`).
    """
    if cfg.dropout or cfg.input_dropout:
        raise ValueError("stacked_logits: dropout is not implemented (train models with dropout alone)")
    qkv0 = None
    if tables is None:
        resid = _embed(tokens, params, cfg)
    elif tables[0].shape[1] != cfg.d_vocab * tokens.shape[-1]:
        rows, pos = tables[0].shape[1], tokens.shape[-1]
        raise ValueError(f"stacked_logits: layer-0 tables of {rows} rows for {pos} positions")
    else:
        resid, qkv0 = (_lookup(table, tokens) for table in tables)
    eps = cfg.layer_norm_eps
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}"
        qkv = qkv0 if layer == 0 else None
        if cfg.normalization == "post":  # x = LN1(x + Attn(x)); x = LN2(x + MLP(x))
            mid = _layer_norm(
                _add(resid, _attention(resid, params, f"{p}.attn", cfg, qkv)), params, f"{p}.ln1", eps
            )
            resid = _layer_norm(_add(mid, _mlp(mid, params, f"{p}.mlp")), params, f"{p}.ln2", eps)
        else:  # x = x + Attn(LN1(x)); x = x + MLP(LN2(x))
            normed = resid if qkv is not None else _layer_norm(resid, params, f"{p}.ln1", eps)
            attn = _attention(normed, params, f"{p}.attn", cfg, qkv)
            mid = _add(resid, attn)
            resid = _add(mid, _mlp(_layer_norm(mid, params, f"{p}.ln2", eps), params, f"{p}.mlp"))
    hidden = _relu(_layer_norm(_linear(resid, params, "head.fc_in"), params, "head.ln", eps))
    return _linear(hidden, params, "head.fc_out")


Layer0 = tuple[Tensor, Tensor]  # (embedding [M, V·pos, d_model], layer 0's qkv_proj [M, V·pos, 3·d_model])


@torch.no_grad()
def layer0_tables(cfg: EncoderConfig, params: Params, pos: int) -> Layer0:
    """What layer 0 computes from one token alone, for every (token t, position p), row t·pos + p:

        embedding[m, t·pos + p] = x₀ = W_E[m][t] + b_E[m] + PE[m][p]
        qkv[m, t·pos + p]       = qkv_proj_m(x₀)            (post-LN)
                                = qkv_proj_m(LN1_m(x₀))     (pre-LN)

    Both depend on (t, p) only, so a sequence's rows are looked up instead of computed: V·pos rows
    (160 for the tutorial's task) instead of batch·pos, and no embedding or layer-0 qkv product per
    sequence. The rows are the same functions of the same numbers; a product over 160 rows may sum in
    another order than one over batch·pos rows (another GEMM kernel), so the logits are equal to float32
    rounding, not promised bit for bit (``tests/test_ensemble.py`` checks them against float64)."""
    m = params["embed.proj.weight"].shape[0]
    v = cfg.d_vocab
    grid = torch.arange(v, device=params["embed.proj.weight"].device).view(1, v, 1).expand(m, v, pos)
    x0 = _embed(grid.contiguous(), params, cfg)  # [M, V, pos, d]
    eps = cfg.layer_norm_eps
    inp = x0 if cfg.normalization == "post" else _layer_norm(x0.clone(), params, "blocks.0.ln1", eps)
    qkv = _linear(inp, params, "blocks.0.attn.qkv_proj")
    return x0.reshape(m, v * pos, -1), qkv.reshape(m, v * pos, -1)


def _lookup(table: Float[Tensor, "M rows w"], tokens: Int[Tensor, "M b n"]) -> Float[Tensor, "M b n w"]:
    """``table[m, tokens[m, b, p]·pos + p]``: one ``F.embedding`` for all models (tables end to end)."""
    m, rows, w = table.shape
    pos = tokens.shape[-1]
    offsets = (torch.arange(m, device=tokens.device) * rows).view(m, 1, 1)
    index = tokens * pos + torch.arange(pos, device=tokens.device) + offsets
    return F.embedding(index, table.reshape(m * rows, w))


@torch.no_grad()
def eval_logits(
    cfg: EncoderConfig, params: Params, tokens: Int[Tensor, "M batch pos"], tables: Layer0 | None = None
) -> Float[Tensor, "M batch pos d_vocab"]:
    """:func:`stacked_logits` without autograd for evaluation: layer 0's embedding and qkv looked up in
    ``tables`` (:func:`layer0_tables`, built here when not given; pass them when evaluating many
    batches with the same parameters). Equal to ``stacked_logits`` to float32 rounding."""
    if tables is None:
        tables = layer0_tables(cfg, params, tokens.shape[-1])
    return stacked_logits(cfg, params, tokens, tables)


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
