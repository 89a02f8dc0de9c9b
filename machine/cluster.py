"""Ray for populations of independent jobs (the model zoo; later the zoo's analyses): start or join a
cluster, run tasks with retries and progress, and bring their files home.

Three pieces, each usable alone:

- :func:`ray_cluster` — a context manager. ``address=None`` starts an *embedded* local Ray instance
  sized to this machine (every CPU, its GPUs), with no dashboard, quiet logs, no usage reporting,
  listening on 127.0.0.1 only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` makes Ray use the loopback
  address for its node), private to this user on a shared host — its folder (sockets, logs) inside a
  mode-0700 temporary folder, and Ray's token authentication on with a random token per process
  (unless ``RAY_AUTH_MODE`` is set) — and shut down on exit; every process it started ends with this
  one, even after ``kill -9`` (``machine.reaper``). ``address="auto"`` or ``"HOST:PORT"`` joins a
  running cluster (``ray start --head`` on one machine, ``ray start --address HOST:PORT`` on the others)
  and leaves it running. A bad or unreachable address, or one where no Ray GCS answers within
  :data:`CONNECT_TIMEOUT_SECONDS`, is a :class:`ClusterError` naming it. Inside
  another ``ray_cluster`` block of this process (a notebook, a test module), a request the open one
  satisfies — the same address, or embedded with no other size asked — reuses it and leaves it open,
  so that a zoo and its summary pay Ray's start-up (and the workers' imports) once.
- :func:`run_tasks` — runs ``fn(item)`` for every item as a Ray task (``cpus``/``gpus`` per task,
  fractional GPUs allowed) and yields a :class:`TaskOutcome` per item as each finishes: its value or a
  one-line error, and where and how it ran (node id, host, node address, attempt count, seconds). A
  worker process that dies mid-task (killed, out of memory) is retried by Ray up to ``max_retries``
  times; an exception raised by ``fn`` is not retried (it would fail again). Leaving the loop early
  cancels every task still pending or running; on Ctrl-C or SIGTERM the process's Ray job ends
  instead, and Ray stops its tasks (see the comment in :func:`run_tasks`).
- :func:`pack_folder` / :func:`install_folder` — a folder's files as ``{relative path: bytes}`` (what a
  task returns, so workers need no shared filesystem) and their atomic installation on the driver
  (written beside the destination, then renamed into place; signals held off for the renames).

``fn`` must be a top-level function of an importable module (Ray pickles it by reference), and every
node must run the same environment (``bash scripts/setup.sh`` in a checkout of the same commit).
:class:`Progress` prints "done / total, ETA" lines for any loop of jobs, with or without Ray.

Ray is imported only inside these functions: importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from machine import reaper
from machine.names import path_component, relative_file

__all__ = [
    "ClusterError",
    "ClusterInfo",
    "Progress",
    "TaskOutcome",
    "check_resources",
    "install_folder",
    "pack_folder",
    "ray_cluster",
    "run_tasks",
]

LOOPBACK = "127.0.0.1"
CONNECT_TIMEOUT_SECONDS = 5.0  # the TCP probe of --address before Ray is asked to join


class ClusterError(ValueError):
    """The cluster cannot be started, joined or used as asked; the message is one line naming the input."""


@dataclass
class ClusterInfo:
    """What :func:`ray_cluster` connected to."""

    address: str | None  # None for the embedded instance
    embedded: bool
    cpus: float
    gpus: float
    nodes: int
    node_cpus: list[float] = field(default_factory=list)  # per alive node
    node_ips: list[str] = field(default_factory=list)

    def describe(self) -> str:
        where = "embedded local Ray" if self.embedded else f"Ray cluster at {self.address}"
        return f"{where}: {self.nodes} node(s), {self.cpus:g} CPUs, {self.gpus:g} GPUs"

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "embedded": self.embedded,
            "cpus": self.cpus,
            "gpus": self.gpus,
            "nodes": self.nodes,
            "node_ips": self.node_ips,
        }


# --- starting and joining -------------------------------------------------------------------------
_ADDRESS = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.\-]+):(?P<port>[0-9]{1,5})$")


def parse_address(address: str) -> tuple[str, int] | None:
    """``"auto"`` → None; ``"HOST:PORT"`` → (host, port); anything else → :class:`ClusterError`."""
    if address == "auto":
        return None
    match = _ADDRESS.match(address.strip())
    port = int(match["port"]) if match else 0
    if not match or not 1 <= port <= 65535:
        raise ClusterError(f"--address {address!r}: expected 'auto' or HOST:PORT (e.g. 10.0.0.5:6379)")
    return match["host"].strip("[]"), port


# An HTTP/2 client's first bytes (RFC 9113 §3.4): the preface and an empty SETTINGS frame. A gRPC
# server (Ray's GCS is one) answers with its own SETTINGS frame (9-byte header, type 0x4) at once.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_H2_SETTINGS = 0x4


def _probe(address: str, host: str, port: int, timeout: float = CONNECT_TIMEOUT_SECONDS) -> None:
    """Fail within ``timeout`` seconds per step, one line, when HOST:PORT is not a Ray GCS: nothing
    listens there, or what listens does not answer as a gRPC server (HTTP/2) does — instead of Ray's
    minutes of retries (``ray.init`` waits ~5 min on a port that accepts and never answers). A gRPC
    server that is not Ray is then caught by :func:`_check_gcs`."""
    tls = os.environ.get("RAY_USE_TLS", "0").lower() not in ("0", "false", "")
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            if tls:  # gRPC inside TLS: only Ray's client (in _check_gcs) can ask it anything
                return
            conn.settimeout(timeout)
            conn.sendall(_H2_PREFACE)
            head = b""
            while len(head) < 9:
                chunk = conn.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except socket.gaierror:
        raise ClusterError(f"--address {address}: unknown host {host!r}") from None
    except TimeoutError:
        raise ClusterError(
            f"--address {address}: no answer within {timeout:g} s: not a Ray cluster "
            "(a Ray head's GCS answers at once; start one with `ray start --head`)"
        ) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ClusterError(f"--address {address}: no Ray cluster reachable there ({reason})") from None
    if len(head) < 9 or head[3] != _H2_SETTINGS:
        raise ClusterError(
            f"--address {address}: what listens there is not a Ray cluster (it does not speak gRPC, as "
            "a Ray head's GCS does)"
        )


def _check_gcs(address: str, timeout: float = CONNECT_TIMEOUT_SECONDS) -> None:
    """Ask what listens at ``address`` one question as Ray's GCS client, bounded by ``timeout``: a
    GCS answers at once — with the value, or by refusing the made-up cluster id the question carries
    (``WrongClusterID``), or for want of an authentication token — while a gRPC server that is not
    Ray's GCS answers "unimplemented" or not at all. (``ray.init`` itself would retry for minutes.)
    The question is a key-value read; asking without a cluster id would first fetch it, unbounded
    for 30 s."""
    from ray import _raylet

    try:
        client = _raylet.GcsClient(address=address, cluster_id="00" * 28)
        client.internal_kv_get(b"reverse-encoder-interp-probe", None, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - Ray's RpcError, AuthenticationError, ...
        if type(exc).__name__ == "AuthenticationError":  # WrongClusterID, or a token is needed: a GCS
            return
        raise ClusterError(
            f"--address {address}: not a Ray cluster (its GCS did not answer within {timeout:g} s: "
            f"{first_line(exc)})"
        ) from None


def _set_loopback(embedded: bool) -> None:
    """Make Ray use 127.0.0.1 as this node's address (embedded) or the machine's address (joining).

    Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` when ``ray._private.ray_constants`` is imported;
    a process that already imported Ray (a second zoo in one Python session) is updated in place."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0" if embedded else "1"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = not embedded


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type's name when the message is empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _alive_nodes(ray) -> list[dict[str, Any]]:
    return [node for node in ray.nodes() if node.get("Alive")]


_OPEN: list[ClusterInfo] = []  # the ray_cluster block open in this process, if any
_NESTED: list[bool] = []  # one entry per open ray_cluster block that reuses it


def _reuse(info: ClusterInfo, address: str | None, num_cpus: int | None, num_gpus: int | None) -> ClusterInfo:
    """The open cluster ``info`` when it is what was asked for, else :class:`ClusterError`."""
    same_place = address == info.address
    same_size = address is not None or (num_cpus in (None, info.cpus) and num_gpus in (None, info.gpus))
    if not (same_place and same_size):
        asked = "an embedded instance" if address is None else f"--address {address}"
        if address is None and num_cpus is not None:
            asked += f" of {num_cpus} CPUs"
        raise ClusterError(f"{asked}: this process already uses the {info.describe()}; leave it first")
    return info


@contextlib.contextmanager
def ray_cluster(
    address: str | None = None, *, num_cpus: int | None = None, num_gpus: int | None = None
) -> Iterator[ClusterInfo]:
    """Start an embedded local Ray instance (``address`` None) or join one; see the module docstring.

    ``num_cpus``/``num_gpus`` size the embedded instance (default: this machine's); they are
    refused with an address (a cluster's nodes declare their own resources)."""
    embedded = address is None
    if not embedded:
        if num_cpus is not None or num_gpus is not None:
            raise ClusterError("num_cpus/num_gpus size an embedded instance only, not a joined cluster")
        parsed = parse_address(address)
        if parsed is not None:
            _probe(address, *parsed)  # before Ray is imported: nothing listening, not gRPC
    if _OPEN:  # nested: the open block's cluster, left open
        _NESTED.append(True)
        try:
            yield _reuse(_OPEN[0], address, num_cpus, num_gpus)
        finally:
            _NESTED.pop()
        return
    environment = {"RAY_USAGE_STATS_ENABLED": os.environ.get("RAY_USAGE_STATS_ENABLED", "0")}  # no report
    if embedded:  # private: token authentication (unless the user chose a mode), ended with this process
        mode = os.environ.get("RAY_AUTH_MODE", "token")
        environment["RAY_AUTH_MODE"] = mode
        if mode == "token":
            environment["RAY_AUTH_TOKEN"] = os.environ.get("RAY_AUTH_TOKEN") or _embedded_token()
        environment[reaper.MARKER] = ""
    saved = {key: os.environ.get(key) for key in (*environment, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    constants = sys.modules.get("ray._private.ray_constants")
    saved_constant = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    sigterm = signal.getsignal(signal.SIGTERM) if threading_main() else None
    temp_dir = None
    watcher = None
    ours = False  # whether this call connected (and so must shut down)
    try:
        os.environ.update(environment)
        _set_loopback(embedded)  # before Ray is imported: it reads the variable then
        import logging

        import ray

        if ray.is_initialized():
            raise ClusterError("Ray is already initialised in this process; shut it down first")
        _set_loopback(embedded)  # a Ray imported earlier in this process is updated in place
        _reset_auth_state()  # this block's RAY_AUTH_MODE and token, not those Ray read first
        if not embedded and parsed is not None:
            _check_gcs(f"{parsed[0]}:{parsed[1]}")  # a gRPC server that is not a Ray GCS
        if embedded:
            # Private: mode 0700 (mkdtemp), so no other user can reach the sockets inside, although
            # Ray makes its own folder (``ray``, given to it) world-writable. Short: socket paths
            # under it must stay below 108 bytes.
            temp_dir = tempfile.mkdtemp(prefix="rz-", dir="/tmp" if os.path.isdir("/tmp") else None)
            os.environ.pop(reaper.MARKER, None)
            watcher = reaper.start([temp_dir])  # ends every process of the instance, kill -9 included
            if watcher is not None:
                os.environ.update(watcher.environment())
        ours = True
        try:
            if embedded:
                cpus = num_cpus if num_cpus is not None else (os.cpu_count() or 1)
                ray.init(
                    address="local",  # never an existing cluster found through RAY_ADDRESS or /tmp/ray
                    num_cpus=cpus,
                    num_gpus=num_gpus,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    log_to_driver=False,
                    _temp_dir=os.path.join(temp_dir, "ray"),
                )
            else:
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except Exception as exc:  # ConnectionError, RuntimeError, ValueError from Ray
            where = "embedded Ray" if embedded else f"--address {address}"
            raise ClusterError(f"{where}: {first_line(exc)}") from None
        finally:
            # ray.init installs a SIGTERM handler that exits without cleaning up: keep the caller's.
            if sigterm is not None:
                signal.signal(signal.SIGTERM, sigterm)
        nodes = _alive_nodes(ray)
        resources = ray.cluster_resources()
        info = ClusterInfo(
            address=address,
            embedded=embedded,
            cpus=float(resources.get("CPU", 0)),
            gpus=float(resources.get("GPU", 0)),
            nodes=len(nodes),
            node_cpus=[float(n.get("Resources", {}).get("CPU", 0)) for n in nodes],
            node_ips=sorted({n.get("NodeManagerAddress", "") for n in nodes}),
        )
        if embedded and info.node_ips != [LOOPBACK]:
            raise ClusterError(f"embedded Ray: listens on {info.node_ips}, not on {LOOPBACK} only")
        _OPEN.append(info)
        try:
            yield info
        finally:
            _OPEN.pop()
    finally:
        if ours and sys.modules["ray"].is_initialized():
            sys.modules["ray"].shutdown()  # stops an embedded instance; only disconnects from a cluster
        for key, value in saved.items():  # this process's environment as it was (a notebook goes on)
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if "ray" in sys.modules:
            _reset_auth_state()
        constants = sys.modules.get("ray._private.ray_constants")
        if constants is not None:
            default = not constants.IS_WINDOWS_OR_OSX
            constants.ENABLE_RAY_CLUSTER = default if saved_constant is None else saved_constant
        if watcher is not None:
            watcher.finish()  # kills what Ray's shutdown left (none expected), removes temp_dir
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _reset_auth_state() -> None:
    """Make Ray's driver read ``RAY_AUTH_MODE`` and the token from the environment again: it reads them
    once per process and caches them (as ``ray._private.authentication_test_utils`` resets them), so
    that an embedded instance with a token can follow a GCS question or a joined cluster without one
    in the same process (a notebook, a test session), and the other way round."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except Exception:  # noqa: BLE001 - a private API: another Ray version may not have it
        pass


@functools.cache
def _embedded_token() -> str:
    """The token of this process' embedded instances (one per process: Ray's driver caches the token
    it read first). Ray's processes inherit it through the environment, which ``/proc`` shows to this
    user and root only; any other local user who reaches the instance's ports on 127.0.0.1 is refused
    (``InvalidAuthToken``)."""
    return secrets.token_hex(32)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def check_resources(info: ClusterInfo, cpus_per_task: float, gpus_per_task: float) -> None:
    """:class:`ClusterError` when no node can run a task asking for these resources."""
    if gpus_per_task > 0 and info.gpus == 0:
        raise ClusterError(
            f"--gpus-per-task {gpus_per_task:g}: the {info.describe()} has no GPU "
            "(leave --gpus-per-task at 0 to train on CPUs)"
        )
    if gpus_per_task > info.gpus:
        raise ClusterError(f"--gpus-per-task {gpus_per_task:g}: the {info.describe()} has fewer GPUs")
    if info.node_cpus and cpus_per_task > max(info.node_cpus):
        raise ClusterError(
            f"--cpus-per-task {cpus_per_task:g}: no node has that many CPUs "
            f"(largest: {max(info.node_cpus):g}; {info.describe()})"
        )


# --- tasks ----------------------------------------------------------------------------------------
@dataclass
class TaskOutcome:
    """One finished task: ``value`` (None on failure), ``error`` (one line, None on success), and
    ``info``: ``node_id``, ``hostname``, ``node_ip``, ``pid``, ``attempts``, ``seconds`` (on the
    worker; absent when the task never returned)."""

    index: int
    label: str
    value: Any = None
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _attempt_number() -> int | None:
    """0 for a task's first execution, 1 for its first retry, ... (None if Ray cannot say)."""
    try:
        import ray

        return int(ray._private.worker.global_worker.core_worker.get_current_task_attempt_number())
    except Exception:  # a private API: an older or newer Ray may not have it
        return None


def _traced(fn: Callable[[Any], Any], item: Any) -> tuple[Any, dict[str, Any]]:
    """What runs on the worker: ``fn(item)`` and where it ran."""
    import ray

    started = time.perf_counter()
    attempt = _attempt_number()
    context = ray.get_runtime_context()
    value = fn(item)
    info = {
        "node_id": context.get_node_id(),
        "hostname": socket.gethostname(),
        "node_ip": ray.util.get_node_ip_address(),
        "pid": os.getpid(),
        "attempts": None if attempt is None else attempt + 1,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return value, info


def _error_line(exc: BaseException) -> str:
    """The root cause of a task's failure, one line."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    return f"{type(exc).__name__}: {first_line(exc)}"


def run_tasks(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    labels: Sequence[str] | None = None,
    *,
    cpus: float = 1.0,
    gpus: float = 0.0,
    max_retries: int = 3,
    name: str = "task",
    poll_seconds: float = 0.5,
    max_pending: int | None = None,
) -> Iterator[TaskOutcome]:
    """Run ``fn(item)`` for every item as a Ray task (connect first with :func:`ray_cluster`) and yield
    one :class:`TaskOutcome` per item in the order they finish. Items are submitted in the given order
    (Ray starts them in about that order as resources free up); with ``max_pending`` at most that many
    are submitted and not yet yielded at any time, and ``items[i]`` is read only when it is submitted,
    so a lazy sequence whose items are large (files) keeps the driver's memory and Ray's object store
    bounded. Closing the generator early — an exception in the caller's loop, or here while waiting —
    cancels what is left; Ctrl-C, SIGTERM or exit in a command's own block ends its Ray job instead
    (see the comment at the end). ``name`` is the tasks' name in Ray (worker processes show
    ``ray::<name>`` while they run one)."""
    import ray

    labels = list(labels) if labels is not None else [str(i) for i in range(len(items))]
    remote = ray.remote(_traced).options(
        num_cpus=cpus, num_gpus=gpus, max_retries=max_retries, retry_exceptions=False, name=name
    )
    limit = len(items) if max_pending is None else max(1, int(max_pending))
    pending: dict[Any, int] = {}
    submitted = 0
    ending = False
    try:
        while submitted < len(items) or pending:
            while submitted < len(items) and len(pending) < limit:
                pending[remote.remote(fn, items[submitted])] = submitted
                submitted += 1
            done, _ = ray.wait(list(pending), num_returns=1, timeout=poll_seconds)
            for ref in done:
                i = pending.pop(ref)
                try:
                    value, info = ray.get(ref)
                except Exception as exc:  # RayTaskError (fn raised), WorkerCrashedError after retries, ...
                    outcome = TaskOutcome(i, labels[i], error=_error_line(exc))
                else:
                    outcome = TaskOutcome(i, labels[i], value=value, info=info)
                yield outcome  # outside the except: what interrupts the caller is not chained to it
    except BaseException as exc:
        ending = _process_ending(exc) and not _NESTED
        raise
    finally:
        # Left early: stop everything still queued or running — unless this process is ending (Ctrl-C,
        # SIGTERM, exit) and the ray_cluster block this runs in is the outermost one: then its Ray job
        # ends with it, and Ray ends the job's workers (an embedded instance shuts down whole).
        # Cancelling there anyway races with a task finishing at that moment, which trips a check in
        # Ray's core worker (Ray 2.60: "Tried to complete task that was not pending", with force=True
        # or not) that aborts this process instead of its clean exit. Inside a block that reuses an
        # outer one (a notebook's, a summary's), the instance outlives the exception: cancel.
        if not ending:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=False)


def _process_ending(exc: BaseException | None) -> bool:
    """Whether ``exc``, or the exception it was raised while handling (a generator closed by its
    caller's Ctrl-C gets GeneratorExit), stops the process: KeyboardInterrupt, SystemExit, or any other
    BaseException that is not an Exception (the commands' SIGTERM)."""
    for _ in range(8):
        if exc is None:
            return False
        if not isinstance(exc, Exception | GeneratorExit):
            return True
        exc = exc.__context__
    return False


# --- files home -----------------------------------------------------------------------------------
def pack_folder(folder: str | Path) -> dict[str, bytes]:
    """Every regular file under ``folder`` as ``{POSIX path relative to folder: bytes}``."""
    folder = Path(folder)
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block is done (main thread, POSIX; a no-op elsewhere)."""
    if not threading_main() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def install_folder(
    dest: str | Path, files: dict[str, bytes] | None = None, source: Path | None = None
) -> Path:
    """Put a folder at ``dest`` atomically: from ``files`` (:func:`pack_folder`'s dict, written into a
    hidden sibling first) or by renaming the folder ``source`` (which must be on the same filesystem).

    Whatever ``dest`` held before (an interrupted run's files) is replaced; readers see either the old
    folder or the complete new one. Temporary siblings are named ``.incoming-*`` / ``.replaced-*``."""
    dest = Path(dest)
    path_component(dest.name, f"{dest}: folder name")  # dest.parent is what the caller meant
    tag = f"{dest.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    incoming = dest.parent / f".incoming-{tag}"
    replaced = dest.parent / f".replaced-{tag}"
    try:
        if files is not None:
            for rel, data in files.items():
                path = incoming / relative_file(rel, f"{dest}: file")  # never outside the folder
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            incoming.mkdir(parents=True, exist_ok=True)
        elif source is not None:
            os.rename(source, incoming)
        else:
            raise ValueError("install_folder: give files or source")
        with signals_held():
            if dest.exists():
                os.rename(dest, replaced)
            os.rename(incoming, dest)
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
        shutil.rmtree(replaced, ignore_errors=True)
    return dest


def remove_leftovers(folder: Path) -> list[str]:
    """Remove ``.incoming-*`` / ``.replaced-*`` siblings a killed driver left in ``folder``."""
    removed = []
    for path in (*folder.glob(".incoming-*"), *folder.glob(".replaced-*")):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed


# --- progress -------------------------------------------------------------------------------------
class Progress:
    """Counts finished units (runs) of ``total`` and says "done/total, ETA" through ``log``."""

    def __init__(self, total: int, log: Callable[[str], None] | None, unit: str = "runs"):
        self.total, self.log, self.unit = total, log, unit
        self.done = 0
        self.started = time.perf_counter()

    def eta_seconds(self) -> float | None:
        if self.done == 0 or self.done >= self.total:
            return None if self.done == 0 else 0.0
        elapsed = time.perf_counter() - self.started
        return elapsed / self.done * (self.total - self.done)

    def advance(self, units: int, message: str) -> None:
        self.done += units
        eta = self.eta_seconds()
        tail = "" if eta is None or self.done >= self.total else f", ETA {format_seconds(eta)}"
        if self.log is not None:
            self.log(f"[{self.done}/{self.total} {self.unit}{tail}] {message}")


def format_seconds(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
