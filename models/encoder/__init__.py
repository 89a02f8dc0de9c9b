"""The encoder itself: what the model computes, and nothing about files or training.

- ``config``                 :class:`EncoderConfig`, the sizes and switches (TransformerLens field names)
- ``components``             the blocks: embedding, positional encoding, attention, MLP, LayerNorm, head
- ``hooked``                 :class:`HookedReverseEncoder`, the root module whose activations are HookPoints
- ``transformer_lens_parts`` TransformerLens' classes, imported without its heavy package ``__init__``
- ``cache``                  the activation cache (TransformerLens' ``ActivationCache`` where the
                             architecture allows)
- ``stacked``                the forward of many encoders at once (a leading model axis, for ensembles)
- ``data``                   the reverse task's sequences (uniform random digits and their reversal)

``from models.encoder import HookedReverseEncoder, EncoderConfig`` works; the names are imported on first
use (TransformerLens takes seconds to import, ``models.encoder.config`` stays light).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {"EncoderConfig": "models.encoder.config", "HookedReverseEncoder": "models.encoder.hooked"}
__all__ = ["EncoderConfig", "HookedReverseEncoder"]

if TYPE_CHECKING:
    from models.encoder.config import EncoderConfig
    from models.encoder.hooked import HookedReverseEncoder


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models.encoder' has no attribute {name!r}")
