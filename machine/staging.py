"""Temporary folders that say who made them, and one writer at a time per output folder.

A command builds its output in a hidden sibling (``.OUT.tmp-*``), moves an earlier OUT aside
(``.OUT.old-*``) and ``reports.build`` stages in ``DIR/.report-build-*``. A ``kill -9`` leaves them
behind, and only a later run can remove them; it must remove *only* folders that are provably ours and
dead, never a concurrent run's. So every such folder is named :func:`staging_prefix` + random::

    .OUT.tmp-<host>-<pid>-<start>-<random>

``<host>`` is a hash of this machine's name, ``<pid>`` the creating process and ``<start>`` its start
time (clock ticks since boot, from ``/proc``; 0 where there is no ``/proc``), so a reused pid is not
mistaken for the creator. :func:`remove_stale` deletes a folder of a given prefix only when its name
has exactly this form, its host is this machine and its process is gone (no such pid, or one that
started at another time). Folders of other machines (a shared file system) are left alone.

:func:`folder_lock` serialises replacements inside one parent folder with ``fcntl.flock`` on the
folder itself (no lock file is left behind): checking that OUT may be replaced, moving it aside and
renaming the new one into place happen under it, so two processes writing the same OUT both succeed
and the last one wins whole. Elsewhere than POSIX it does nothing.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]


@functools.lru_cache(maxsize=1)
def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot; None if there is no such process; 0 where
    ``/proc`` does not exist (then only the pid is compared)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0
    except OSError:
        return 0
    # The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # a zombie (killed, not yet reaped: in a container PID 1 may never) is dead
        return None
    return int(fields[19])  # field 22 of proc(5): starttime


def owner_token() -> str:
    """``<host>-<pid>-<start>`` of this process (see the module docstring)."""
    pid = os.getpid()
    return f"{_host()}-{pid}-{_start_time(pid) or 0}"


def staging_prefix(prefix: str) -> str:
    """``prefix`` + this process' owner token + ``-``: pass it to ``tempfile.mkdtemp(prefix=...)``."""
    return f"{prefix}{owner_token()}-"


def is_stale(name: str, prefix: str) -> bool:
    """Whether a folder called ``name`` is one of ours with ``prefix`` whose creator is dead on this
    machine (see the module docstring)."""
    if not name.startswith(prefix):
        return False
    match = re.fullmatch(r"([0-9a-f]{8})-(\d+)-(\d+)-[A-Za-z0-9_]+", name[len(prefix) :])
    if match is None or match.group(1) != _host():
        return False
    pid, start = int(match.group(2)), int(match.group(3))
    if pid == os.getpid():
        return False
    now = _start_time(pid)
    return now is None or (now != 0 and start != 0 and now != start)


def remove_stale(folder: Path, prefixes: tuple[str, ...]) -> list[Path]:
    """Remove the folders in ``folder`` left by dead runs (:func:`is_stale` for one of ``prefixes``);
    return them. Nothing else is touched; an unreadable ``folder`` is no error."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if any(is_stale(entry.name, p) for p in prefixes) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` (which must exist) for the block; other processes
    wait. Not re-entrant: do not nest two locks on the same folder in one process."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # a folder we may write but not read: no lock (as before), not a failure
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
