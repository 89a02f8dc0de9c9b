"""How a command ends: one ``error: ...`` line and exit code 2 for a user mistake, 130 on Ctrl-C,
143 on SIGTERM — never a traceback for something the user can fix, never a half-written output.

:func:`run_cli` wraps the body of every command (``python -m analyses.<name>``, ``reports.build``):

- :class:`UserError`, ``ValueError`` and ``OSError`` → their first line as ``error: ...``, exit 2;
- argparse's own exits (``--help``, a bad flag) → their code;
- ``KeyboardInterrupt`` → ``error: interrupted``, exit 130;
- SIGTERM (``timeout``, a job scheduler) unwinds like Ctrl-C — ``finally`` blocks and context managers
  run, so temporary folders are removed — then ``error: terminated``, exit 143;
- anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from typing import Any


class UserError(Exception):
    """A mistake in the command line or its inputs: reported as one line, exit code 2."""


class _Terminated(BaseException):
    """Raised by the SIGTERM handler of :func:`run_cli`."""


def _terminated(signum: int, frame: Any) -> None:
    raise _Terminated()


def error_line(error: BaseException) -> str:
    """``error: <first line of the message>`` (the exception's type when it has no message)."""
    message = str(error).strip()
    return f"error: {message.splitlines()[0] if message else type(error).__name__}"


def run_cli(body: Callable[[], int | None]) -> int:
    """Run a CLI body and return its exit code (see the module docstring)."""
    import matplotlib

    # Commands only write figure files: use the file backend whatever display the machine has
    # (library modules leave the backend alone so notebooks keep their inline figures).
    matplotlib.use("Agg")
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
    try:
        return int(body() or 0)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except (UserError, ValueError, OSError) as e:
        print(error_line(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print("error: terminated", file=sys.stderr)
        return 143
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
