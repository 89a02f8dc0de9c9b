"""SIGTERM that unwinds like Ctrl-C, everywhere — inside Ray's and Lightning's code too.

A command's SIGTERM handler (``timeout``, a job scheduler, ``kill``) raises :class:`Terminated`, a
``KeyboardInterrupt``: code that must handle an interrupt — Ray's core worker while it waits for
tasks, Lightning while it fits — handles this one as it handles Ctrl-C. (A ``BaseException`` of our
own raised inside ``ray.wait`` escapes Ray's signal check and surfaces as ``SystemError: <cyfunction
CoreWorker.wait> returned a result with an exception set``; Ray turns a ``KeyboardInterrupt`` into
a fresh ``KeyboardInterrupt``.) Because such code may re-raise a plain ``KeyboardInterrupt``, which
signal it was is kept aside: :func:`received` says whether SIGTERM arrived inside the block, so the
command answers ``error: terminated`` and 143, not ``interrupted`` and 130.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["Terminated", "handling_sigterm", "received"]

_RECEIVED: list[bool] = [False]


class Terminated(KeyboardInterrupt):
    """Raised by the SIGTERM handler of :func:`handling_sigterm`."""


def _on_sigterm(signum: int, frame: Any) -> None:
    _RECEIVED[0] = True
    raise Terminated()


def received() -> bool:
    """Whether SIGTERM arrived inside the innermost :func:`handling_sigterm` block."""
    return _RECEIVED[0]


@contextlib.contextmanager
def handling_sigterm() -> Iterator[None]:
    """Inside the block (main thread only; elsewhere a no-op), SIGTERM raises :class:`Terminated`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    _RECEIVED[0] = False
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
