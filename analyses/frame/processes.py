"""Work on a second core, in child processes that never outlive the process that made them.

- :func:`parallel` turns on (for a block; every analysis CLI does) :func:`split`, which computes one
  part of an analysis in a forked child while this process computes the other, and the figure
  renderers of :mod:`analyses.frame.figures`. A fork shares the loaded model and the imported modules
  (no start-up cost), and the same code runs on the same inputs: the numbers are the same bits as in one
  process. Off (the default in Python, e.g. a notebook), everything runs here, one piece after another.
- :func:`die_with_parent` is what every process we fork calls first — these children and the report
  build's analysis workers (``reports.pipeline``) — so that a ``kill -9`` of the parent leaves no
  orphan behind.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TypeVar

import numpy as np

T = TypeVar("T")
Arrays = dict[str, np.ndarray]  # what a child sends back: named numeric arrays


def die_with_parent(parent: int) -> None:
    """Make this (worker) process die when ``parent`` does, even by ``kill -9``: on Linux the kernel
    sends SIGKILL on the parent's death (``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon thread
    checks the parent pid every second. A parent already gone ends the worker at once."""
    import ctypes
    import threading

    armed = False
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    if not armed:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()


# --- work on a second core ------------------------------------------------------------------------
_PARALLEL: ContextVar[bool] = ContextVar("parallel_work", default=False)


def can_fork_workers() -> bool:
    """Whether work may go to forked child processes here: Linux (where fork after torch's
    single-threaded use and with matplotlib's Agg backend is safe) and more than one CPU available."""
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return False
    return len(os.sched_getaffinity(0)) > 1


@contextlib.contextmanager
def parallel(enabled: bool = True) -> Iterator[None]:
    """Inside the block, :func:`split` and :func:`analyses.frame.figures.save_figure` use a second
    process (when :func:`can_fork_workers`); every analysis CLI runs in one. The numbers are the same
    bits either way: each piece of work is computed exactly as in one process, only elsewhere."""
    token = _PARALLEL.set(enabled and can_fork_workers())
    try:
        yield
    finally:
        _PARALLEL.reset(token)


def parallel_enabled() -> bool:
    """Whether work may go to a forked child now: inside :func:`parallel`, and not in a process that
    holds a Ray connection (its threads and sockets must not be forked)."""
    if not _PARALLEL.get():
        return False
    ray = sys.modules.get("ray")
    return ray is None or not ray.is_initialized()


def fork_child(work: Callable[[], None]) -> int:
    """Fork a child that dies with this process, runs ``work`` and exits (0 if it returned, 1 if it
    raised) without running any of this process' code after it; returns the child's pid."""
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    with warnings.catch_warnings():  # Python >= 3.12 warns on fork() in a threaded process; the
        warnings.simplefilter("ignore", DeprecationWarning)  # children only compute and write files
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            # No garbage collection in this short-lived child: a collection walks every object and
            # so copies the parent's memory page by page (copy-on-write).
            gc.disable()
            die_with_parent(parent)
            work()
            code = 0
        finally:
            os._exit(code)
    return pid


def stop_child(pid: int) -> None:
    """Kill and reap a child of :func:`fork_child` (gone already: nothing to do)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def split(here: Callable[[], T], there: Callable[[], Arrays]) -> tuple[T, Arrays]:
    """``(here(), there())``, with ``there`` computed by a forked child process while this one computes
    ``here`` when :func:`parallel` is on (else one after the other, here).

    ``there`` returns named arrays (numeric, no objects: they come back through an ``.npz`` file read
    with ``allow_pickle=False``, one without a name — nothing is left on disk even after ``kill -9``).
    A child that fails leaves its work to this process, which runs ``there()`` itself and so raises the
    error where it happened."""
    if not parallel_enabled():
        return here(), there()
    with tempfile.TemporaryFile(prefix="analysis-part-") as shared:  # unlinked at once; both see it

        def work() -> None:
            np.savez(shared, **there())
            shared.flush()

        pid = fork_child(work)
        try:
            mine = here()
            _, status = os.waitpid(pid, 0)
            pid = 0
            if os.waitstatus_to_exitcode(status) != 0:
                return mine, there()
            shared.seek(0)
            with np.load(shared, allow_pickle=False) as data:
                return mine, {name: data[name] for name in data.files}
        finally:
            if pid:
                stop_child(pid)
