"""The processes a test (or a benchmark) started, seen through psutil: an observer independent of
``machine.reaper``, which reads ``/proc`` itself, so that the reaper is never checked with its own eyes.

psutil is not a dependency of the project: it comes with Ray, and only the Ray tests and
``benchmarks/zoo_cleanup.py`` (which puts this folder on ``sys.path``) use this module."""

from __future__ import annotations

from collections.abc import Iterable

import psutil


def family(pid: int) -> dict[int, str]:
    """pid → command line of every descendant of ``pid`` now ({} if ``pid`` is gone)."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return {}
    found = {}
    for child in children:
        try:
            found[child.pid] = " ".join(child.cmdline())
        except psutil.Error:  # gone meanwhile, or not ours to read
            pass
    return found


def alive(pids: Iterable[int]) -> list[int]:
    """The pids of ``pids`` that are running (a zombie, waiting for its parent to reap it, is not)."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out
