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
import functools
import gc
import os
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
Arrays = dict[str, np.ndarray]  # what a child sends back: named numeric arrays


def die_with_parent(parent: int, prctl: Callable[..., int] | None = None) -> None:
    """Make this (worker) process die when ``parent`` does, even by ``kill -9``: on Linux the kernel
    sends SIGKILL on the parent's death (``prctl(PR_SET_PDEATHSIG)``; ``prctl`` looked up by the parent
    before it forked, else here); elsewhere a daemon thread checks the parent pid every second. A
    parent already gone ends the worker at once."""
    import threading

    armed = False
    prctl = prctl or _prctl()
    if prctl is not None:
        with contextlib.suppress(OSError):
            armed = prctl(1, signal.SIGKILL, 0, 0, 0) == 0  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)
    if not armed:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` on Linux (None elsewhere or when it cannot be found)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


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
    holds a Ray connection (its threads and sockets must not be forked) or has started CUDA (a forked
    child cannot use it)."""
    if not _PARALLEL.get():
        return False
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return False
    torch = sys.modules.get("torch")
    return torch is None or not torch.cuda.is_initialized()


_STOPPING = (signal.SIGINT, signal.SIGTERM)


def fork_child(work: Callable[[], None]) -> int | None:
    """Fork a child that dies with this process, runs ``work`` and exits (0 if it returned, 1 if it
    raised) without running any of this process' code after it; returns the child's pid, or None when
    the system refuses a new process (then the caller does the work itself).

    Ctrl-C and SIGTERM are held back while forking, so that neither can reach the child before it is
    inside its own ``try`` (it would unwind through this process' code: its output folder, its
    messages); the child then takes their default actions, and this process, which gets them too,
    cleans up."""
    parent = os.getpid()
    prctl = _prctl()  # looked up here: the child should not load anything
    sys.stdout.flush()
    sys.stderr.flush()
    with warnings.catch_warnings():  # Python >= 3.12 warns on fork() in a threaded process; the
        warnings.simplefilter("ignore", DeprecationWarning)  # children only compute and write files
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING)
        try:
            pid = os.fork()
        except OSError:  # EAGAIN, ENOMEM: too many processes or too little memory for one more
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            return None
        if pid == 0:
            code = 1
            try:
                for signum in _STOPPING:
                    signal.signal(signum, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
                # No garbage collection in this short-lived child: a collection walks every object
                # and so copies the parent's memory page by page (copy-on-write).
                gc.disable()
                die_with_parent(parent, prctl)
                work()
                code = 0
            finally:
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return pid


def wait_child(pid: int) -> bool:
    """Wait for a child of :func:`fork_child`; whether it exited with 0 (False also when its status is
    unknown, e.g. SIGCHLD ignored: the caller then does its work again)."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return False
    return os.waitstatus_to_exitcode(status) == 0


def stop_child(pid: int) -> None:
    """Kill and reap a child of :func:`fork_child` (gone already: nothing to do)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def split(here: Callable[[], T], there: Callable[[], Arrays]) -> tuple[T, Arrays]:
    """``(here(), there())``, with ``there`` computed by a forked child process while this one computes
    ``here`` when :func:`parallel` is on (else one after the other, here).

    ``there`` returns named numeric arrays (or what ``np.asarray`` makes one of; no objects), returned
    as numpy arrays either way. A child's arrays come back through an ``.npz`` file without a name
    (nothing is left on disk even after ``kill -9``), read with ``allow_pickle=False``. A child that
    fails leaves its work to this process, which runs ``there()`` itself and so raises the error where
    it happened."""
    if not parallel_enabled():
        return here(), _numeric(there())
    with tempfile.TemporaryFile(prefix="analysis-part-") as shared:  # unlinked at once; both see it

        def work() -> None:
            arrays = _numeric(there())
            # Stored as a0, a1, ... with the names beside them (a name could be one of savez's own
            # parameters, e.g. "file").
            np.savez(
                shared, names=np.array(list(arrays), dtype=str), **dict(zip(_slots(arrays), arrays.values()))
            )
            shared.flush()

        pid = fork_child(work)
        if pid is None:
            return here(), _numeric(there())
        try:
            mine = here()
            done, pid = wait_child(pid), None
            if not done:
                return mine, _numeric(there())
            shared.seek(0)
            with np.load(shared, allow_pickle=False) as stored:
                names = [str(name) for name in stored["names"]]
                return mine, {name: stored[slot] for name, slot in zip(names, _slots(names))}
        finally:
            if pid is not None:
                stop_child(pid)


def _slots(names: Any) -> list[str]:
    return [f"a{i}" for i in range(len(names))]


def _numeric(arrays: Arrays) -> Arrays:
    """``{name: np.ndarray}`` of numbers (booleans, integers, floats), or TypeError."""
    out = {}
    for name, value in arrays.items():
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"split work must return numeric arrays; {name!r} has dtype {array.dtype}")
        out[str(name)] = array
    return out
