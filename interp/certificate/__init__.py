"""Certified accuracy of a 1-layer reverse encoder over all C^N inputs (issue 26).

``certify(model)`` returns a :class:`Certificate`: lower and upper bounds on per-digit and whole-sequence
accuracy over every input, the census of regions proven wrong, re-checked wrong examples, and the
per-(query position, own digit, flipped digit) cell table. Two methods:

* ``"enumeration"`` (:mod:`interp.certificate.enumerate`): run every input through the model's float32
  forward; exact, feasible for small C^N; the ground truth of the tests.
* ``"proof"`` (:mod:`interp.certificate.proof`): branch and bound over cells without evaluating complete
  inputs wholesale; sound for the float32 forward on any x86-64 CPU (see ``Certificate.arithmetic``).

``"auto"`` enumerates when that costs fewer FLOPs than the proof is estimated to (:func:`choose_method`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from interp.certificate.model_parts import check_supported, flops_per_position
from interp.certificate.result import (
    CELL_STATUSES,
    Cell,
    Certificate,
    CertificateUnsupported,
    Region,
    cell_status,
)

METHODS: tuple[str, ...] = ("auto", "proof", "enumeration")


def estimated_proof_flops(cfg: Any, seq_len: int) -> float:
    """A rough estimate of the proof's cost (for ``auto`` only, never a bound): every cell split on the
    two most influential keys (N·C⁴ regions), each about 6·d·(d_mlp + C) bound queries solved over
    N·C key types in ~8 Dinkelbach steps of 4 FLOPs each."""
    c, d = cfg.d_vocab, cfg.d_model
    regions = seq_len * c**4
    queries = 6 * d * (cfg.d_mlp + c) // max(1, d // 4)
    return float(regions * queries * seq_len * c * 8 * 4)


def choose_method(model: Any, seq_len: int) -> str:
    """``enumeration`` when running all C^N inputs costs fewer FLOPs than the estimated proof, else
    ``proof``."""
    cfg = model.cfg
    brute = seq_len * cfg.d_vocab**seq_len * flops_per_position(cfg, seq_len)
    return "enumeration" if brute <= estimated_proof_flops(cfg, seq_len) else "proof"


def certify(
    model: Any,
    seq_len: int | None = None,
    *,
    method: Literal["auto", "proof", "enumeration"] = "auto",
    budget_seconds: float = 600.0,
    max_boxes: int | None = None,
    max_examples: int = 20,
    max_regions: int = 10_000,
    theorems: bool = True,
    batch_size: int = 8192,
    progress: Callable[[dict[str, Any]], None] | None = None,
    seeds: Sequence[Sequence[int]] = (),
) -> Certificate:
    """Certify ``model`` (1 layer, eval mode) over all ``num_categories ** seq_len`` inputs.

    Args:
        seq_len: N (default: the model's ``n_ctx``).
        method: ``"auto"``, ``"proof"`` or ``"enumeration"`` (see the module docstring); the result's
            ``method`` says which ran.
        budget_seconds: wall-clock budget of the proof's branching (regions still undecided when it runs
            out count between the bounds); enumeration ignores it.
        max_boxes: proof only: a deterministic work budget, the number of regions bounded at most (None:
            no limit). Whichever of the two budgets runs out first stops the proof
            (``details["stopped_by"]``: ``"done"``, ``"seconds"`` or ``"max_boxes"``); the same model and
            ``max_boxes`` give the same bounds on one machine whatever its load, and a larger
            ``max_boxes`` never gives looser bounds.
        max_examples: wrong examples listed (each re-checked with the model's forward).
        max_regions: proven-wrong regions listed at most (``regions_complete`` says whether all are).
        theorems: compute the cells' theorem columns (proof method, 1 head).
        batch_size: inputs per forward (enumeration); at most this many regions per bound batch (proof,
            which also caps a batch at ~32 MiB per tensor).
        progress: proof only: called after every batch with ``{"seconds", "boxes", "pending", "right",
            "wrong", "pairs"}`` (pairs proven right / wrong so far); for a CLI's progress line.
        seeds: proof only: inputs suspected wrong (e.g. an adversary's finds); the proof first dives along
            each one to the largest region around it proven wrong, so the census holds them whatever the
            budget (counted once).

    Raises:
        CertificateUnsupported: (a ``ValueError``) the model or request is not covered; one line.
    """
    if method not in METHODS:
        raise CertificateUnsupported(f"method must be one of {METHODS}, got {method!r}")
    n = check_supported(model, seq_len)
    chosen = choose_method(model, n) if method == "auto" else method
    if chosen == "enumeration":
        from interp.certificate.enumerate import enumerate_certificate

        return enumerate_certificate(
            model, n, batch_size=batch_size, max_examples=max_examples, max_regions=max_regions
        )
    from interp.certificate.proof import prove

    return prove(
        model,
        n,
        budget_seconds=budget_seconds,
        max_boxes=max_boxes,
        max_examples=max_examples,
        max_regions=max_regions,
        theorems=theorems,
        batch_size=batch_size,
        progress=progress,
        seeds=seeds,
    )


__all__ = [
    "CELL_STATUSES",
    "METHODS",
    "Cell",
    "Certificate",
    "CertificateUnsupported",
    "Region",
    "cell_status",
    "certify",
    "choose_method",
]
