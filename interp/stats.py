"""Statistics over independent units (sequences): percentile bootstrap confidence intervals.

Positions inside one sequence share its digits and are not independent, so every interval here
resamples whole units: reduce each sequence to a few numbers first (e.g.
:func:`interp.metrics.sequence_statistics`), then bootstrap over the rows of that table.

The bootstrap is vectorised: a resample is a vector of counts c (how often each unit is drawn,
Σ c = n), so for a whole table of statistics at once

    mean*  = c · x / n                  (plain means)
    ratio* = (c · num) / (c · den)      (ratios of sums, e.g. mass per key when key counts vary)

is one matrix product per chunk of resamples. The counts depend only on (n, resamples, seed), so
two calls with the same seed and the same n see the very same resamples and their distributions can
be combined (e.g. the CI of a difference).

Memory independent of the number of sequences: :class:`UnitSums` keeps, instead of one row per
sequence, one row per *resampling unit*. Up to ``max_units`` sequences (:data:`MAX_UNITS`, 10,000) a
unit is one sequence and the bootstrap is the one above, bit for bit. Beyond, the N sequences are
split into ``max_units`` fixed blocks of consecutive sequences (sizes ⌊N/K⌋ or ⌈N/K⌉) and a unit holds
its block's sums and its sequence count; a mean becomes the ratio Σ c·sums / Σ c·counts over the
resampled blocks. The sequences are independent and identically distributed, so the blocks are too,
and the bootstrap over K i.i.d. blocks estimates the sampling distribution of the same mean (a
"batch means" bootstrap): the same estimator family, memory K × statistics whatever N is, and
resampling cost independent of N (a streaming Poisson bootstrap would keep memory flat too, but
draws resamples × N weights: 10^10 for 10^7 sequences). ``tests/test_stats.py`` checks its CIs against
the per-sequence bootstrap's and its coverage on data with a known mean.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from machine.scalars import as_int, is_int

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
# Elements of one count matrix (float64): 4e6 × 8 bytes = 32 MB, whatever n is.
_CHUNK_ELEMENTS = 4_000_000
# Resampling units of UnitSums: up to this many sequences the bootstrap resamples single sequences.
MAX_UNITS = 10_000


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a two-sided confidence interval (NaN when undefined)."""

    mean: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, float | None]:
        """JSON-able; NaN becomes None (JSON has no NaN)."""
        return {k: (None if np.isnan(v) else float(v)) for k, v in vars(self).items()}


def _check(resamples: int, confidence: float) -> None:
    as_int(resamples, "resamples", minimum=1)
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")


def resample_counts(n: int, resamples: int, seed: int | Sequence[int] = 0) -> Iterator[np.ndarray]:
    """Yield count matrices ``[chunk, n]`` (float64; each row sums to n) for ``resamples`` resamples.

    Row r holds how many times each of the n units was drawn (with replacement) in resample r.
    Chunks keep memory constant in the number of resamples.
    """
    if not is_int(n) or int(n) < 1:
        raise ValueError(f"the bootstrap needs at least one unit, got n={n!r}")
    n, resamples = int(n), int(resamples)
    _check(resamples, 0.5)
    seeds = _seed_key(seed)
    key = None if seeds is None else (n, resamples, seeds, _CHUNK_ELEMENTS)
    last = _LAST_COUNTS[0]  # one read: (key, counts) or None
    if key is not None and last is not None and last[0] == key:  # the same draw again
        for counts in last[1]:
            yield counts.copy()  # a copy: the caller may write into it
        return
    kept: list[np.ndarray] | None = [] if key is not None and n * resamples <= _KEPT_ELEMENTS else None
    for counts in _draw_counts(n, resamples, seed):
        if kept is not None:
            kept.append(counts.copy())
        yield counts
    if kept is not None:
        _LAST_COUNTS[0] = (key, kept)


# The last draw of resample counts, if it is small (≤ 32 MB): an analysis draws the same counts for
# table after table (same units, resamples and seed); a copy costs a tenth of drawing them again.
_KEPT_ELEMENTS = 1 << 22
_LAST_COUNTS: list = [None]


def _seed_key(seed: Any) -> tuple[int, ...] | None:
    """A seed given as Python or numpy integers (or a list/tuple of them), as a tuple; None for
    anything else — a generator or seed sequence moves on, other types are numpy's to accept or not —
    which is never served from the kept draw."""

    def plain(value: Any) -> bool:
        return isinstance(value, int | np.integer) and not isinstance(value, bool)

    if plain(seed):
        return (int(seed),)
    if isinstance(seed, list | tuple) and all(plain(s) for s in seed):
        return tuple(int(s) for s in seed)
    return None


def _draw_counts(n: int, resamples: int, seed: int | Sequence[int]) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, _CHUNK_ELEMENTS // n))
    done = 0
    while done < resamples:
        c = min(chunk, resamples - done)
        draws = rng.integers(0, n, size=(c, n))
        draws += np.arange(c)[:, None] * n  # one bincount for the whole chunk
        yield np.bincount(draws.ravel(), minlength=c * n).reshape(c, n).astype(np.float64)
        done += c


def _as_table(values: np.ndarray, name: str) -> np.ndarray:
    table = np.asarray(values, dtype=np.float64)
    if table.ndim == 1:
        table = table[:, None]
    if table.ndim != 2 or table.shape[0] < 1:
        raise ValueError(f"{name} must have shape [units] or [units, statistics], got {table.shape}")
    if not (table.flags.c_contiguous and table.flags.writeable):  # torch.from_numpy needs both
        table = np.array(table, order="C")
    return table


def bootstrap_distribution(
    values: np.ndarray,
    denominators: np.ndarray | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int | Sequence[int] = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Point estimates ``[k]`` and bootstrap replicates ``[resamples, k]`` of k statistics.

    ``values`` is ``[n, k]`` (or ``[n]``): one row per unit. Without ``denominators`` the statistic is
    the column mean; with them (same shape) it is Σ values / Σ denominators over the units drawn.
    A replicate whose denominator sums to 0 is NaN.
    """
    return bootstrap_distributions([(values, denominators)], resamples, seed)[0]


def bootstrap_distributions(
    tables: Sequence[tuple[np.ndarray, np.ndarray | None]],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int | Sequence[int] = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`bootstrap_distribution` for several ``(values, denominators)`` tables over the same n
    units and the *same* resamples (so replicates of different tables can be combined)."""
    prepared = []
    for values, denominators in tables:
        num = _as_table(values, "values")
        den = None if denominators is None else _as_table(denominators, "denominators")
        if den is not None and den.shape != num.shape:
            raise ValueError(f"denominators {den.shape} must match values {num.shape}")
        prepared.append((num, den))
    sizes = {num.shape[0] for num, _ in prepared}
    if len(sizes) != 1:
        raise ValueError(f"all tables must have the same number of units, got {sorted(sizes)}")
    n = sizes.pop()
    # torch's float64 matmul is several times faster than numpy's for these tall-skinny products.
    tensors = [
        (torch.from_numpy(num), None if den is None else torch.from_numpy(den)) for num, den in prepared
    ]
    replicates: list[list[np.ndarray]] = [[] for _ in prepared]
    with np.errstate(invalid="ignore", divide="ignore"):
        for counts in resample_counts(n, resamples, seed):
            c = torch.from_numpy(counts)
            for out, (num, den) in zip(replicates, tensors):
                top = (c @ num).numpy()
                out.append(top / n if den is None else top / (c @ den).numpy())
        points = [num.mean(0) if den is None else num.sum(0) / den.sum(0) for num, den in prepared]
    return [(point, np.concatenate(reps)) for point, reps in zip(points, replicates)]


class UnitSums:
    """Per-unit running sums of per-sequence statistics, filled batch by batch, for a bootstrap over
    ``num_sequences`` sequences in memory independent of ``num_sequences`` (see the module docstring).

    ``add({"name": values [batch, ...]})`` takes the next batch of sequences (every name of a batch at
    once); sequence i goes to unit ``i * units // num_sequences``. ``sums[name]`` is ``[units, ...]``
    (float64) and ``counts`` ``[units]`` the sequences per unit. :meth:`table` gives what
    :func:`bootstrap_distributions` takes for the mean of a statistic (or a ratio of two).
    """

    def __init__(self, num_sequences: int, max_units: int | None = None):
        self.num_sequences = as_int(num_sequences, "num_sequences", minimum=1)
        max_units = MAX_UNITS if max_units is None else max_units  # read at call time (tests lower it)
        self.units = min(self.num_sequences, as_int(max_units, "max_units", minimum=1))
        self.sums: dict[str, torch.Tensor] = {}
        self.counts = torch.zeros(self.units, dtype=torch.float64)
        self.seen = 0

    @classmethod
    def filled(cls, num_sequences: int, sums: dict[str, torch.Tensor | np.ndarray]) -> UnitSums:
        """The sums of all ``num_sequences`` sequences, made elsewhere (e.g. by another process with
        the same ``MAX_UNITS``): ``counts`` as :meth:`add` leaves them after every sequence."""
        units = cls(num_sequences)
        unit = (torch.arange(units.num_sequences) * units.units) // units.num_sequences
        units.counts.index_add_(0, unit, torch.ones(units.num_sequences, dtype=torch.float64))
        units.sums = {name: torch.as_tensor(v, dtype=torch.float64) for name, v in sums.items()}
        if any(v.shape[0] != units.units for v in units.sums.values()):
            raise ValueError(f"every sum needs one row per unit ({units.units})")
        units.seen = units.num_sequences
        return units

    @property
    def per_sequence(self) -> bool:
        """Whether every unit is one sequence (the plain bootstrap)."""
        return self.units == self.num_sequences

    def add(self, batch: dict[str, torch.Tensor | np.ndarray]) -> None:
        sizes = {len(v) for v in batch.values()}
        if len(sizes) != 1:
            raise ValueError(f"every statistic of a batch needs the same number of sequences, got {sizes}")
        b = sizes.pop()
        if self.seen + b > self.num_sequences:
            raise ValueError(f"more than the {self.num_sequences} sequences announced")
        unit = (torch.arange(self.seen, self.seen + b) * self.units) // self.num_sequences
        for name, values in batch.items():
            values = torch.as_tensor(values).detach().to("cpu", torch.float64)
            if name not in self.sums:
                self.sums[name] = torch.zeros(self.units, *values.shape[1:], dtype=torch.float64)
            self.sums[name].index_add_(0, unit, values)
        self.counts.index_add_(0, unit, torch.ones(b, dtype=torch.float64))
        self.seen += b

    def table(self, name: str, denominator: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """``(values, denominators)`` for :func:`bootstrap_distributions`: the mean of ``name`` over
        sequences, or Σ name / Σ ``denominator`` (broadcast to ``name``'s shape) when one is given.
        Per-sequence units without a denominator give ``(values, None)``: today's plain bootstrap."""
        num = self.sums[name].numpy()
        if denominator is not None:
            den = self.sums[denominator].numpy()
            den = den.reshape(den.shape + (1,) * (num.ndim - den.ndim))
            return num, np.broadcast_to(den, num.shape)
        if self.per_sequence:
            return num, None
        return num, np.broadcast_to(self.counts.numpy().reshape((-1,) + (1,) * (num.ndim - 1)), num.shape)


def resampling_unit(num_sequences: int, max_units: int | None = None) -> str:
    """What a :class:`UnitSums` bootstrap over ``num_sequences`` resamples, in words for a result's
    settings: ``"sequence"``, or ``"block of 100 consecutive sequences"`` (``"99-100"`` when sizes differ)."""
    units = min(num_sequences, MAX_UNITS if max_units is None else max_units)
    if units == num_sequences:
        return "sequence"
    low, high = num_sequences // units, -(-num_sequences // units)
    return f"block of {low if low == high else f'{low}-{high}'} consecutive sequences"


def percentile_interval(
    replicates: np.ndarray, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[np.ndarray, np.ndarray]:
    """The (1 − confidence)/2 and (1 + confidence)/2 quantiles of each column, ignoring NaN replicates."""
    _check(1, confidence)
    alpha = (1.0 - float(confidence)) / 2.0
    reps = np.asarray(replicates, dtype=np.float64)
    finite = ~np.isnan(reps)
    low = np.full(reps.shape[1:], np.nan)
    high = np.full(reps.shape[1:], np.nan)
    usable = finite.any(0)
    if usable.any():
        cols = reps[:, usable]
        if finite[:, usable].all():
            low[usable], high[usable] = np.quantile(cols, [alpha, 1.0 - alpha], axis=0)
        else:
            low[usable], high[usable] = np.nanquantile(cols, [alpha, 1.0 - alpha], axis=0)
    return low, high


def bootstrap_ci(
    values: np.ndarray,
    denominators: np.ndarray | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int | Sequence[int] = 0,
) -> list[Estimate]:
    """Percentile-bootstrap :class:`Estimate` for each column of ``values`` (see
    :func:`bootstrap_distribution` for the statistic), resampling rows (units) with replacement."""
    _check(resamples, confidence)
    point, replicates = bootstrap_distribution(values, denominators, resamples, seed)
    low, high = percentile_interval(replicates, confidence)
    return [Estimate(float(m), float(lo), float(hi)) for m, lo, hi in zip(point, low, high)]
