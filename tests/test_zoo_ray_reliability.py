"""Issue 27 on Ray, for real: a zoo driver killed with SIGKILL or SIGTERM mid-task leaves no process
(Ray's DashboardAgent and RuntimeEnvAgent included), no session folder and no ``zoo-task-*`` folder
(``machine.reaper``); SIGTERM answers ``error: terminated`` and 143; ``--address`` at a TCP port that
is not Ray is one line and exit 2 within a bounded time, and SIGTERM while connecting is 143; the
embedded instance's folder is private (mode 0700).

Everything stays on loopback (the embedded instance listens on 127.0.0.1 only; the listeners here
bind 127.0.0.1). Each driver process has its own embedded instance and a private ``TMPDIR``, so that
its task folders can be told from other processes'."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from process_family import alive, family

from machine import cluster, reaper
from models.zoo import cli as zoo

TINY = "--train-size 640 --val-size 64 --test-size 64 --max-steps 20".split()
GRID = "--seeds 2 --heads 1 --layers 1 --positional-embeddings sinusoidal --d-model 16".split()
TIMEOUT = 240  # seconds for a driver to reach its first task at most (loaded 2-core machine)
GONE_WITHIN = 60  # seconds for every process of a killed driver to end (measured: see docs/reliability.md)
RZ = re.compile(r"(/tmp/rz-[^/\s]+)")


def _env(tmp_path: Path) -> dict[str, str]:
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir(exist_ok=True)
    return {
        **os.environ,
        "REVERSE_ENCODER_INTERP_CACHE": str(tmp_path / "cache"),
        "PYTHONUNBUFFERED": "1",
        "TMPDIR": str(tmpdir),
    }


def _start_driver(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "zoo"
    argv = ["--out", str(out), *GRID, "--cpus-per-task", "2", "--max-ensemble", "1", "--", *TINY]
    proc = subprocess.Popen(
        [sys.executable, "-m", "models.zoo", *argv],
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, out


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_driver_killed_mid_task_leaves_no_process_and_no_folder(tmp_path, signum):
    proc, out = _start_driver(tmp_path)
    tasks = tmp_path / "tmpdir"
    seen: dict[int, str] = {}
    deadline = time.monotonic() + TIMEOUT
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            seen |= family(proc.pid)
            running = [p for p in tasks.glob("zoo-task-*") if p.is_dir()]
            agents = [c for c in seen.values() if "dashboard/agent.py" in c or "runtime_env/agent" in c]
            if running and agents:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        seen |= family(proc.pid)
        sent = time.monotonic()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    while alive(seen) and time.monotonic() - sent < GONE_WITHIN:
        time.sleep(0.1)
    cleanup = time.monotonic() - sent
    names = {pid: cmd[:80] for pid, cmd in seen.items()}
    assert not alive(seen), {pid: names[pid] for pid in alive(seen)}
    print(f"\n{signal.Signals(signum).name}: driver signalled → every process gone in {cleanup:.1f} s")
    assert any("raylet" in c for c in seen.values()) and any("dashboard/agent.py" in c for c in seen.values())
    session = {m.group(1) for c in seen.values() if (m := RZ.search(c))}
    assert len(session) == 1, session
    private = Path(next(iter(session)))
    folder_deadline = time.monotonic() + 10  # the watcher removes folders after the last process
    while (private.exists() or list(tasks.iterdir())) and time.monotonic() < folder_deadline:
        time.sleep(0.1)
    assert not private.exists()  # the instance's private folder
    assert not list(tasks.iterdir())  # no zoo-task-* folder left in TMPDIR
    assert not list(out.glob(".incoming-*")) and not list(out.glob(".replaced-*"))
    if signum == signal.SIGTERM:
        assert proc.returncode == 143, err
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: terminated"), err
        assert "SystemError" not in err and "Traceback" not in err, err
    else:
        assert proc.returncode == -signal.SIGKILL


# --- addresses that are not Ray ---------------------------------------------------------------------
class _Listener:
    """A TCP listener on 127.0.0.1 that accepts connections and then says nothing (``reply`` None) or
    answers ``reply`` (an HTTP/1 server, say) — anything but a Ray GCS."""

    def __init__(self, reply: bytes | None = None):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.accepted = threading.Event()
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            self.accepted.set()
            if self.reply is not None:
                try:
                    conn.sendall(self.reply)
                except OSError:
                    pass

    def close(self):
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.mark.parametrize(
    "reply, message",
    [
        (None, "no answer within 5 s: not a Ray cluster"),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "not a Ray cluster (it does not speak gRPC"),
        # an HTTP/2 server's SETTINGS frame, then silence: past the probe, Ray's health check (bounded)
        (b"\x00\x00\x00\x04\x00\x00\x00\x00\x00", "Ray"),
    ],
)
def test_an_address_that_is_not_ray_is_one_line_within_a_bounded_time(tmp_path, capsys, reply, message):
    listener = _Listener(reply)
    address = f"127.0.0.1:{listener.port}"
    try:
        out = tmp_path / "zoo"
        assert zoo.main(["--out", str(out), *GRID, "--address", address, "--", *TINY]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: --address {address}: ") and message in err[0], err
        assert not out.exists()
    finally:
        listener.close()
    assert listener.accepted.is_set()


def test_zoo_summary_with_an_address_that_is_not_ray_is_one_line(tmp_path, capsys):
    """On a zoo that holds a finished run, so that the summary reaches the cluster."""
    from analyses.zoo_summary import __main__ as zs_cli
    from models.zoo.cli import ZooEngine, ZooSpec, run_zoo

    spec = ZooSpec(seeds=1, heads=(1,), layers=(1,), positional_embeddings=("sinusoidal",), d_models=(16,))
    spec.control, spec.train_args = False, TINY
    os.environ.setdefault("REVERSE_ENCODER_INTERP_CACHE", str(tmp_path / "cache"))
    run_zoo(tmp_path / "zoo", spec, engine=ZooEngine(engine="sequential", ensemble=False))
    listener = _Listener()
    address = f"127.0.0.1:{listener.port}"
    try:
        argv = [str(tmp_path / "zoo"), "--out", str(tmp_path / "s"), "--address", address]
        assert zs_cli.main([*argv, "--num-sequences", "16"]) == 2
    finally:
        listener.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: --address {address}: no answer within 5 s: not a Ray cluster " + (
        "(a Ray head's GCS answers at once; start one with `ray start --head`)"
    )
    assert listener.accepted.is_set() and not (tmp_path / "s").exists()


def test_sigterm_while_connecting_is_143_and_one_line(tmp_path):
    listener = _Listener()
    out = tmp_path / "zoo"
    address = f"127.0.0.1:{listener.port}"
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "models.zoo", "--out", str(out), *GRID, "--address", address, "--", *TINY],
            env=_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert listener.accepted.wait(timeout=TIMEOUT)  # the driver is connecting now
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    finally:
        listener.close()
    assert proc.returncode == 143, err
    assert err.strip().splitlines() == [
        "error: terminated (finished runs are kept; run the same command to continue)"
    ]
    assert not out.exists()


# --- the embedded instance: private, and ended whole ------------------------------------------------
def test_the_embedded_instance_is_private_and_ends_whole(tmp_path):
    # this process' descendants before the instance (a test process may keep a browser of the browser
    # tests alive): only what the instance starts is its family
    before = set(family(os.getpid()))
    with cluster.ray_cluster(num_cpus=1) as info:
        import ray

        session = Path(ray._private.worker._global_node.get_session_dir_path())
        assert info.node_ips == ["127.0.0.1"]
        private = next(p for p in session.parents if p.name.startswith("rz-"))
        assert stat.S_IMODE(private.stat().st_mode) == 0o700  # other users cannot reach the sockets
        assert (private / "ray") in session.parents
        started = {pid: command for pid, command in family(os.getpid()).items() if pid not in before}
        assert any("raylet" in c for c in started.values())
        # another local user's process reaches 127.0.0.1 too, but not the token (in this user's environ)
        gcs = ray._private.worker._global_node.gcs_address
        intruder = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
        intruder["RAY_AUTH_MODE"] = "disabled"
        ask = f"import ray._raylet as r; r.GcsClient(address='{gcs}').internal_kv_get(b'x', None, timeout=5)"
        answer = subprocess.run(
            [sys.executable, "-c", ask], env=intruder, capture_output=True, text=True, timeout=120
        )
        assert answer.returncode != 0 and "InvalidAuthToken" in answer.stderr, answer.stderr[-2000:]
        tracked = set(reaper._Tracker(os.environ[reaper.MARKER], exclude={os.getpid()}).scan())
        untracked = [started[pid] for pid in set(started) - tracked]
        assert all("machine.reaper" in command for command in untracked), untracked  # the watcher alone
        assert tracked <= set(started)  # what the watcher would kill: this instance's processes only
    assert reaper.MARKER not in os.environ
    deadline = time.monotonic() + 30
    while alive(started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(started) and not private.exists()
