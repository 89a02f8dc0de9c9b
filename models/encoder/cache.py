"""The activation cache of :class:`models.HookedReverseEncoder`: TransformerLens' ``ActivationCache``
where this architecture allows it, and a one-line refusal saying why where it does not.

Two facts of the tutorial's model decide what works:

- **Post-LayerNorm blocks** (``x = LN1(x + Attn(x))``, ``x = LN2(x + MLP(x))``, the tutorial's): each
  LayerNorm divides the whole sum by a scale computed from that sum, so the residual after a block is
  not the sum of the embeddings and sublayer outputs. ``decompose_resid``, ``get_full_resid_decomposition``,
  ``apply_ln_to_stack`` and ``accumulated_resid(apply_ln=True)`` (and ``apply_ln=True`` of the stacking
  methods) refuse on such a model and point to ``interp.residual.frozen_ln_decomposition``, which is
  exact at the cached input with every LayerNorm scale frozen. On a pre-LN model
  (``normalization="pre"``) they are TransformerLens' own: the components sum to the residual.
- **No unembedding matrix**: the output head is an MLP (Linear → LayerNorm → ReLU → Linear), so logits
  are not linear in the residual. ``logit_attrs`` and ``logit_lens`` refuse on every model.

``accumulated_resid()``'s last entry, ``final_post``, is the residual that enters the output head: the
block output ``blocks.{L-1}.ln2.hook_normalized`` on a post-LN model (TransformerLens' ``resid_post``
would be the sum *before* LN2), ``blocks.{L-1}.hook_resid_post`` on a pre-LN one. A pre-LN model has
no LayerNorm between its last block and the head, so applying "the final LayerNorm" leaves a stack
unchanged.
"""

from __future__ import annotations

from typing import Any

import torch

from models.encoder.transformer_lens_parts import ActivationCache, Slice

NO_UNEMBED = (
    "there is no W_U: the output head is an MLP (Linear -> LayerNorm -> ReLU -> Linear), so logits are not "
    "linear in the residual stream and tokens have no residual directions; measure effects on logits by "
    "patching (transformer_lens.patching, interp.ablation) instead"
)


def post_ln_refusal(method: str) -> str:
    return (
        f"{method}: this model is post-LayerNorm (x = LN(x + Attn(x)), the tutorial's block), so the "
        "residual after a block is not a sum of the embeddings and sublayer outputs (each LayerNorm divides "
        "the whole sum by a scale computed from it); use interp.residual.frozen_ln_decomposition (exact at "
        "this input, LayerNorm scales frozen) or activation patching, or train with --normalization pre"
    )


class ReverseEncoderCache(ActivationCache):
    """``transformer_lens.ActivationCache`` for the reverse-task encoder (see the module docstring)."""

    def __getitem__(self, key: Any) -> Any:
        """TransformerLens' lookup; a name that is not cached is a KeyError that names the closest
        cached hook points ("did you mean ...?") instead of a bare KeyError."""
        try:
            return super().__getitem__(key)
        except KeyError:
            if not isinstance(key, str):
                raise
            import difflib

            names = list(self.keys())
            close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
            if not close:  # a short name ('hook_pattern'): the names that contain it
                close = [n for n in names if key.split(".")[-1] in n][:3]
            if close:
                hint = f"did you mean {' or '.join(repr(c) for c in close)}?"
            else:
                hint = (
                    f"cached names look like {', '.join(repr(n) for n in names[:3])} (cache.keys() lists all)"
                )
            raise KeyError(f"{key!r} is not in the cache ({len(names)} hook points); {hint}") from None

    @property
    def _post_ln(self) -> bool:
        return self.model.cfg.normalization == "post"

    def _refuse_post_ln(self, method: str) -> None:
        if self._post_ln:
            raise ValueError(post_ln_refusal(method))

    def _final(self, layer: int | None) -> bool:
        return layer is None or layer == -1 or layer == self.model.cfg.n_layers

    # --- linear decompositions: pre-LN only ---------------------------------------------------------
    def decompose_resid(self, *args: Any, **kwargs: Any) -> Any:
        self._refuse_post_ln("decompose_resid")
        return super().decompose_resid(*args, **kwargs)

    def get_full_resid_decomposition(self, *args: Any, **kwargs: Any) -> Any:
        self._refuse_post_ln("get_full_resid_decomposition")
        return super().get_full_resid_decomposition(*args, **kwargs)

    def apply_ln_to_stack(
        self,
        residual_stack: torch.Tensor,
        layer: int | None = None,
        mlp_input: bool = False,
        pos_slice: Any = None,
        batch_slice: Any = None,
        has_batch_dim: bool = True,
        recompute_ln: bool = False,
    ) -> torch.Tensor:
        """TransformerLens' cached-scale LayerNorm of a stack, as the input to ``layer`` (pre-LN models;
        the head input, ``layer`` None or n_layers, has no LayerNorm before it: returned unchanged)."""
        self._refuse_post_ln("apply_ln_to_stack")
        if self._final(layer):
            if not isinstance(batch_slice, Slice):
                batch_slice = Slice(batch_slice)
            return batch_slice.apply(residual_stack, dim=1) if has_batch_dim else residual_stack
        return super().apply_ln_to_stack(
            residual_stack, layer, mlp_input, pos_slice, batch_slice, has_batch_dim, recompute_ln
        )

    def accumulated_resid(
        self,
        layer: int | None = None,
        incl_mid: bool = False,
        apply_ln: bool = False,
        pos_slice: Any = None,
        mlp_input: bool = False,
        return_labels: bool = False,
    ) -> Any:
        """The residual stream entering each layer (``l_pre``, ``l_mid`` with ``incl_mid``) and, for
        ``layer`` None or n_layers, ``final_post``: the residual entering the output head —
        ``blocks.{L-1}.ln2.hook_normalized`` (post-LN) or ``blocks.{L-1}.hook_resid_post`` (pre-LN).
        ``apply_ln=True`` is refused on a post-LN model."""
        if apply_ln:
            self._refuse_post_ln("accumulated_resid(apply_ln=True)")
        components, labels = super().accumulated_resid(
            layer, incl_mid, apply_ln, pos_slice, mlp_input, return_labels=True
        )
        if self._post_ln and labels and labels[-1] == "final_post":
            slicer = pos_slice if isinstance(pos_slice, Slice) else Slice(pos_slice)
            last = self[f"blocks.{self.model.cfg.n_layers - 1}.ln2.hook_normalized"]
            components[-1] = slicer.apply(last, dim=-2)
        return (components, labels) if return_labels else components

    def stack_head_results(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("apply_ln"):
            self._refuse_post_ln("stack_head_results(apply_ln=True)")
        return super().stack_head_results(*args, **kwargs)

    def stack_neuron_results(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("apply_ln"):
            self._refuse_post_ln("stack_neuron_results(apply_ln=True)")
        return super().stack_neuron_results(*args, **kwargs)

    # --- no unembedding -------------------------------------------------------------------------------
    def logit_attrs(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError(f"logit_attrs: {NO_UNEMBED}")

    def logit_lens(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError(f"logit_lens: {NO_UNEMBED}")
