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
import os
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

from analyses.frame.files import write_bytes
from machine import processes

PARTS = ("mean", "ci_low", "ci_high")
PNG_ONLY: tuple[str, ...] = ("png",)
PNG_AND_SVG: tuple[str, ...] = ("png", "svg")
_FORMATS: ContextVar[tuple[str, ...]] = ContextVar("figure_formats", default=PNG_ONLY)


class _Renderers:
    """Figures rendered by forked child processes, at most ``limit`` at a time, while this process
    builds the next figure; when every child is busy this process renders the figure itself, so
    neither core waits for the other. Rendering (layout, rasterising, PNG compression) is ~90% of a
    figure's cost and every figure is independent, so the same files come out ~twice as fast on two
    cores. A fork copies the finished figure: nothing is pickled. A child that fails leaves its figure
    to this process, which renders it again and raises the error where it happened."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running: dict[int, tuple[Any, Path, str, Sequence[str]]] = {}

    def submit(self, fig: Any, directory: Path, name: str, formats: Sequence[str]) -> bool:
        """Render ``fig`` in a new child process if one may start now (False: render it yourself)."""
        try:
            self._reap(block=False)
        except BaseException:  # an earlier figure failed again here: this one is not drawn either
            import matplotlib.pyplot as plt

            plt.close(fig)
            raise
        if len(self.running) >= self.limit:
            return False
        pid = processes.fork_child(lambda: _render(fig, directory, name, formats))
        if pid is None:  # no process to be had: render here
            return False
        self.running[pid] = (fig, directory, name, formats)
        return True

    def _reap(self, block: bool) -> None:
        import matplotlib.pyplot as plt

        for pid in list(self.running):
            if block:
                ok = processes.wait_child(pid)
            else:
                try:
                    done, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): status unknown
                    done, status = pid, 1 << 8
                if done == 0:
                    continue
                ok = os.waitstatus_to_exitcode(status) == 0
            fig, directory, name, formats = self.running.pop(pid)
            try:
                if not ok:
                    _render(fig, directory, name, formats)  # again here: its error is raised here
            finally:
                plt.close(fig)

    def finish(self) -> None:
        """Wait for every child; a failed child's figure is rendered here (raising its error)."""
        while self.running:
            self._reap(block=True)

    def abandon(self) -> None:
        """Kill and reap every child (the writing failed or was interrupted)."""
        import matplotlib.pyplot as plt

        for pid, (fig, *_) in list(self.running.items()):
            processes.stop_child(pid)
            plt.close(fig)
        self.running.clear()


_RENDERERS: ContextVar[_Renderers | None] = ContextVar("figure_renderers", default=None)


@contextlib.contextmanager
def figure_formats(svg: bool) -> Iterator[None]:
    """Inside the block, :func:`save_figure` writes PNG and SVG (``svg``) or PNG only (the default);
    inside :func:`machine.processes.parallel` figures are rendered by a forked child process
    while this one builds the next. The block ends when every file is written."""
    token = _FORMATS.set(PNG_AND_SVG if svg else PNG_ONLY)
    renderers = _Renderers(limit=1) if processes.parallel_enabled() else None
    renderers_token = _RENDERERS.set(renderers)
    try:
        yield
        if renderers is not None:
            renderers.finish()
    finally:
        if renderers is not None:
            renderers.abandon()
        _RENDERERS.reset(renderers_token)
        _FORMATS.reset(token)


def estimate_arrays(estimates: Iterable[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[Estimate, ...]`` → float arrays ``(mean, ci_low, ci_high)`` (NaN where undefined)."""
    estimates = list(estimates)
    return tuple(np.array([getattr(e, part) for e in estimates], dtype=float) for part in PARTS)


def save_figure(fig: Any, directory: Path, name: str, formats: Sequence[str] | None = None) -> list[Path]:
    """Save a matplotlib figure as ``directory/name.<fmt>`` for each format (None: those of
    :func:`figure_formats`, PNG only by default), then close it.

    Every figure here is made with ``layout="constrained"``, which fits titles, labels and legends into
    the figure. ``savefig`` lays it out in a pass that rasterises nothing before it renders; no
    ``draw_without_rendering`` of ours and no ``bbox_inches="tight"`` adds another. The layout is
    then frozen, so a second format is not laid out again. (Skipping that pass by running the layout
    engine directly gave byte-identical files but only ~6% less writing time, through a private
    attribute: not done.)"""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    formats = tuple(_FORMATS.get() if formats is None else formats)
    paths = [directory / f"{name}.{fmt}" for fmt in formats]
    renderers = _RENDERERS.get()
    if renderers is not None and renderers.submit(fig, directory, name, formats):
        return paths  # written by the time the figure_formats block ends
    import matplotlib.pyplot as plt

    try:
        _render(fig, directory, name, formats)
    finally:
        plt.close(fig)
    return paths


def _render(fig: Any, directory: Path, name: str, formats: Sequence[str]) -> None:
    """Draw ``fig`` once per format and write each file atomically (the figure stays open)."""
    import matplotlib

    for fmt in formats:
        buffer = io.BytesIO()
        # Fixed metadata so the same numbers give the same files.
        metadata_ = {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}
        # A fixed salt for the SVG's element ids (a random one per drawing otherwise).
        with matplotlib.rc_context({"svg.hashsalt": "reverse-encoder-interp"}):
            fig.savefig(buffer, format=fmt, dpi=120, metadata=metadata_)
        fig.set_layout_engine("none")  # laid out by this first draw: keep it for the next format
        write_bytes(directory / f"{name}.{fmt}", buffer.getvalue())
