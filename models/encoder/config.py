"""Configuration of the reverse-task encoder.

Field names follow TransformerLens' ``HookedTransformerConfig`` where a counterpart exists
(``n_layers``, ``n_heads``, ``d_model``, ``d_head``, ``d_mlp``, ``d_vocab``, ``n_ctx``, ``device``,
``use_attn_result``), so that TransformerLens utilities that only read those attributes (the
``transformer_lens.patching`` sweeps, ``ActivationCache``) work on our model unmodified.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from machine.scalars import as_float, as_int

PositionalEmbedding = Literal["sinusoidal", "learned", "none"]
Normalization = Literal["post", "pre"]

POSITIONAL_EMBEDDINGS: tuple[str, ...] = ("sinusoidal", "learned", "none")
NORMALIZATIONS: tuple[str, ...] = ("post", "pre")


MAX_ELEMENTS = 1 << 30  # a larger model is a corrupt config, not a research model


@dataclass
class EncoderConfig:
    """Sizes and switches of :class:`models.HookedReverseEncoder`.

    The defaults are the tutorial's reverse-task model: 10 digit categories, sequences of 16,
    d_model 32, one head, one post-LayerNorm layer, sinusoidal positional encoding, no dropout.
    """

    n_layers: int = 1
    n_heads: int = 1
    d_model: int = 32
    d_vocab: int = 10
    n_ctx: int = 16
    d_mlp: int | None = None  # None -> 2 * d_model, as in the tutorial
    positional_embedding: PositionalEmbedding = "sinusoidal"
    normalization: Normalization = "post"
    dropout: float = 0.0
    input_dropout: float = 0.0
    layer_norm_eps: float = 1e-5  # torch's default; the tutorial's Flax checkpoints use 1e-6
    pe_max_len: int = 5000  # rows of the sinusoidal table, as in the tutorial
    use_attn_result: bool = False  # compute blocks.l.attn.hook_result (per-head outputs)
    device: str = "cpu"
    d_head: int = field(init=False)

    def __post_init__(self) -> None:
        for name in ("n_layers", "n_heads", "d_model", "d_vocab", "n_ctx", "pe_max_len"):
            setattr(self, name, as_int(getattr(self, name), f"EncoderConfig.{name}", minimum=1))
        if self.positional_embedding == "sinusoidal" and self.n_ctx > self.pe_max_len:
            raise ValueError(
                f"EncoderConfig: n_ctx={self.n_ctx} exceeds the sinusoidal table "
                f"(pe_max_len={self.pe_max_len})"
            )
        if self.d_model % self.n_heads:
            raise ValueError(
                f"EncoderConfig: d_model={self.d_model} is not divisible by n_heads={self.n_heads}"
            )
        if self.d_mlp is None:
            self.d_mlp = 2 * self.d_model
        else:
            self.d_mlp = as_int(self.d_mlp, "EncoderConfig.d_mlp", minimum=1)
        if self.positional_embedding not in POSITIONAL_EMBEDDINGS:
            raise ValueError(
                f"EncoderConfig.positional_embedding must be one of {POSITIONAL_EMBEDDINGS}, "
                f"got {self.positional_embedding!r}"
            )
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"EncoderConfig.normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}"
            )
        for name in ("dropout", "input_dropout"):
            value = as_float(getattr(self, name), f"EncoderConfig.{name}")
            if not 0.0 <= value < 1.0:
                raise ValueError(f"EncoderConfig.{name} must be in [0, 1), got {value!r}")
            setattr(self, name, value)
        self.layer_norm_eps = as_float(self.layer_norm_eps, "EncoderConfig.layer_norm_eps")
        if not self.layer_norm_eps > 0:
            raise ValueError(f"EncoderConfig.layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        self.d_head = self.d_model // self.n_heads
        # A run-time switch, not part of the saved configuration (so not a dataclass field): per-head
        # copies of the attention input, TransformerLens' use_split_qkv_input (pre-LN models only).
        self.use_split_qkv_input = False
        if self.num_elements() > MAX_ELEMENTS:
            raise ValueError(
                f"EncoderConfig: {self.num_elements():,} weights and table entries exceed the "
                f"{MAX_ELEMENTS:,} this toolkit builds (4 GiB of float32); is the config corrupt?"
            )

    def num_elements(self) -> int:
        """Parameters plus positional-table entries: what building the model allocates."""
        d, m = self.d_model, int(self.d_mlp or 2 * self.d_model)
        per_layer = 4 * d * d + 4 * d + 2 * d * m + m + d + 4 * d  # qkv + out, MLP, two LayerNorms
        head = d * d + d + 2 * d + d * self.d_vocab + self.d_vocab
        table = {"sinusoidal": self.pe_max_len, "learned": self.n_ctx}.get(self.positional_embedding, 0)
        return self.d_vocab * d + d + self.n_layers * per_layer + head + table * d

    # TransformerLens reads these; they are fixed by this architecture, so derived, never stored.
    @property
    def n_key_value_heads(self) -> None:
        """No grouped-query attention: every head has its own keys and values."""
        return None

    @property
    def attn_only(self) -> bool:
        """Every block has an MLP."""
        return False

    @property
    def normalization_type(self) -> str:
        """LayerNorm with weight and bias (where it sits, before or after the sublayer, is
        ``normalization``)."""
        return "LN"

    @property
    def max_positions(self) -> int | None:
        """Longest sequence the positional encoding supports (None: no limit)."""
        if self.positional_embedding == "sinusoidal":
            return self.pe_max_len
        if self.positional_embedding == "learned":
            return self.n_ctx
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (``d_head`` included for readers; it is ignored on the way in)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        """Build from :meth:`to_dict` output; unknown keys are an error, derived ones ignored."""
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - known - {"d_head"})
        if unknown:
            raise ValueError(f"EncoderConfig: unknown fields {unknown}")
        return cls(**{k: v for k, v in data.items() if k in known})


class ConfigView(dict):
    """A Hugging Face-style, read-only view of an :class:`EncoderConfig`, as ``model.config``: what
    pyvene's ``IntervenableModel`` reads of a model (``config.to_dict()`` and attribute access). The
    fields of ``to_dict`` plus the Hugging Face names of the sizes: ``hidden_size`` = d_model,
    ``num_attention_heads`` = n_heads, ``num_hidden_layers`` = n_layers, ``vocab_size`` = d_vocab,
    ``n_positions`` = n_ctx. ``model.cfg`` stays the configuration; changing this view changes nothing."""

    @classmethod
    def of(cls, cfg: EncoderConfig) -> ConfigView:
        d = cfg.to_dict()
        sizes = {
            "hidden_size": d["d_model"],
            "num_attention_heads": d["n_heads"],
            "num_hidden_layers": d["n_layers"],
            "vocab_size": d["d_vocab"],
            "n_positions": d["n_ctx"],
        }
        return cls({**d, **sizes})

    def to_dict(self) -> dict[str, Any]:
        return dict(self)

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"model.config has no field {name!r} (the configuration is model.cfg)"
            ) from None
