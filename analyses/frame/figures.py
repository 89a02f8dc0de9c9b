"""Saving figures and reading estimates into arrays: what every analysis' ``figures.py`` shares.

- :func:`save_figure` writes a matplotlib figure as PNG — and SVG inside :func:`figure_formats` with
  ``svg=True`` (``--svg``) — atomically, with fixed metadata so the same numbers give the same files,
  and closes it; analyses never call ``plt.show()``. The PNG is what every report inlines; an SVG
  costs about as much time to render again, so it is made only when asked for.
- :func:`estimate_arrays` turns a list of ``interp.stats.Estimate`` into ``(mean, ci_low, ci_high)``
  arrays, the form ``interp.effect_plots`` draws bars, bands and whiskers from.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

from analyses.frame.files import write_bytes

PARTS = ("mean", "ci_low", "ci_high")
PNG_ONLY: tuple[str, ...] = ("png",)
PNG_AND_SVG: tuple[str, ...] = ("png", "svg")
_FORMATS: ContextVar[tuple[str, ...]] = ContextVar("figure_formats", default=PNG_ONLY)


@contextlib.contextmanager
def figure_formats(svg: bool) -> Iterator[None]:
    """Inside the block, :func:`save_figure` writes PNG and SVG (``svg``) or PNG only (the default)."""
    token = _FORMATS.set(PNG_AND_SVG if svg else PNG_ONLY)
    try:
        yield
    finally:
        _FORMATS.reset(token)


def estimate_arrays(estimates: Iterable[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[Estimate, ...]`` → float arrays ``(mean, ci_low, ci_high)`` (NaN where undefined)."""
    estimates = list(estimates)
    return tuple(np.array([getattr(e, part) for e in estimates], dtype=float) for part in PARTS)


def save_figure(fig: Any, directory: Path, name: str, formats: Sequence[str] | None = None) -> list[Path]:
    """Save a matplotlib figure as ``directory/name.<fmt>`` for each format (None: those of
    :func:`figure_formats`, PNG only by default), then close it.

    Every figure here is made with ``layout="constrained"``, which fits titles, labels and legends into
    the figure: the first format lays it out while it renders (one draw, no separate
    ``draw_without_rendering`` pass), then the layout is frozen, so a second format renders it once
    more and no file is drawn twice (no ``bbox_inches="tight"``)."""
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    formats = _FORMATS.get() if formats is None else formats
    try:
        for fmt in formats:
            buffer = io.BytesIO()
            # Fixed metadata so the same numbers give the same files.
            metadata_ = {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}
            fig.savefig(buffer, format=fmt, dpi=120, metadata=metadata_)
            fig.set_layout_engine("none")  # laid out by this first draw: keep it for the next format
            paths.append(write_bytes(directory / f"{name}.{fmt}", buffer.getvalue()))
    finally:
        plt.close(fig)
    return paths
