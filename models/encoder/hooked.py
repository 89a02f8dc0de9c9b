"""The tutorial's reverse-task encoder as a TransformerLens ``HookedRootModule``.

tokens [batch, pos] → one-hot → Linear → + positional encoding → blocks → output head → logits
[batch, pos, d_vocab]. Every intermediate tensor passes through a named ``HookPoint``; the hook
names are the public API of the internals (see docs/guide/model.md).
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from models.encoder.cache import NO_UNEMBED, ReverseEncoderCache
from models.encoder.components import SPLIT_INPUT_POST_LN, Embed, OutputHead, PosEmbed, TransformerBlock
from models.encoder.config import ConfigView, EncoderConfig
from models.encoder.transformer_lens_parts import FactoredMatrix, HookedRootModule, HookPoint

ReturnType = Literal["logits", "loss", "both", None]
RETURN_TYPES: tuple[str | None, ...] = ("logits", "loss", "both", None)


class HookedReverseEncoder(HookedRootModule):
    """Encoder that learns to reverse a digit sequence; target at position i is token N−1−i."""

    def __init__(self, cfg: EncoderConfig | None = None, **overrides: Any):
        super().__init__()
        if cfg is None:
            cfg = EncoderConfig(**overrides)
        elif overrides:
            raise TypeError("pass either an EncoderConfig or keyword overrides, not both")
        self.cfg = cfg
        self.embed = Embed(cfg)
        self.pos_embed = PosEmbed(cfg)
        self.hook_embed = HookPoint()  # token embedding, bias included
        self.hook_pos_embed = HookPoint()  # positional encoding, broadcast over the batch
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.head = OutputHead(cfg)
        self.to(cfg.device)
        self.setup()

    # ---------------------------------------------------------------------------------------------
    def validate_tokens(self, tokens: Any) -> Int[Tensor, "batch pos"]:
        """Check tokens before any computation and return them as int64 ``[batch, pos]`` (a single
        sequence ``[pos]`` gets a batch axis); raise ``ValueError`` naming the problem."""
        if not isinstance(tokens, Tensor):
            raise ValueError(f"tokens must be a torch.Tensor of integer ids, got {type(tokens).__name__}")
        if tokens.dtype == torch.bool or tokens.is_floating_point() or tokens.is_complex():
            raise ValueError(f"tokens must have an integer dtype, got {tokens.dtype}")
        if tokens.ndim == 1:
            tokens = tokens.unsqueeze(0)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must have shape [batch, pos], got {tuple(tokens.shape)}")
        if tokens.shape[1] == 0:
            raise ValueError("tokens must hold at least one position, got an empty sequence")
        limit = self.cfg.max_positions
        if limit is not None and tokens.shape[1] > limit:
            raise ValueError(
                f"sequence length {tokens.shape[1]} exceeds what the {self.cfg.positional_embedding} "
                f"positional encoding supports ({limit} positions)"
            )
        if tokens.numel():
            low, high = int(tokens.min()), int(tokens.max())
            if low < 0 or high >= self.cfg.d_vocab:
                bad = low if low < 0 else high
                raise ValueError(f"token id {bad} is outside the vocabulary 0..{self.cfg.d_vocab - 1}")
        # uint8, int16, int32, ... (in range, checked above) become the int64 that F.embedding needs.
        return tokens if tokens.dtype == torch.int64 else tokens.long()

    def forward(
        self,
        tokens: Int[Tensor, "batch pos"],
        return_type: ReturnType = "logits",
        loss_per_token: bool = False,
    ) -> Any:
        """Run the encoder on digit sequences.

        Args:
            tokens: integer ids in 0..d_vocab−1, ``[batch, pos]`` or one sequence ``[pos]``, any integer
                dtype; checked first (:meth:`validate_tokens`), moved to the model's device.
            return_type: ``"logits"`` (default) → logits ``[batch, pos, d_vocab]``; ``"loss"`` → the
                tutorial's loss, cross entropy against the reversed sequence ``tokens.flip(-1)`` over
                every position (a scalar; ``[batch, pos]`` with ``loss_per_token=True``); ``"both"`` →
                ``(logits, loss)``; ``None`` → nothing (for runs whose hooks are what matters).
            loss_per_token: return the loss per position instead of its mean.

        ``run_with_cache(tokens, return_type="loss", incl_bwd=True)`` caches gradients as well, as in
        TransformerLens (attribution patching).
        """
        if return_type not in RETURN_TYPES:
            raise ValueError(f"return_type must be one of {RETURN_TYPES}, got {return_type!r}")
        tokens = self.validate_tokens(tokens)
        if tokens.device != self.embed.proj.weight.device:
            tokens = tokens.to(self.embed.proj.weight.device)
        resid = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        for block in self.blocks:
            resid = block(resid)
        logits = self.head(resid)
        if return_type == "logits":
            return logits
        if return_type is None:
            return None
        loss = self.loss_fn(logits, tokens, per_token=loss_per_token)
        return loss if return_type == "loss" else (logits, loss)

    @staticmethod
    def loss_fn(
        logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"], per_token: bool = False
    ) -> Tensor:
        """Cross entropy against the reversed sequence, over every position (the tutorial's loss)."""
        targets = tokens.flip(-1)
        loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        return loss if per_token else loss.mean()

    # --- hooks and caches (TransformerLens' API, with hook names checked) ---------------------------
    def check_hook_name(self, name: str) -> str:
        """``name`` if it is a hook point of this model, else ``ValueError`` with the closest names."""
        if name not in self.hook_dict:
            close = difflib.get_close_matches(name, list(self.hook_dict), n=1, cutoff=0.8)
            hint = f"; did you mean {close[0]!r}?" if close else " (model.hook_dict lists them all)"
            raise ValueError(f"unknown hook point {name!r}{hint}")
        return name

    def run_with_cache(self, *args: Any, **kwargs: Any) -> tuple[Any, ReverseEncoderCache]:
        """Like TransformerLens' ``run_with_cache``, returning a
        :class:`models.encoder.cache.ReverseEncoderCache` (a ``transformer_lens.ActivationCache`` that
        knows where this model's LayerNorms sit)."""
        out, cache_dict = super().run_with_cache(*args, **kwargs)
        return out, ReverseEncoderCache(
            cache_dict, self, has_batch_dim=not kwargs.get("remove_batch_dim", False)
        )

    def get_caching_hooks(
        self, names_filter: Any = None, *args: Any, **kwargs: Any
    ) -> tuple[dict, list, list]:
        """TransformerLens' caching hooks, after checking the names in a str or list ``names_filter``."""
        names = [names_filter] if isinstance(names_filter, str) else names_filter
        for name in names if isinstance(names, list | tuple) else ():
            if isinstance(name, str):
                self.check_hook_name(name)
        return super().get_caching_hooks(names_filter, *args, **kwargs)

    def add_hook(self, name: Any, hook: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(name, str):
            self.check_hook_name(name)
        super().add_hook(name, hook, *args, **kwargs)

    def _enable_hook_with_name(self, name: str, hook: Any, dir: Any) -> None:  # run_with_hooks, hooks()
        super()._enable_hook_with_name(self.check_hook_name(name), hook, dir)

    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """Compute ``blocks.l.attn.hook_result`` (each head's output, [batch, pos, head, d_model])."""
        self.cfg.use_attn_result = bool(use_attn_result)

    def set_use_split_qkv_input(self, use_split_qkv_input: bool) -> None:
        """Give each head its own copy of the block input at ``blocks.l.attn.hook_q_input|hook_k_input|
        hook_v_input`` [batch, pos, head, d_model] (pre-LN models; TransformerLens' direct-path patching
        needs it). A post-LN model refuses, saying why."""
        if use_split_qkv_input and self.cfg.normalization == "post":
            raise ValueError(SPLIT_INPUT_POST_LN)
        self.cfg.use_split_qkv_input = bool(use_split_qkv_input)

    def remove_all_hook_fns(self, direction="both", including_permanent=False, level=None) -> None:
        """As TransformerLens', but only visits hook points that hold hooks.

        Removing from an empty hook point is a no-op, yet TransformerLens reassigns its lists through
        ``nn.Module.__setattr__`` for every hook point after every ``run_with_cache``; on this small model
        that was most of the cost of caching one activation (see benchmarks/hook_overhead.py).
        """
        for hook_point in self.hook_dict.values():
            if hook_point.fwd_hooks or hook_point.bwd_hooks:
                hook_point.remove_hooks(direction, including_permanent=including_permanent, level=level)

    def to(self, *args: Any, **kwargs: Any) -> HookedReverseEncoder:
        """Move the model and keep ``cfg.device`` true (TransformerLens' patching reads it)."""
        out = super().to(*args, **kwargs)
        device = next((p.device for p in self.parameters()), None)
        if device is not None:
            self.cfg.device = str(device)
        return out

    # TransformerLens-style stacked weights, [layer, head, ...] ----------------------------------
    def _stack(self, name: str) -> Tensor:
        return torch.stack([getattr(block.attn, name) for block in self.blocks])

    W_Q = property(lambda self: self._stack("W_Q"))
    W_K = property(lambda self: self._stack("W_K"))
    W_V = property(lambda self: self._stack("W_V"))
    W_O = property(lambda self: self._stack("W_O"))
    b_Q = property(lambda self: self._stack("b_Q"))
    b_K = property(lambda self: self._stack("b_K"))
    b_V = property(lambda self: self._stack("b_V"))
    b_O = property(lambda self: self._stack("b_O"))

    W_in = property(lambda self: torch.stack([block.mlp.W_in for block in self.blocks]))
    W_out = property(lambda self: torch.stack([block.mlp.W_out for block in self.blocks]))
    b_in = property(lambda self: torch.stack([block.mlp.b_in for block in self.blocks]))
    b_out = property(lambda self: torch.stack([block.mlp.b_out for block in self.blocks]))

    @property
    def QK(self) -> FactoredMatrix:
        """W_Q W_Kᵀ per [layer, head], [d_model, d_model] each (scores before 1/√d_head, biases apart)."""
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def OV(self) -> FactoredMatrix:
        """W_V W_O per [layer, head], [d_model, d_model] each."""
        return FactoredMatrix(self.W_V, self.W_O)

    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return self.embed.W_E

    @property
    def W_pos(self) -> Float[Tensor, "n_ctx d_model"]:
        """The positional encoding of positions 0..n_ctx−1 (all rows: ``pos_embed.table``)."""
        return self.pos_embed.W_pos

    def accumulated_bias(
        self, layer: int, mlp_input: bool = False, include_mlp_biases: bool = True
    ) -> Tensor:
        """Σ of the attention output biases b_O (and MLP output biases b_out) of layers < ``layer``, plus
        layer ``layer``'s b_O with ``mlp_input``: the bias part of a pre-LN residual stream
        (TransformerLens' ``get_full_resid_decomposition`` reads it)."""
        total = torch.zeros(self.cfg.d_model, device=self.b_O.device)
        for block in self.blocks[:layer]:
            total = total + block.attn.b_O + (block.mlp.b_out if include_mlp_biases else 0)
        if mlp_input:
            total = total + self.blocks[layer].attn.b_O
        return total

    # What pyvene reads of a model (docs/guide/transformer-lens.md, "pyvene"): config and device. --------
    @property
    def config(self) -> ConfigView:
        """A Hugging Face-style read-only view of ``cfg`` (:class:`~models.encoder.config.ConfigView`)."""
        return ConfigView.of(self.cfg)

    @property
    def device(self) -> torch.device:
        """The device of the parameters (where inputs must be)."""
        return next(self.parameters()).device

    # There is no unembedding matrix: the output head is an MLP (Linear → LayerNorm → ReLU → Linear).
    def tokens_to_residual_directions(self, tokens: Any) -> Tensor:
        raise ValueError(NO_UNEMBED)

    def __getattr__(self, name: str) -> Any:
        if name in ("W_U", "b_U", "unembed", "ln_final"):
            raise AttributeError(f"{name}: {NO_UNEMBED}")
        return super().__getattr__(name)
