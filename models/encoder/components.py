"""The encoder's building blocks, each a plain ``nn.Module`` whose activations pass through
TransformerLens ``HookPoint``s (names follow TransformerLens' HookedEncoder).

Parameters keep the tutorial's layout (a torch ``Linear`` per tutorial layer, the fused per-head
``qkv_proj``) so that importing the tutorial's checkpoints is a renaming, and the TransformerLens
weight views (``W_Q`` [head, d_model, d_head], ``W_O`` [head, d_head, d_model], ...) are derived
from them on demand, so the two can never disagree.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from models.encoder.config import EncoderConfig
from models.encoder.transformer_lens_parts import HookPoint


def sinusoidal_table(max_len: int, d_model: int) -> Float[Tensor, "max_len d_model"]:
    """The tutorial's table: PE[p, 2k] = sin(p·10000^(−2k/d)), PE[p, 2k+1] = cos(p·10000^(−2k/d))."""
    position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)[:, : d_model // 2]
    return pe


class Embed(nn.Module):
    """``Linear(C → d)(one_hot(tokens))``, the tutorial's ``input_net`` (dropout, then Linear)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.input_dropout = nn.Dropout(cfg.input_dropout)
        self.proj = nn.Linear(cfg.d_vocab, cfg.d_model)

    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return self.proj.weight.T

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        if self.training and self.cfg.input_dropout > 0:
            # Dropout acts on the one-hot input in the tutorial, so build it explicitly.
            one_hot = F.one_hot(tokens, self.cfg.d_vocab).to(self.proj.weight.dtype)
            return self.proj(self.input_dropout(one_hot))
        # Same function as Linear(one_hot(tokens)): a row lookup of the weight's transpose.
        return F.embedding(tokens, self.proj.weight.T) + self.proj.bias


class PosEmbed(nn.Module):
    """Positional encoding added to the token embedding: ``P[p]`` for each position p.

    TransformerLens' ``W_pos`` is ``[n_ctx, d_model]``, the rows of the training length; ``table`` holds
    every row the encoding defines (sinusoidal: ``pe_max_len`` rows, as the tutorial's buffer; learned:
    ``n_ctx``; none: zero rows), which other lengths read. The activation is always a fresh tensor,
    never a view of ``table``: a hook that edits it in place must not edit the model.
    """

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.positional_embedding == "sinusoidal":
            # Not saved with the weights (persistent=False), exactly like the tutorial's buffer.
            self.register_buffer("table", sinusoidal_table(cfg.pe_max_len, cfg.d_model), persistent=False)
        elif cfg.positional_embedding == "learned":
            self.W_pos = nn.Parameter(torch.randn(cfg.n_ctx, cfg.d_model) * 0.02)
        else:
            self.register_buffer("table", torch.zeros(0, cfg.d_model), persistent=False)

    def __getattr__(self, name: str) -> Tensor:
        # ``W_pos`` is the parameter of a learned encoding and the first n_ctx rows of the table
        # otherwise (zeros without an encoding); ``table`` of a learned encoding is its parameter.
        if name == "W_pos" and "table" in self._buffers:
            table = self._buffers["table"]
            if self.cfg.positional_embedding == "none":
                return table.new_zeros(self.cfg.n_ctx, self.cfg.d_model)
            return table[: self.cfg.n_ctx]
        if name == "table" and "W_pos" in self._parameters:
            return self._parameters["W_pos"]
        return super().__getattr__(name)

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        batch, pos = tokens.shape
        if self.cfg.positional_embedding == "none":
            return torch.zeros(batch, pos, self.cfg.d_model, device=tokens.device)
        return self.table[:pos].unsqueeze(0).repeat(batch, 1, 1)  # a copy: see the class docstring


class LayerNorm(nn.Module):
    """LayerNorm with the tutorial's affine parameters and TransformerLens' two hook points."""

    def __init__(self, cfg: EncoderConfig, length: int | None = None):
        super().__init__()
        self.eps = cfg.layer_norm_eps
        length = cfg.d_model if length is None else length
        self.w = nn.Parameter(torch.ones(length))
        self.b = nn.Parameter(torch.zeros(length))
        self.hook_scale = HookPoint()  # [batch, pos, 1]
        self.hook_normalized = HookPoint()  # [batch, pos, length]

    def forward(self, x: Float[Tensor, "batch pos d"]) -> Float[Tensor, "batch pos d"]:
        x = x - x.mean(-1, keepdim=True)  # a new tensor: the input stays as its hook saw it
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        if torch.is_grad_enabled():  # backward needs x and x / scale
            return self.hook_normalized(x / scale * self.w + self.b)
        # Without autograd the same operations run in place on x (no hook has seen it): the same bits,
        # two fewer tensors of the input's size, about half of LayerNorm's time in an analysis.
        return self.hook_normalized(x.div_(scale).mul_(self.w).add_(self.b))


class Attention(nn.Module):
    """Multi-head self-attention with the tutorial's fused per-head ``qkv_proj``.

    ``qkv_proj`` maps d_model → 3·d_model; its output rows are grouped by head, and inside each head
    into q, k, v (the tutorial reshapes to [batch, pos, head, 3·d_head] and chunks the last axis).
    """

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.qkv_proj = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.o_proj = nn.Linear(cfg.d_model, cfg.d_model)
        # The tutorial's initialisation (Xavier weights, zero biases).
        nn.init.xavier_uniform_(self.qkv_proj.weight)
        nn.init.zeros_(self.qkv_proj.bias)
        nn.init.xavier_uniform_(self.o_proj.weight)
        nn.init.zeros_(self.o_proj.bias)
        for name in ("q", "k", "v", "attn_scores", "pattern", "z", "result"):
            setattr(self, f"hook_{name}", HookPoint())
        # Per-head copies of the block's input [batch, pos, head, d_model], only with
        # cfg.use_split_qkv_input (TransformerLens' direct-path patching adds to one head's copy).
        for name in ("q_input", "k_input", "v_input"):
            setattr(self, f"hook_{name}", HookPoint())

    # TransformerLens weight views, derived from the fused layout --------------------------------
    def _qkv_weight(self, i: int) -> Float[Tensor, "head d_model d_head"]:
        h, dh, d = self.cfg.n_heads, self.cfg.d_head, self.cfg.d_model
        return self.qkv_proj.weight.view(h, 3, dh, d)[:, i].transpose(-1, -2)

    def _qkv_bias(self, i: int) -> Float[Tensor, "head d_head"]:
        return self.qkv_proj.bias.view(self.cfg.n_heads, 3, self.cfg.d_head)[:, i]

    W_Q = property(lambda self: self._qkv_weight(0))
    W_K = property(lambda self: self._qkv_weight(1))
    W_V = property(lambda self: self._qkv_weight(2))
    b_Q = property(lambda self: self._qkv_bias(0))
    b_K = property(lambda self: self._qkv_bias(1))
    b_V = property(lambda self: self._qkv_bias(2))

    @property
    def W_O(self) -> Float[Tensor, "head d_head d_model"]:
        return self.o_proj.weight.T.reshape(self.cfg.n_heads, self.cfg.d_head, self.cfg.d_model)

    @property
    def b_O(self) -> Float[Tensor, " d_model"]:
        return self.o_proj.bias

    def forward(
        self,
        x: Float[Tensor, "batch pos d_model"] | Float[Tensor, "batch pos head d_model"],
        key_input: Float[Tensor, "batch pos head d_model"] | None = None,
        value_input: Float[Tensor, "batch pos head d_model"] | None = None,
    ) -> Float[Tensor, "batch pos d_model"]:
        """Attention over ``x`` [batch, pos, d_model]; with per-head inputs (``key_input`` and
        ``value_input`` given, ``x`` the query input), each [batch, pos, head, d_model] and head h's q, k,
        v computed from its own copy."""
        batch, pos = x.shape[:2]
        h, dh = self.cfg.n_heads, self.cfg.d_head
        if key_input is None:
            qkv = self.qkv_proj(x).view(batch, pos, h, 3, dh)
            q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :]
        else:
            q, k, v = (
                torch.einsum("bphd,hde->bphe", inp, w) + b
                for inp, w, b in (
                    (x, self.W_Q, self.b_Q),
                    (key_input, self.W_K, self.b_K),
                    (value_input, self.W_V, self.b_V),
                )
            )
        q = self.hook_q(q)  # [batch, pos, head, d_head]
        k = self.hook_k(k)
        v = self.hook_v(v)
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(dh)
        scores = self.hook_attn_scores(scores)  # [batch, head, query_pos, key_pos]
        pattern = self.hook_pattern(scores.softmax(dim=-1))
        z = self.hook_z(torch.einsum("bhqk,bkhe->bqhe", pattern, v))  # [batch, pos, head, d_head]
        if self.cfg.use_attn_result:
            result = self.hook_result(torch.einsum("bqhe,hed->bqhd", z, self.W_O))
            return result.sum(dim=2) + self.o_proj.bias
        return self.o_proj(z.reshape(batch, pos, h * dh))


class MLP(nn.Module):
    """The tutorial's ``linear_net``: Linear(d → d_mlp) → (dropout) → ReLU → Linear(d_mlp → d).

    TransformerLens views: ``W_in`` [d_model, d_mlp], ``b_in``, ``W_out`` [d_mlp, d_model], ``b_out``.
    """

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.fc_in = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc_out = nn.Linear(cfg.d_mlp, cfg.d_model)
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    W_in = property(lambda self: self.fc_in.weight.T)
    b_in = property(lambda self: self.fc_in.bias)
    W_out = property(lambda self: self.fc_out.weight.T)
    b_out = property(lambda self: self.fc_out.bias)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        pre = self.hook_pre(self.fc_in(x))
        post = self.hook_post(F.relu(self.dropout(pre)))
        return self.fc_out(post)


SPLIT_INPUT_POST_LN = (
    "use_split_qkv_input needs a pre-LN model: in this post-LayerNorm model (x = LN(x + Attn(x))) a head's "
    "output reaches later heads only through LayerNorm, so adding it to one head's input is not the "
    "direct path A -> B (TransformerLens' direct-path patching assumes pre-LN blocks)"
)


class TransformerBlock(nn.Module):
    """One encoder block. ``post`` (tutorial): x = LN1(x + Attn(x)); x = LN2(x + MLP(x)).
    ``pre``: x = x + Attn(LN1(x)); x = x + MLP(LN2(x)).

    Hook placement follows TransformerLens' BERT block: ``hook_resid_mid`` = resid_pre + attn_out and
    ``hook_resid_post`` = the sum before LN2 in the post-LN case; the block's output is
    ``ln2.hook_normalized`` there.
    """

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.attn = Attention(cfg)
        self.ln1 = LayerNorm(cfg)
        self.mlp = MLP(cfg)
        self.ln2 = LayerNorm(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        for name in ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"):
            setattr(self, f"hook_{name}", HookPoint())

    def forward(self, resid_pre: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        resid_pre = self.hook_resid_pre(resid_pre)
        if self.cfg.normalization == "post":
            if self.cfg.use_split_qkv_input:
                raise ValueError(SPLIT_INPUT_POST_LN)
            attn_out = self.hook_attn_out(self.attn(resid_pre))
            resid_mid = self.hook_resid_mid(resid_pre + self.dropout(attn_out))
            normalized_mid = self.ln1(resid_mid)
            mlp_out = self.hook_mlp_out(self.mlp(normalized_mid))
            resid_post = self.hook_resid_post(normalized_mid + self.dropout(mlp_out))
            return self.ln2(resid_post)
        if self.cfg.use_split_qkv_input:  # one copy of the input per head and per q, k, v
            copies = resid_pre.unsqueeze(2).expand(-1, -1, self.cfg.n_heads, -1)  # [batch, pos, head, d]
            a = self.attn
            inputs = [hook(copies.clone()) for hook in (a.hook_q_input, a.hook_k_input, a.hook_v_input)]
            attn_out = self.attn(*(self.ln1(x) for x in inputs))
        else:
            attn_out = self.attn(self.ln1(resid_pre))
        attn_out = self.hook_attn_out(attn_out)
        resid_mid = self.hook_resid_mid(resid_pre + self.dropout(attn_out))
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid_mid)))
        return self.hook_resid_post(resid_mid + self.dropout(mlp_out))


class OutputHead(nn.Module):
    """The tutorial's ``output_net``: Linear(d → d) → LayerNorm → ReLU → (dropout) → Linear(d → C)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.fc_in = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln = LayerNorm(cfg)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc_out = nn.Linear(cfg.d_model, cfg.d_vocab)
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab"]:
        pre = self.hook_pre(self.fc_in(x))
        post = self.hook_post(F.relu(self.ln(pre)))
        return self.fc_out(self.dropout(post))
