"""Checking arguments, on the command line and in Python, with the same one-line messages.

- argparse types: :func:`path_arg`, :func:`positive_int`, :func:`non_negative_int`, :func:`seed_int`;
  :class:`ArgumentParser` reports a bad flag as one ``error: ...`` line and exit code 2 (no usage
  dump); :func:`check_device` refuses a device torch cannot use before any work is done.
- ``run()`` arguments: :func:`positive_ints`, :func:`non_negative_ints` and :func:`check_confidence`
  raise ``ValueError("<name> must be a positive integer, got <value>")`` and the like, so every
  analysis words a bad argument the same way; :func:`check_sampling` checks the arguments every
  analysis of one model takes, and :func:`check_seq_len` a length against the positional encoding.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from analyses.frame.cli import UserError
from models.scalars import is_int

MAX_SEED = 2**32 - 1  # numpy's seeds: every generator here accepts 0 .. 2^32 - 1


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a mistake as one ``error: ...`` line (no usage dump) and exits with 2."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


# --- argparse types -------------------------------------------------------------------------------
def _int_at_least(text: str, minimum: int, kind: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {value}")
    return value


def path_arg(text: str) -> Path:
    """argparse type: a non-empty path (an empty one would silently mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path")
    return Path(text)


def seed_int(text: str) -> int:
    """argparse type: a seed, an integer in 0 .. 2^32 - 1."""
    value = _int_at_least(text, 0, "non-negative")
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to {MAX_SEED}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    return _int_at_least(text, 1, "positive")


def non_negative_int(text: str) -> int:
    """argparse type: an integer ≥ 0."""
    return _int_at_least(text, 0, "non-negative")


def check_device(name: str) -> str:
    """The device name if torch can use it, else :class:`UserError` (before any work is done)."""
    from models.devices import check_device as usable

    try:
        return usable(name)
    except ValueError as e:
        raise UserError(f"--{e}") from None  # "device …: why", as models.load_model says it


# --- run() arguments ------------------------------------------------------------------------------
def _check_ints(values: dict[str, Any], minimum: int, kind: str) -> None:
    for name, value in values.items():
        if not is_int(value) or value < minimum:
            raise ValueError(f"{name} must be a {kind} integer, got {value!r}")


def positive_ints(**values: Any) -> None:
    """``ValueError`` naming the first argument that is not an integer ≥ 1 (``True`` is not one)."""
    _check_ints(values, 1, "positive")


def non_negative_ints(**values: Any) -> None:
    """``ValueError`` naming the first argument that is not an integer ≥ 0."""
    _check_ints(values, 0, "non-negative")


def check_confidence(confidence: float) -> None:
    """``ValueError`` unless 0 < confidence < 1."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def check_seq_len(cfg: Any, seq_len: int, name: str = "seq_len") -> None:
    """``ValueError`` (one line naming ``name``) when the model's positional encoding has no rows for
    ``seq_len`` positions (``cfg.max_positions``; None: no limit)."""
    limit = cfg.max_positions
    if limit is not None and seq_len > limit:
        raise ValueError(
            f"{name} {seq_len} exceeds what the model's {cfg.positional_embedding} positional encoding "
            f"supports ({limit} positions)"
        )


def check_sampling(
    cfg: Any,
    num_sequences: int,
    seq_len: int | None,
    seed: int,
    batch_size: int,
    bootstrap_resamples: int,
    confidence: float,
) -> int:
    """Check the arguments every analysis of one model takes; return ``seq_len`` (None: the model's
    training length ``cfg.n_ctx``)."""
    seq_len = cfg.n_ctx if seq_len is None else seq_len
    positive_ints(
        num_sequences=num_sequences,
        seq_len=seq_len,
        batch_size=batch_size,
        bootstrap_resamples=bootstrap_resamples,
    )
    non_negative_ints(seed=seed)
    check_confidence(confidence)
    check_seq_len(cfg, seq_len)
    return seq_len
