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

import sys
from collections.abc import Callable

from machine import termination


class UserError(Exception):
    """A mistake in the command line or its inputs: reported as one line, exit code 2."""


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
    with termination.handling_sigterm():  # SIGTERM unwinds like Ctrl-C (inside Ray's wait too)
        try:
            return int(body() or 0)
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        except (UserError, ValueError, OSError) as e:
            print(error_line(e), file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (machine.termination)
            if termination.received():
                print("error: terminated", file=sys.stderr)
                return 143
            print("error: interrupted", file=sys.stderr)
            return 130
