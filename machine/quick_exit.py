"""End a command's process without the garbage collector's walks over every object at teardown.

At exit, Python's teardown runs the cyclic garbage collector over everything still alive — some
300,000 objects after an analysis (torch, matplotlib, the results) — which took 0.8–1.0 s of
``python -m analyses.qk_circuit``'s ~10 s here. :func:`exit_process` first moves every object to the
collector's permanent generation (``gc.freeze``), which its walks skip; the rest of the exit is Python's
own: ``atexit`` handlers run, standard streams are flushed, objects are freed by reference counting.
What changes: objects held only by reference cycles are not collected, so their finalizers
(``__del__``, a file object's flush on close) do not run — a command must close its files before
``main`` returns (the commands here write every file atomically and close it). For the ``__main__``
block of a command (``python -m ...``) only: a library, notebook or test process goes on collecting
its garbage.
"""

from __future__ import annotations

import gc
import sys
from typing import NoReturn


def exit_process(code: int | None) -> NoReturn:
    """``sys.exit(code)``, the collector's teardown walks skipped (see the module docstring)."""
    gc.freeze()
    sys.exit(code)
