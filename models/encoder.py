"""The tutorial's reverse-task encoder as a TransformerLens ``HookedRootModule``.

tokens [batch, pos] → one-hot → Linear → + positional encoding → blocks → output head → logits
[batch, pos, d_vocab]. Every intermediate tensor passes through a named ``HookPoint``; the hook
names are the public API of the internals (see the README).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens import ActivationCache, HookedRootModule
from transformer_lens.hook_points import HookPoint

from models.components import Embed, OutputHead, PosEmbed, TransformerBlock
from models.config import EncoderConfig


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
        """Check tokens before any computation; raise ``ValueError`` naming the problem."""
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
        return tokens

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
        tokens = self.validate_tokens(tokens)
        if tokens.device != self.embed.proj.weight.device:
            tokens = tokens.to(self.embed.proj.weight.device)
        resid = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        for block in self.blocks:
            resid = block(resid)
        return self.head(resid)

    @staticmethod
    def loss_fn(
        logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"], per_token: bool = False
    ) -> Tensor:
        """Cross entropy against the reversed sequence, over every position (the tutorial's loss)."""
        targets = tokens.flip(-1)
        loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        return loss if per_token else loss.mean()

    def run_with_cache(self, *args: Any, **kwargs: Any) -> tuple[Tensor, ActivationCache]:
        """Like TransformerLens' ``run_with_cache``, returning an ``ActivationCache``."""
        out, cache_dict = super().run_with_cache(*args, **kwargs)
        return out, ActivationCache(cache_dict, self, has_batch_dim=not kwargs.get("remove_batch_dim", False))

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

    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return self.embed.W_E

    @property
    def W_pos(self) -> Tensor:
        return self.pos_embed.W_pos
