"""What the certificate reads from a model: the support check and the cost of brute force."""

from __future__ import annotations

from typing import Any

import torch

from interp.certificate.result import CertificateUnsupported


def check_supported(model: Any, seq_len: int | None) -> int:
    """The sequence length to certify (``seq_len`` or the model's ``n_ctx``), after checking that the
    model is one the certificate covers; else :class:`CertificateUnsupported` with one line saying why.

    Covered: one layer (any heads, d_model, C), post- or pre-LayerNorm, sinusoidal, learned or no
    positional encoding, in eval mode (dropout off). With two or more layers the keys seen by the last
    layer mix every position, so the per-(position, digit) independence the proof rests on fails.
    """
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(model, "blocks"):
        raise CertificateUnsupported(
            f"certify needs a models.HookedReverseEncoder, got {type(model).__name__}"
        )
    if cfg.n_layers != 1:
        raise CertificateUnsupported(
            f"the certificate covers 1-layer models only; this model has {cfg.n_layers} layers, and beyond "
            "the first layer a key depends on every position, not on its own (position, digit) alone"
        )
    if any(module.training for module in model.modules()):
        raise CertificateUnsupported(
            "the model (or one of its modules) is in training mode (dropout active); call model.eval() "
            "before certify"
        )
    # The proof's arithmetic covers the float32 forward on the CPU: another dtype (bf16, float64) or
    # device computes another function, and a forward hook (an ablation left on) changes it.
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.dtype != torch.float32 or tensor.device.type != "cpu":
            raise CertificateUnsupported(
                f"the certificate covers float32 models on the CPU; {name} is {tensor.dtype} on "
                f"{tensor.device} (model.float().cpu() first)"
            )
    hooked = [
        name for name, module in model.named_modules() if module._forward_hooks or module._forward_pre_hooks
    ]
    if hooked:
        raise CertificateUnsupported(
            f"the model has forward hooks ({', '.join(hooked[:3])}{', ...' if len(hooked) > 3 else ''}): "
            "the certificate is about the plain forward; remove them (model.reset_hooks()) first"
        )
    if torch.get_float32_matmul_precision() != "highest":
        raise CertificateUnsupported(
            "torch.get_float32_matmul_precision() is "
            f"{torch.get_float32_matmul_precision()!r}: float32 products may then round through lower "
            "precision, which the proof does not cover; set it to 'highest'"
        )
    n = cfg.n_ctx if seq_len is None else int(seq_len)
    if n < 1:
        raise CertificateUnsupported(f"seq_len must be at least 1, got {n}")
    limit = cfg.max_positions
    if limit is not None and n > limit:
        raise CertificateUnsupported(
            f"seq_len {n} exceeds what the {cfg.positional_embedding} positional encoding supports ({limit})"
        )
    return n


def flops_per_position(cfg: Any, seq_len: int) -> float:
    """Floating-point operations of the model's forward per output position (one layer), counting a
    multiply-add as 2: embedding, q/k/v, scores and the weighted sum over ``seq_len`` keys, softmax,
    o_proj, two LayerNorms, the MLP and the output head (Linear, LayerNorm, ReLU, Linear)."""
    d, m, c, h = cfg.d_model, cfg.d_mlp, cfg.d_vocab, cfg.n_heads
    attention = 2 * d * 3 * d + 2 * seq_len * d * 2 + 5 * seq_len * h + 2 * d * d
    layer_norm = 8 * d
    mlp = 2 * d * m * 2 + m
    head = 2 * d * d + layer_norm + d + 2 * d * c
    return float(2 * d + attention + 2 * layer_norm + mlp + 2 * d + head)
