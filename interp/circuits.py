"""QK and OV circuits of the encoder, and the exact split of layer 0's attention scores.

Layer 0 of the tutorial's post-LayerNorm encoder reads the residual stream directly:
``x = t + p`` with ``t = W_E[token] + b_E`` (``hook_embed``, the embedding bias is part of the token
part) and ``p = PE[pos]`` (``hook_pos_embed``). Its score for query q and key k in head h is

    S[q, k] = (x_q W_Q + b_Q) · (x_k W_K + b_K) / √d_head,

which is bilinear in x, so it splits exactly into

    pos_pos = (p_q W_Q)·(p_k W_K) / √d_head        (positions alone; the same for every sequence)
    tok_pos = (t_q W_Q)·(p_k W_K) / √d_head        (query token, key position)
    pos_tok = (p_q W_Q)·(t_k W_K) / √d_head        (query position, key token)
    tok_tok = (t_q W_Q)·(t_k W_K) / √d_head
    bias    = [b_Q·(x_k W_K) + (x_q W_Q)·b_K + b_Q·b_K] / √d_head   (every product with b_Q or b_K)

and the five terms sum to ``blocks.0.attn.hook_attn_scores`` up to float rounding. The first name is
always the query side, the second the key side. The embedding bias b_E is kept with the token part
(so the token part is exactly what ``hook_embed`` records, and ``p`` is exactly the encoding).

Pre-LayerNorm models feed ``LN1(x)`` to layer 0. LayerNorm is ``(x − mean x) / s ⊙ w + b`` with a
per-(sequence, position) scale ``s`` that depends on the token *and* the position, so no split into
"token" and "position" terms is exact for all inputs. We split with the scale *frozen* at its value in
the forward pass (``blocks.0.ln1.hook_scale``): ``t' = centre(t) / s ⊙ w``, ``p' = centre(p) / s ⊙ w``
and the LayerNorm bias folds into the query/key biases (``b_Q' = b_Q + b W_Q``). The terms then still
sum exactly to the scores, but ``pos_pos`` varies from sequence to sequence through ``s``; the result
says so (``frozen_scale=True``).

The output side of a head is not bilinear (values pass the MLP and a LayerNorm'd head), so
:func:`swap_effect` measures it directly: change the digit at one key and watch one prediction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from machine.scalars import as_int, is_int
from models.encoder.hooked import HookedReverseEncoder
from models.encoder.transformer_lens_parts import FactoredMatrix

SCORE_TERMS: tuple[str, ...] = ("pos_pos", "tok_pos", "pos_tok", "tok_tok", "bias")


def _check_layer(model: HookedReverseEncoder, layer: int) -> None:
    if not is_int(layer) or not 0 <= int(layer) < model.cfg.n_layers:
        raise ValueError(f"layer {layer!r} is out of range for a model with {model.cfg.n_layers} layer(s)")


def qk_circuit(model: HookedReverseEncoder, layer: int = 0) -> FactoredMatrix:
    """``W_Q W_Kᵀ`` per head as a ``FactoredMatrix`` [head, d_model, d_model] (unscaled by √d_head).

    ``x_q (W_Q W_Kᵀ) x_kᵀ / √d_head`` is the bias-free part of the score between residual vectors;
    its singular values (``.S``) show how many directions the head compares.
    """
    _check_layer(model, layer)
    attn = model.blocks[layer].attn
    return FactoredMatrix(attn.W_Q.detach(), attn.W_K.detach().transpose(-1, -2))


def ov_circuit(model: HookedReverseEncoder, layer: int = 0) -> FactoredMatrix:
    """``W_V W_O`` per head as a ``FactoredMatrix`` [head, d_model, d_model]: what a head writes."""
    _check_layer(model, layer)
    attn = model.blocks[layer].attn
    return FactoredMatrix(attn.W_V.detach(), attn.W_O.detach())


def positional_encodings(model: HookedReverseEncoder, n_pos: int) -> Float[Tensor, "pos d_model"]:
    """The encodings the model adds at positions 0..n_pos−1 (zeros for ``positional_embedding='none'``)."""
    n_pos = as_int(n_pos, "n_pos", minimum=1)
    limit = model.cfg.max_positions
    if limit is not None and n_pos > limit:
        raise ValueError(f"n_pos {n_pos} exceeds the {limit} positions the model's encoding supports")
    if model.cfg.positional_embedding == "none":
        return torch.zeros(n_pos, model.cfg.d_model, device=model.embed.proj.weight.device)
    return model.pos_embed.table[:n_pos].detach()


def bilinear_score_terms(
    parts: dict[str, Float[Tensor, "batch pos d_model"]],
    W_Q: Float[Tensor, "head d_model d_head"],
    W_K: Float[Tensor, "head d_model d_head"],
    b_Q: Float[Tensor, "batch pos head d_head"] | Float[Tensor, "head d_head"],
    b_K: Float[Tensor, "batch pos head d_head"] | Float[Tensor, "head d_head"],
) -> dict[str, Float[Tensor, "batch head query key"]]:
    """Split ``(x W_Q + b_Q)·(x W_K + b_K)/√d_head`` with ``x = Σ parts`` into exact pairwise terms.

    Returns ``{f"{a}_{b}": (x_a W_Q)·(x_b W_K)/√d_head}`` for every ordered pair (a on the query side,
    b on the key side) and ``"bias"`` for every product involving ``b_Q`` or ``b_K``. Biases may be
    per position ([batch, pos, head, d_head]), as they are after folding a frozen LayerNorm.
    """
    if not parts:
        raise ValueError("parts must hold at least one component of the residual stream")
    shapes = {tuple(v.shape) for v in parts.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"parts must all have the same shape [batch, pos, d_model], got {sorted(shapes)}")
    if "bias" in parts:
        raise ValueError("'bias' is reserved for the bias term; rename that part")
    scale = 1.0 / math.sqrt(W_Q.shape[-1])
    q = {name: torch.einsum("bpd,hde->bphe", x, W_Q) for name, x in parts.items()}
    k = {name: torch.einsum("bpd,hde->bphe", x, W_K) for name, x in parts.items()}
    terms = {f"{a}_{b}": torch.einsum("bqhe,bkhe->bhqk", q[a], k[b]) * scale for a in parts for b in parts}
    batch, pos = next(iter(parts.values())).shape[:2]
    n_heads, d_head = W_Q.shape[0], W_Q.shape[2]
    bq = b_Q.expand(batch, pos, n_heads, d_head)  # a [head, d_head] bias is the same at every position
    bk = b_K.expand(batch, pos, n_heads, d_head)
    q_all, k_all = sum(q.values()), sum(k.values())
    terms["bias"] = (
        torch.einsum("bqhe,bkhe->bhqk", bq, k_all)
        + torch.einsum("bqhe,bkhe->bhqk", q_all, bk)
        + torch.einsum("bqhe,bkhe->bhqk", bq, bk)
    ) * scale
    return terms


@dataclass
class ScoreDecomposition:
    """Layer 0's scores and their exact split (see the module docstring for the definitions)."""

    terms: dict[str, Float[Tensor, "batch head query key"]]
    scores: Float[Tensor, "batch head query key"]  # blocks.0.attn.hook_attn_scores of the same forward
    pattern: Float[Tensor, "batch head query key"]  # blocks.0.attn.hook_pattern
    frozen_scale: bool  # True for pre-LN models: exact given the LayerNorm scale of this forward

    def total(self) -> Float[Tensor, "batch head query key"]:
        return sum(self.terms[name] for name in SCORE_TERMS)

    def max_abs_error(self) -> float:
        """Largest |Σ terms − hook_attn_scores| over every entry."""
        return float((self.total() - self.scores).abs().max())


LAYER0_HOOKS: tuple[str, ...] = (
    "hook_embed",
    "hook_pos_embed",
    "blocks.0.ln1.hook_scale",
    "blocks.0.attn.hook_attn_scores",
    "blocks.0.attn.hook_pattern",
)


@torch.no_grad()
def decompose_layer0_scores(
    model: HookedReverseEncoder, tokens: Int[Tensor, "batch pos"]
) -> ScoreDecomposition:
    """Split layer 0's attention scores into SCORE_TERMS, from one cached forward of ``model``."""
    tokens = model.validate_tokens(tokens)
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in LAYER0_HOOKS)
    return decompose_from_cache(model, cache)


def decompose_from_cache(model: HookedReverseEncoder, cache: Mapping[str, Tensor]) -> ScoreDecomposition:
    """:func:`decompose_layer0_scores` from a cache that holds every hook in ``LAYER0_HOOKS``."""
    available = set(cache.keys())
    missing = [name for name in LAYER0_HOOKS if name not in available]
    if missing:
        raise ValueError(f"cache lacks the hooks {missing} needed to split layer 0's scores")
    attn = model.blocks[0].attn
    W_Q, W_K, b_Q, b_K = attn.W_Q.detach(), attn.W_K.detach(), attn.b_Q.detach(), attn.b_K.detach()
    tok, pos = cache["hook_embed"], cache["hook_pos_embed"]
    frozen = model.cfg.normalization == "pre"
    if frozen:
        ln = model.blocks[0].ln1
        scale = cache["blocks.0.ln1.hook_scale"]  # [batch, pos, 1], frozen at its forward value
        w, b = ln.w.detach(), ln.b.detach()

        def through_ln(x: Tensor) -> Tensor:
            return (x - x.mean(-1, keepdim=True)) / scale * w

        tok, pos = through_ln(tok), through_ln(pos)
        # LN1's bias is a constant input vector: it acts as an extra query/key bias.
        b_Q = b_Q + torch.einsum("d,hde->he", b, W_Q)
        b_K = b_K + torch.einsum("d,hde->he", b, W_K)
    terms = bilinear_score_terms({"tok": tok, "pos": pos}, W_Q, W_K, b_Q, b_K)
    return ScoreDecomposition(
        terms={name: terms[name] for name in SCORE_TERMS},
        scores=cache["blocks.0.attn.hook_attn_scores"],
        pattern=cache["blocks.0.attn.hook_pattern"],
        frozen_scale=frozen,
    )


def positional_scores(model: HookedReverseEncoder, n_pos: int) -> Float[Tensor, "head query key"]:
    """Layer 0's position–position scores ``P W_Q W_Kᵀ Pᵀ / √d_head`` through the FactoredMatrix.

    Equals the ``pos_pos`` term of :func:`decompose_layer0_scores` for post-LN models; for pre-LN
    models the term depends on each sequence's LayerNorm scale, so this raises ``ValueError``.
    """
    if model.cfg.normalization != "post":
        raise ValueError(
            "positional_scores is defined for post-LN models only: in a pre-LN model the position term "
            "depends on each sequence's LayerNorm scale (use decompose_layer0_scores)"
        )
    P = positional_encodings(model, n_pos)
    return (P @ qk_circuit(model, 0) @ P.T).AB / math.sqrt(model.cfg.d_head)


def cosine_by_offset(vectors: Float[Tensor, "... pos d"]) -> Float[Tensor, "... offset"]:
    """Mean cosine similarity of rows ``d`` apart: ``c[d] = mean_j cos(v_j, v_{j+d})`` for d = 0..pos−1.

    ``c[0]`` is 1 for non-zero rows; zero rows give cosine 0 (not NaN).
    """
    if vectors.ndim < 2 or vectors.shape[-2] < 1:
        raise ValueError(f"vectors must have shape [..., pos, d] with pos >= 1, got {tuple(vectors.shape)}")
    unit = vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    sim = unit @ unit.transpose(-1, -2)  # [..., pos, pos]
    n = vectors.shape[-2]
    return torch.stack([torch.diagonal(sim, offset=d, dim1=-2, dim2=-1).mean(-1) for d in range(n)], dim=-1)


def flip_score_gap(scores: Float[Tensor, "*batch query key"], offset: int) -> Float[Tensor, "*batch"]:
    """Mean over queries i of ``S[i, N−1−i] − S[i, N−1−i+offset]`` (queries where that key exists).

    With a softmax over keys, ``exp(gap)`` is the ratio of attention on the flipped key to attention
    on the key ``offset`` places away, for the same query.
    """
    n_q, n_k = scores.shape[-2:]
    if n_q != n_k:
        raise ValueError(f"scores must be square over (query, key), got {n_q} x {n_k}")
    if not is_int(offset) or int(offset) == 0 or abs(int(offset)) >= n_k:
        raise ValueError(f"offset must be a non-zero integer with |offset| < {n_k}, got {offset!r}")
    queries = torch.arange(n_q, device=scores.device)
    flipped = n_k - 1 - queries
    other = flipped + offset
    valid = (other >= 0) & (other < n_k)
    q, f, o = queries[valid], flipped[valid], other[valid]
    return (scores[..., q, f] - scores[..., q, o]).mean(-1)


@dataclass
class SwapEffect:
    """Per (sequence, query i, offset o): what the prediction at i did when key N−1−i+o changed digit."""

    offsets: tuple[int, ...]
    valid: Bool[Tensor, "batch query offset"]  # the key N−1−i+o exists
    follows: Bool[Tensor, "batch query offset"]  # prediction at i == the new digit
    changed: Bool[Tensor, "batch query offset"]  # prediction at i != the prediction before the swap
    # log p(t_{N−1−i}) at i before the swap minus after it (nats; 0 where not valid): how much the
    # model's belief in the original answer drops, a graded view where the argmax does not move.
    target_logprob_drop: Float[Tensor, "batch query offset"]
    replacement: Int[Tensor, "batch query offset"]  # the new digit (−1 where not valid)


@torch.no_grad()
def swap_effect(
    model: HookedReverseEncoder,
    tokens: Int[Tensor, "batch pos"],
    offsets: Sequence[int] = (-1, 0, 1),
    generator: torch.Generator | None = None,
    chunk_size: int = 2048,
) -> SwapEffect:
    """Change the digit at key j = N−1−i+o, one (sequence, i, o) at a time, and watch position i.

    The new digit is drawn uniformly from the digits that differ from the old one at j and, for
    o ≠ 0, also from the target digit t_{N−1−i}, so a prediction that "follows" the new digit can
    only do so because the model read key j (for o = 0 a perfect reverser follows every time; for a
    neighbour, it never does). The head after attention is nonlinear, so this is measured directly
    rather than read off the OV circuit. Forward passes go in chunks of ``chunk_size`` sequences.
    """
    tokens = model.validate_tokens(tokens)
    offsets = tuple(int(o) for o in offsets)
    batch, n = tokens.shape
    n_vocab = model.cfg.d_vocab
    if not offsets or any(abs(o) >= n for o in offsets):
        raise ValueError(f"offsets must be a non-empty list of integers with |o| < {n}, got {offsets}")
    if n_vocab < (3 if any(offsets) else 2):
        raise ValueError(f"a swap needs at least {3 if any(offsets) else 2} digits, the model has {n_vocab}")
    if not is_int(chunk_size) or int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    device = tokens.device
    query = torch.arange(n, device=device)
    offset = torch.tensor(offsets, device=device)
    flipped = n - 1 - query
    key = flipped.unsqueeze(1) + offset.unsqueeze(0)  # [query, offset]
    valid = ((key >= 0) & (key < n)).unsqueeze(0).expand(batch, n, len(offsets))
    key = key.clamp(0, n - 1)
    old = tokens[:, key]  # [batch, query, offset]
    target = tokens[:, flipped].unsqueeze(-1).expand_as(old)
    digits = torch.arange(n_vocab, device=device)
    forbidden = digits == old.unsqueeze(-1)
    forbidden |= (digits == target.unsqueeze(-1)) & (offset != 0).view(1, 1, -1, 1)
    # Uniform draw among the allowed digits: argmax of uniform noise with the forbidden ones masked.
    noise = torch.rand(*forbidden.shape, generator=generator).to(device)
    replacement = noise.masked_fill(forbidden, -1.0).argmax(-1)

    base_logp = model(tokens).log_softmax(-1)  # [batch, pos, vocab]
    baseline = base_logp.argmax(-1)
    answer = tokens.flip(-1)  # t_{N−1−i} at position i
    base_answer = base_logp.gather(-1, answer.unsqueeze(-1)).squeeze(-1)  # [batch, pos]
    follows = torch.zeros_like(valid)
    changed = torch.zeros_like(valid)
    drop = torch.zeros(valid.shape, dtype=base_logp.dtype, device=device)
    b_idx, q_idx, o_idx = valid.nonzero(as_tuple=True)
    for start in range(0, len(b_idx), chunk_size):
        b, q, o = (t[start : start + chunk_size] for t in (b_idx, q_idx, o_idx))
        swapped = tokens[b].clone()
        rows = torch.arange(len(b), device=device)
        swapped[rows, key[q, o]] = replacement[b, q, o]
        logp = model(swapped)[rows, q].log_softmax(-1)  # [chunk, vocab]
        prediction = logp.argmax(-1)
        follows[b, q, o] = prediction == replacement[b, q, o]
        changed[b, q, o] = prediction != baseline[b, q]
        drop[b, q, o] = base_answer[b, q] - logp.gather(-1, answer[b, q].unsqueeze(-1)).squeeze(-1)
    return SwapEffect(
        offsets=offsets,
        valid=valid.clone(),
        follows=follows,
        changed=changed,
        target_logprob_drop=drop,
        replacement=replacement.masked_fill(~valid, -1),
    )
