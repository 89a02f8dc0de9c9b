"""A 1-layer encoder as the proof sees it: per key type (position p, digit t) tables of attention
weights and values for every query type (i, a), the post-attention parameters in float64, and the
float32 rounding error of everything up to the residual stream after attention.

Key type values are computed exactly as the model does where that is exact (the embedding: two
elementwise float32 additions, correctly rounded on every IEEE machine), and in float64 elsewhere
(products of float32 numbers are exact in float64; sums of ≤ 10^3 of them round at 2^-53 relative).
Every float32 operation of the model's forward that is not reproduced exactly carries an error bound
(:mod:`interp.certificate.floats`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from interp.certificate.floats import (
    ABSOLUTE,
    RELATIVE_SLACK,
    U32,
    gamma,
    layer_norm_relative_error,
    softmax_relative_error,
)

# Test-only switches that make the bound wrong on purpose (mutation tests must see them fail):
# "drop_softmax_term" drops the query's own key from the softmax, "ignore_bias" drops the attention
# output bias b_O, "assume_ln_variance" assumes every LayerNorm variance ≥ half its upper bound instead of
# proving a bound.
MUTATIONS: set[str] = set()


@dataclass(frozen=True)
class Linear:
    """y = W x + b: ``weight`` [out, in], ``bias`` [out] in float64 (the model's float32 values)."""

    weight: Tensor
    bias: Tensor


@dataclass(frozen=True)
class Norm:
    """LayerNorm: w ∘ (x − mean x)/√(mean((x − mean x)²) + eps) + b."""

    w: Tensor
    b: Tensor
    eps: float


@dataclass(frozen=True)
class Network:
    """Everything the proof needs, in float64.

    ``weights`` [N (query i), C (own digit a), H, N (key p), C (key digit t)]: exp(s − max s) of the exact
    scores s = q(i,a)·k(p,t)/√d_head (max over all key types of that query); ``values`` [H, N, C, d_head]
    the exact values v(p,t); ``resid`` [N, C, d] the query's residual stream before attention (the
    embedding x(i,a)); ``mid_error`` [N, C, d] a bound on |float32 resid_mid − exact resid_mid| for
    query (i,a) over every input (scores, softmax, weighted sum, o_proj, residual add).
    """

    normalization: str
    seq_len: int
    num_categories: int
    n_heads: int
    d_head: int
    d_model: int
    weights: Tensor
    values: Tensor
    resid: Tensor
    mid_error: Tensor
    o_proj: Linear
    ln1: Norm
    mlp_in: Linear
    mlp_out: Linear
    ln2: Norm
    head_in: Linear
    head_ln: Norm
    head_out: Linear


def _f64(t: Tensor) -> Tensor:
    return t.detach().to("cpu", torch.float64).clone()


def _linear(module: Any, keep_bias: bool = True) -> Linear:
    bias = _f64(module.bias) if keep_bias else torch.zeros_like(_f64(module.bias))
    return Linear(_f64(module.weight), bias)


def _norm(module: Any) -> Norm:
    return Norm(_f64(module.w), _f64(module.b), float(module.eps))


def linear_error(layer: Linear, magnitude: Tensor, input_error: Tensor) -> Tensor:
    """Bound on |fl32(W x̃ + b) − (W x + b)| for |x̃ − x| ≤ input_error, |x̃| ≤ magnitude (both [..., in]):
    |W|·input_error + γ_{in+1}(|W|·magnitude + |b|)."""
    absw = layer.weight.abs()
    n = layer.weight.shape[1]
    return input_error @ absw.T + gamma(n + 1) * (magnitude @ absw.T + layer.bias.abs()) + ABSOLUTE


def exact_layer_norm(x: Tensor, norm: Norm) -> tuple[Tensor, Tensor]:
    """LayerNorm of points ``x`` [..., d] in float64 and a bound on torch's float32 rounding of it.

    c = x − mean x; the float32 centring is within ε_c = γ_{d+1}·mean|x| + u·|c| (+ slack); over the box
    c ± ε_c the scale r = 1/√(mean c² + eps) lies in [r_lo, r_hi]; then |h̃ − h| ≤ |w|(ε_c·r_hi +
    |c|(r_hi − r_lo)) + ρ_LN·|w|(|c| + ε_c)·r_hi + u·(|h| + the rest)."""
    d = x.shape[-1]
    c = x - x.mean(-1, keepdim=True)
    var = c.pow(2).mean(-1, keepdim=True)
    h = c / (var + norm.eps).sqrt() * norm.w + norm.b
    eps_c = (
        gamma(d + 1) * x.abs().mean(-1, keepdim=True)
        + U32 * c.abs()
        + RELATIVE_SLACK * x.abs().amax(-1, keepdim=True)
    )
    var_lo = (c.abs() - eps_c).clamp(min=0).pow(2).mean(-1, keepdim=True)
    var_hi = (c.abs() + eps_c).pow(2).mean(-1, keepdim=True)
    r_lo, r_hi = (var_hi + norm.eps).rsqrt(), (var_lo + norm.eps).rsqrt()
    r = (var + norm.eps).rsqrt()
    shift = norm.w.abs() * (eps_c * r_hi + c.abs() * torch.maximum(r_hi - r, r - r_lo))
    rounding = layer_norm_relative_error(d) * norm.w.abs() * (c.abs() + eps_c) * r_hi
    error = shift + rounding
    error = error + U32 * (h.abs() + error) + ABSOLUTE
    return h, error


def build_network(model: Any, seq_len: int) -> Network:
    """Read ``model`` (1 layer, eval mode; checked by the caller) into a :class:`Network` for length N."""
    cfg = model.cfg
    n, c, h, dh, d = seq_len, cfg.d_vocab, cfg.n_heads, cfg.d_head, cfg.d_model
    block = model.blocks[0]
    with torch.no_grad():
        # The embedding exactly as the model computes it: fl32(fl32(W_E[t] + b_E) + PE[p]).
        tokens = torch.arange(c, device=model.embed.proj.weight.device)
        token_embed = model.embed(tokens.unsqueeze(0))[0].float().cpu()  # [C, d], F.embedding + bias
        pos = model.pos_embed(torch.zeros(1, n, dtype=torch.int64, device=tokens.device))[0].float().cpu()
        x32 = token_embed.unsqueeze(0) + pos.unsqueeze(1)  # [N, C, d], float32 elementwise
    x = x32.to(torch.float64)
    zero = torch.zeros_like(x)
    qkv = _linear(block.attn.qkv_proj)
    if cfg.normalization == "pre":
        key_input, key_input_error = exact_layer_norm(x, _norm(block.ln1))
    else:
        key_input, key_input_error = x, zero
    magnitude = key_input.abs() + key_input_error
    qkv_out = key_input @ qkv.weight.T + qkv.bias  # [N, C, 3d], grouped per head: [h, 3, dh]
    qkv_err = linear_error(qkv, magnitude, key_input_error)
    qkv_out = qkv_out.view(n, c, h, 3, dh)
    qkv_err = qkv_err.view(n, c, h, 3, dh)
    q, k, v = qkv_out.unbind(3)  # each [N, C, H, dh]
    eq, ek, ev = qkv_err.unbind(3)
    scale = 1 / math.sqrt(dh)
    # Exact scores s[i, a, h, p, t] and their float32 error bound.
    scores = torch.einsum("iahe,pthe->iahpt", q, k) * scale
    cross = (
        torch.einsum("iahe,pthe->iahpt", q.abs(), ek)
        + torch.einsum("iahe,pthe->iahpt", eq, k.abs())
        + torch.einsum("iahe,pthe->iahpt", eq, ek)
    )
    rounded = gamma(dh) * torch.einsum("iahe,pthe->iahpt", q.abs() + eq, k.abs() + ek)
    score_error = (cross + rounded) * scale
    score_error = score_error + 4 * U32 * (scores.abs() + score_error) + ABSOLUTE
    if "drop_softmax_term" in MUTATIONS:  # mutation: the query's own key left out of the softmax
        keep = torch.ones(n, n, dtype=torch.bool)
        keep.fill_diagonal_(False)
        scores = scores.masked_fill(~keep[:, None, None, :, None], -math.inf)
    top = scores.amax(dim=(-2, -1), keepdim=True)
    weights = (scores - top).exp()
    # The softmax's relative error per query type and head (all inputs): E and the score range.
    e_max = score_error.amax(dim=(-2, -1))  # [N, C, H]
    finite = torch.where(scores.isfinite(), scores, top)
    score_range = (finite.amax(dim=(-2, -1)) - finite.amin(dim=(-2, -1))) + 2 * e_max
    rho = torch.tensor(
        [
            [
                [softmax_relative_error(float(e), float(r), n) for e, r in zip(ee, rr)]
                for ee, rr in zip(e2, r2)
            ]
            for e2, r2 in zip(e_max, score_range)
        ],
        dtype=torch.float64,
    )  # [N, C, H]
    v_mag = (v.abs() + ev).amax(dim=(0, 1))  # [H, dh], over every key type
    ev_max = ev.amax(dim=(0, 1))
    z_error = (rho + gamma(n) * (1 + rho))[..., None] * v_mag + ev_max  # [N, C, H, dh]
    z_error = z_error.reshape(n, c, h * dh)
    z_mag = v_mag.reshape(h * dh) + z_error
    o_proj = _linear(block.attn.o_proj, keep_bias="ignore_bias" not in MUTATIONS)
    attn_error = linear_error(o_proj, z_mag.expand(n, c, -1), z_error)
    attn_mag = z_mag @ o_proj.weight.abs().T + o_proj.bias.abs() + attn_error
    mid_error = attn_error + U32 * (x.abs() + attn_mag) + RELATIVE_SLACK * (x.abs() + attn_mag) + ABSOLUTE
    return Network(
        normalization=cfg.normalization,
        seq_len=n,
        num_categories=c,
        n_heads=h,
        d_head=dh,
        d_model=d,
        weights=weights,
        values=v.permute(2, 0, 1, 3).contiguous(),  # [H, N, C, dh]
        resid=x,
        mid_error=mid_error,
        o_proj=o_proj,
        ln1=_norm(block.ln1),
        mlp_in=_linear(block.mlp.fc_in),
        mlp_out=_linear(block.mlp.fc_out),
        ln2=_norm(block.ln2),
        head_in=_linear(model.head.fc_in),
        head_ln=_norm(model.head.ln),
        head_out=_linear(model.head.fc_out),
    )
