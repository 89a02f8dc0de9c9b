"""Saving figures and reading estimates into arrays: what every analysis' ``figures.py`` shares.

- :func:`save_figure` writes a matplotlib figure as PNG and SVG (atomically, with fixed metadata so the
  same numbers give the same files) and closes it; analyses never call ``plt.show()``.
- :func:`estimate_arrays` turns a list of ``interp.stats.Estimate`` into ``(mean, ci_low, ci_high)``
  arrays, the form ``interp.effect_plots`` draws bars, bands and whiskers from.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from analyses.frame.files import write_bytes

PARTS = ("mean", "ci_low", "ci_high")


def estimate_arrays(estimates: Iterable[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[Estimate, ...]`` → float arrays ``(mean, ci_low, ci_high)`` (NaN where undefined)."""
    estimates = list(estimates)
    return tuple(np.array([getattr(e, part) for e in estimates], dtype=float) for part in PARTS)


def save_figure(fig: Any, directory: Path, name: str, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Save a matplotlib figure as ``directory/name.<fmt>`` for each format, then close it.

    Every figure here is made with ``layout="constrained"``, which fits titles, labels and legends into
    the figure: it is laid out once and then frozen, so each format renders it once (no
    ``bbox_inches="tight"``, which draws every file twice)."""
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    try:
        if fig.get_layout_engine() is not None:
            fig.draw_without_rendering()
            fig.set_layout_engine("none")
        for fmt in formats:
            buffer = io.BytesIO()
            # Fixed metadata so the same numbers give the same files.
            metadata_ = {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}
            fig.savefig(buffer, format=fmt, dpi=120, metadata=metadata_)
            paths.append(write_bytes(directory / f"{name}.{fmt}", buffer.getvalue()))
    finally:
        plt.close(fig)
    return paths
