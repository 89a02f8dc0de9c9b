"""What every analysis' result object has: the same three views and the same metrics.csv shape.

Each analysis' result is a dataclass that inherits :class:`AnalysisResult` (declared with
``@dataclass(repr=False)``, so this short ``repr`` is kept; an analysis of one model at one length
inherits :class:`SampledResult`, its sampling fields) and provides ``to_dict()`` (metrics.json),
``csv_rows()`` (metrics.csv) and ``summary()`` (the text the CLI prints). In return it gets:

- ``repr(result)``: one line — the class, the analysis, how many sequences with which seed and the key
  numbers (``headline()``) — instead of a dump of every array;
- ``result.to_dataframe()``: the metrics.csv rows as a pandas DataFrame, ``layer``/``head`` as nullable
  integers (``<NA>`` on model-wide rows, never ``nan`` or ``0.0``). pandas is optional: without it, an
  ``ImportError`` that says ``pip install pandas``.

metrics.json is built with :func:`plain`, metrics.csv rows with :func:`estimate_row`: every row of a
metric of one head has ``scope`` "head" and integer ``layer`` and ``head``; a metric of the whole model
has ``scope`` "model" and empty ``layer`` and ``head`` cells.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import numpy as np

from interp.proportions import proportion_interval
from interp.stats import Estimate, percentile_interval, resampling_unit

INTEGER_COLUMNS = ("layer", "head")


def estimates(
    point: np.ndarray,
    replicates: np.ndarray,
    confidence: float,
    shape: tuple[int, ...] | None = None,
    *,
    sequences: int | None = None,
    trials: float | np.ndarray = 1.0,
) -> np.ndarray:
    """k Estimates from their point values ``[k]`` and bootstrap replicates ``[R, k]``, as an object array
    shaped ``shape`` (default [k]). Percentile intervals (``interp.stats.percentile_interval``) for
    means and ratios; for *proportions* pass ``sequences`` (the independent sequences the bootstrap
    resampled) and ``trials`` (trials per sequence, e.g. 16 positions): Clopper–Pearson at the effective
    number of trials, exact at 0 and 1 (``interp.proportions.proportion_interval``)."""
    if sequences is None:
        low, high = percentile_interval(replicates, confidence)
    else:
        low, high = proportion_interval(point, replicates, sequences, trials, confidence)
    flat = [Estimate(float(m), float(lo), float(hi)) for m, lo, hi in zip(point, low, high)]
    return np.array(flat, dtype=object).reshape((len(flat),) if shape is None else shape)


def plain(value: Any) -> Any:
    """``value`` as plain JSON-ready Python, for metrics.json: an Estimate becomes ``{"mean", "ci_low",
    "ci_high"}``, a dataclass the dict of its fields (in order), dict keys strings, tuples and arrays
    lists, NaN and infinities None."""
    if isinstance(value, Estimate):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def estimate_row(estimate: Any, *, layer: int | None = None, head: int | None = None, **columns: Any) -> dict:
    """One metrics.csv row: ``columns``, the scope ("head" with ``layer`` and ``head``, "model" without
    them) and the estimate's ``mean``, ``ci_low``, ``ci_high`` (None where undefined)."""
    if (layer is None) != (head is None):
        raise ValueError(f"a head row needs both layer and head, got layer={layer!r}, head={head!r}")
    scope = "model" if layer is None else "head"
    return {**columns, "scope": scope, "layer": layer, "head": head, **estimate.to_dict()}


class AnalysisResult:
    """Mixin of every analysis' result dataclass (see the module docstring)."""

    ANALYSIS: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int]
    CSV_FIELDS: ClassVar[tuple[str, ...]]

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def csv_rows(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def summary(self) -> str:
        """The text summary the CLI prints."""
        raise NotImplementedError

    def headline(self) -> str:
        """The key numbers in a few words, for ``repr``."""
        return ""

    def header(self) -> dict[str, Any]:
        """The first keys of every metrics.json: ``schema_version``, ``analysis``, ``provenance``."""
        return {
            "schema_version": self.SCHEMA_VERSION,
            "analysis": self.ANALYSIS,
            "provenance": getattr(self, "provenance", {}),
        }

    def sampling_settings(self, **more: Any) -> dict[str, Any]:
        """The ``settings`` of metrics.json: how the sequences were sampled and resampled (those of
        num_sequences, seq_len, num_categories, seed, batch_size, bootstrap_resamples and confidence the
        result has; ``resampling_unit``: "sequence", or the blocks of sequences :class:`interp.stats.UnitSums`
        resamples beyond ``MAX_UNITS`` sequences), then the analysis' own ``more``."""
        names = ("num_sequences", "seq_len", "num_categories", "seed", "batch_size")
        names += ("bootstrap_resamples", "confidence")
        return {
            **{name: getattr(self, name) for name in names if hasattr(self, name)},
            "resampling_unit": resampling_unit(self.num_sequences)
            if hasattr(self, "num_sequences")
            else "sequence",
            **more,
        }

    def __repr__(self) -> str:
        size = f"{self.num_sequences:,} sequences, seed {self.seed}"  # type: ignore[attr-defined]
        headline = self.headline()
        return f"<{type(self).__name__} {self.ANALYSIS}: {size}" + (f"; {headline}>" if headline else ">")

    def to_dataframe(self) -> Any:
        """The metrics.csv rows as a ``pandas.DataFrame`` (columns ``CSV_FIELDS``; empty cells as
        ``<NA>``/None; ``layer`` and ``head`` as nullable integers)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_dataframe() needs pandas: pip install pandas") from None
        rows = [{k: (None if v == "" else v) for k, v in row.items()} for row in self.csv_rows()]
        frame = pd.DataFrame(rows, columns=list(self.CSV_FIELDS))
        for column in INTEGER_COLUMNS:
            if column in frame:
                frame[column] = frame[column].astype("Int64")
        return frame


@dataclasses.dataclass(repr=False)
class SampledResult(AnalysisResult):
    """:class:`AnalysisResult` of an analysis of one model on random sequences of one length: its first
    fields say how they were sampled and resampled (``run()``'s arguments of these names, the digits
    ``num_categories`` from the model), the analysis' own fields follow."""

    num_sequences: int
    seq_len: int
    num_categories: int
    seed: int
    batch_size: int
    bootstrap_resamples: int
    confidence: float
