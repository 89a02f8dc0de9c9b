"""Every process of an embedded Ray instance ends with the process that started it — even by ``kill -9``.

Ray's own fate-sharing (``prctl(PR_SET_PDEATHSIG)``) covers the processes ``ray.init`` starts itself
(GCS, raylet, log monitor), but not the ones the raylet starts: its DashboardAgent and RuntimeEnvAgent
and the workers outlive a ``kill -9`` of the driver, re-parented to PID 1 (measured with Ray 2.60:
still alive after 60 s). So :func:`start` launches a small watcher process *before* ``ray.init``:

- the driver puts a random marker in its environment (``REVERSE_ENCODER_RAY_SESSION=<hex>``), which
  every process Ray starts inherits (GCS, raylet, agents, workers: they all start from the driver's
  environment), and removes it again when the instance is shut down;
- the watcher holds the read end of a pipe whose write end only the driver holds. The pipe reaches
  end-of-file when the driver closes it (the end of ``machine.cluster.ray_cluster``) or when the driver
  dies, however it dies (the kernel closes a dead process' descriptors);
- meanwhile, once a second, it notes the instance's processes: those whose environment carries the
  marker (``/proc/<pid>/environ``, readable by the same user and root only) and every descendant of
  one — Ray's Python processes (agents, workers) rename themselves with ``setproctitle``, which
  overwrites the environment ``/proc`` shows, but they are the raylet's children. Each is noted with
  its start time, so that a reused pid is never taken for it;
- at end-of-file it sends SIGKILL to every noted process still alive (and to their descendants),
  again until none is left, removes the instance's private temporary folder and the ``zoo-task-*``
  folders of dead tasks (``machine.staging``'s owner check), and exits.

The watcher runs in a session of its own and ignores SIGINT, SIGTERM and SIGHUP, so that Ctrl-C in a
terminal (sent to the whole process group) or a ``kill`` of the driver does not end it before it has
done its work. Linux only (``/proc``); elsewhere :func:`start` returns None and Ray's own shutdown is
all there is. Standard library only: it starts in ~50 ms.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["MARKER", "Reaper", "marked_processes", "start"]

MARKER = "REVERSE_ENCODER_RAY_SESSION"
TASK_PREFIXES = ("zoo-task-",)  # temporary folders of tasks (machine.staging names), under $TMPDIR
SCAN_SECONDS = 30.0  # keep killing what appears (a process being forked) this long at most
WATCH_SECONDS = 1.0  # how often the watcher looks at the process table while the driver lives


def _processes() -> dict[int, tuple[int, int]]:
    """pid → (parent pid, start time in clock ticks) of this user's processes (``/proc/<pid>/stat``)."""
    table = {}
    uid = os.getuid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):  # gone meanwhile
            continue
        if fields[0] != b"Z":  # a zombie holds nothing and cannot be killed: its parent reaps it
            table[int(entry.name)] = (int(fields[1]), int(fields[19]))
    return table


def _marked(pid: int, marker: str) -> bool:
    needle = f"{MARKER}={marker}".encode()
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return needle in f.read().split(b"\0")
    except OSError:
        return False


def marked_processes(marker: str, exclude: set[int] = frozenset()) -> list[int]:
    """Pids of this user's processes whose environment holds ``MARKER=marker`` now (a process that
    rewrote its environment area for its title, as Ray's Python processes do, no longer shows it)."""
    return [pid for pid in _processes() if pid not in exclude and _marked(pid, marker)]


class _Tracker:
    """The processes of one instance, as (pid, start time): every process that carried the marker when
    first seen, and every descendant of one (the raylet's agents and workers retitle themselves with
    ``setproctitle``, which overwrites the environment ``/proc`` shows, but they are the raylet's
    children). Start times make a reused pid a different process."""

    def __init__(self, marker: str, exclude: set[int]):
        self.marker, self.exclude = marker, exclude
        self.members: set[tuple[int, int]] = set()
        self.checked: set[tuple[int, int]] = set()

    def scan(self) -> list[int]:
        """Update the members from the process table; return the pids alive now that are members."""
        table = _processes()
        for pid, (_, start) in table.items():
            key = (pid, start)
            if key not in self.checked and pid not in self.exclude:
                self.checked.add(key)
                if _marked(pid, self.marker):
                    self.members.add(key)
        changed = True
        while changed:  # descendants of members, whatever their environment shows
            changed = False
            alive = {pid for pid, start in self.members if table.get(pid, (0, -1))[1] == start}
            for pid, (ppid, start) in table.items():
                if ppid in alive and (pid, start) not in self.members and pid not in self.exclude:
                    self.members.add((pid, start))
                    changed = True
        return sorted(pid for pid, start in self.members if table.get(pid, (0, -1))[1] == start)


def reap(tracker: _Tracker, folders: list[str]) -> int:
    """Kill the instance's processes until none is left (or :data:`SCAN_SECONDS`), then remove
    ``folders`` and the temporary task folders whose creators are dead; return how many were killed."""
    killed: set[int] = set()
    deadline = time.monotonic() + SCAN_SECONDS
    while time.monotonic() < deadline:
        alive = tracker.scan()
        if not alive:
            break
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except OSError:
                pass
        time.sleep(0.05)
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    try:
        from machine.staging import remove_stale

        remove_stale(Path(tempfile.gettempdir()), TASK_PREFIXES)
    except Exception:  # noqa: BLE001 - a watcher must finish its work whatever one step does
        pass
    return len(killed)


class Reaper:
    """The watcher of one embedded instance (see the module docstring): :meth:`environment` is what
    the driver adds to its environment before ``ray.init``; :meth:`finish` (after ``ray.shutdown``)
    lets it reap and waits for it."""

    def __init__(self, process: subprocess.Popen, marker: str):
        self.process, self.marker = process, marker

    def environment(self) -> dict[str, str]:
        return {MARKER: self.marker}

    def finish(self, timeout: float = SCAN_SECONDS + 5) -> None:
        try:
            self.process.stdin.close()  # end-of-file: the watcher reaps
        except OSError:
            pass
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:  # pragma: no cover - a stuck /proc; it will finish alone
            pass


def start(folders: list[str]) -> Reaper | None:
    """Start the watcher for an instance about to be started by this process (None where there is no
    ``/proc``). ``folders`` are removed when it reaps."""
    if not sys.platform.startswith("linux") or not os.path.isdir("/proc/self"):
        return None
    marker = os.urandom(12).hex()
    root = str(Path(__file__).resolve().parent.parent)  # the checkout: `machine` importable from there
    env = {k: v for k, v in os.environ.items() if k != MARKER}
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    process = subprocess.Popen(
        [sys.executable, "-m", "machine.reaper", marker, str(os.getpid()), *folders],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C in a terminal reaches the driver's process group, not this
        close_fds=True,
        env=env,
        cwd="/",
    )
    return Reaper(process, marker)


def _main(argv: list[str]) -> int:
    import select

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    marker, parent, folders = argv[0], int(argv[1]), argv[2:]
    tracker = _Tracker(marker, exclude={os.getpid(), parent})
    stdin = sys.stdin.buffer.raw
    while True:  # until the driver closes the pipe or dies; meanwhile learn the instance's processes
        ready, _, _ = select.select([stdin], [], [], WATCH_SECONDS)
        if ready and not stdin.read(65536):
            break
        tracker.scan()
    reap(tracker, folders)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
