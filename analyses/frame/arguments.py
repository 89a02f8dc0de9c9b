"""Checking arguments, on the command line and in Python, with the same one-line messages.

- argparse types: :func:`path_arg`, :func:`positive_int`, :func:`non_negative_int`, :func:`seed_int`;
  :class:`ArgumentParser` reports a bad flag as one ``error: ...`` line and exit code 2 (no usage
  dump); :func:`check_device` refuses a device torch cannot use before any work is done.
- ``run()`` arguments: :func:`positive_ints`, :func:`non_negative_ints` and :func:`check_confidence`
  raise ``ValueError("<name> must be a positive integer, got <value>")`` and the like, so every
  analysis words a bad argument the same way; :func:`check_sampling` checks the arguments every
  analysis of one model takes, and :func:`check_seq_len` a length against the positional encoding.
- Counts against what the machine can do, before any work (:func:`check_memory`, with
  ``machine.limits.memory_bytes``): each request's *lower bound* of memory — one sequence's forward pass
  (:func:`sequence_bytes`: tokens, logits, residual stream, attention patterns) for ``--seq-len``, a
  batch of them for ``--batch-size``, the bootstrap's replicates for ``--bootstrap-resamples`` — must
  fit, or one line names the flag, what it needs and what the machine has. A request that could run is
  never refused; time is not a resource here (a large ``--num-sequences`` runs long in constant memory).
  ``--bootstrap-resamples`` must be at least :data:`MIN_RESAMPLES` (one resample gives no interval).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from analyses.frame.cli import UserError
from machine import limits
from machine.scalars import is_int

MAX_SEED = 2**32 - 1  # numpy's seeds: every generator here accepts 0 .. 2^32 - 1
MIN_RESAMPLES = 2
_PATTERN_ELEMENTS = 1 << 22  # analyses.frame.sequences shrinks batches of long sequences to this


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a mistake as one ``error: ...`` line (no usage dump) and exits with 2."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


# --- argparse types -------------------------------------------------------------------------------
def _int_at_least(text: str, minimum: int, kind: str) -> int:
    """An integer ≥ ``minimum``, also written ``1e6`` (how people type large counts)."""
    try:
        value = int(text)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not number.is_integer():
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {text!r}") from None
        value = int(number)
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


def resamples_int(text: str) -> int:
    """argparse type: a number of bootstrap resamples, at least :data:`MIN_RESAMPLES`."""
    value = _int_at_least(text, 0, "positive")
    if value < MIN_RESAMPLES:
        raise argparse.ArgumentTypeError(
            f"expected at least {MIN_RESAMPLES}, got {text!r} (an interval needs resamples to spread)"
        )
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer ≥ 0."""
    return _int_at_least(text, 0, "non-negative")


def positive_seconds(text: str) -> float:
    """argparse type: a positive, finite number of seconds (a budget)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def check_device(name: str) -> str:
    """The device name if torch can use it, else :class:`UserError` (before any work is done)."""
    from machine.devices import check_device as usable

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


def flag(name: str) -> str:
    """``reference_sequences`` → ``--reference-sequences``: how messages name a count."""
    return "--" + name.replace("_", "-")


def check_memory(name: str, value: int, need: float, what: str) -> None:
    """``ValueError`` naming the flag of ``name`` when ``need`` bytes (a lower bound of what ``value``
    asks for: ``what``) exceed this machine's memory (``machine.limits.memory_bytes``)."""
    have = limits.memory_bytes()
    if need > have:
        raise ValueError(
            f"{flag(name)} {value:,} needs at least {limits.size(need)} of memory ({what}); this machine "
            f"has {limits.size(have)}"
        )


def sequence_bytes(cfg: Any, seq_len: int) -> int:
    """A lower bound of the bytes one sequence's forward pass holds at once: its tokens (int64), logits
    and every layer's residual stream (float32), and every layer's attention patterns (float32)."""
    n = seq_len
    return (
        8 * n
        + 4 * n * cfg.d_vocab
        + 4 * n * cfg.d_model * cfg.n_layers
        + 4 * cfg.n_layers * cfg.n_heads * n * n
    )


def check_sequences(cfg: Any, seq_len: int, name: str = "seq_len") -> int:
    """Refuse a length whose single sequence does not fit in memory; return :func:`sequence_bytes`."""
    one = sequence_bytes(cfg, seq_len)
    check_memory(name, seq_len, one, "one sequence's forward pass, attention patterns included")
    return one


def check_batch(cfg: Any, seq_len: int, batch_size: int, count: int, name: str = "batch_size") -> None:
    """Refuse a batch of ``min(batch_size, count)`` sequences that does not fit in memory (batches of
    long sequences shrink to ~4 M pattern elements, as ``analyses.frame.sequences`` makes them)."""
    batch = max(1, min(int(batch_size), int(count), _PATTERN_ELEMENTS // (int(seq_len) ** 2)))
    check_memory(
        name, batch_size, batch * sequence_bytes(cfg, seq_len), f"a forward pass of {batch:,} sequences"
    )


def check_resamples(resamples: int, statistics: int = 1) -> None:
    """At least :data:`MIN_RESAMPLES`, and replicates of ``statistics`` numbers (float64, kept for the
    percentiles, plus their sorted copy) that fit in memory."""
    resamples = int(resamples) if is_int(resamples) else resamples
    if is_int(resamples) and resamples < MIN_RESAMPLES:
        raise ValueError(
            f"--bootstrap-resamples must be at least {MIN_RESAMPLES}, got {resamples} (a confidence interval "
            "needs resamples to spread; 1000 is the default)"
        )
    check_memory(
        "bootstrap_resamples", resamples, 16 * resamples * statistics, f"{statistics:,} replicated statistics"
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
    check_sequences(cfg, seq_len)
    check_batch(cfg, seq_len, batch_size, num_sequences)
    # Every analysis replicates at least accuracy and loss and one number per head.
    check_resamples(bootstrap_resamples, 2 + cfg.n_layers * cfg.n_heads)
    return seq_len
