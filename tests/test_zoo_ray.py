"""The zoo on its Ray engine, for real: an embedded local Ray instance in a child process (as a user
runs it), a worker killed with SIGKILL mid-task, Ctrl-C on the driver, a task that fails, bad
addresses and GPU requests. The multi-node run is in test_zoo_cluster.py.

Every zoo here is compared with the same zoo trained by the sequential engine in this process: the
weights must be equal to the last bit (same seeds, one thread, same stacked ensemble)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from models import zoo

TINY = "--train-size 1280 --val-size 64 --test-size 64 --max-steps 40".split()
GRID = "--seeds 2 --heads 1 --layers 1 --positional-embeddings sinusoidal --d-model 16".split()
NAMES = [f"fast_{pe}_L1_H1_D16_seed{s}" for pe in ("sinusoidal", "none") for s in (0, 1)]
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
TIMEOUT = 240  # seconds for one zoo process at most (a loaded 2-core machine); they take 15-40 s


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The tiny zoo trained by the sequential engine (ensembles on), in this process."""
    out = tmp_path_factory.mktemp("reference")
    spec = zoo.ZooSpec(
        seeds=2,
        heads=(1,),
        layers=(1,),
        positional_embeddings=("sinusoidal",),
        d_models=(16,),
        train_args=TINY,
    )
    with pytest.MonkeyPatch.context() as mp:  # the measured throughput goes to a private cache
        mp.setenv("REVERSE_ENCODER_INTERP_CACHE", str(out / "cache"))
        zoo.run_zoo(out / "zoo", spec, engine=zoo.ZooEngine(engine="sequential"))
    return out / "zoo"


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "REVERSE_ENCODER_INTERP_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}


def _zoo_process(out: Path, tmp_path: Path, *flags: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "models.zoo", "--out", str(out), *GRID, *flags, "--", *TINY]
    return subprocess.Popen(
        command, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _same_weights(a: Path, b: Path) -> bool:
    sa = torch.load(a / "model.pt", weights_only=True)["state_dict"]
    sb = torch.load(b / "model.pt", weights_only=True)["state_dict"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _finished(out: Path) -> list[str]:
    return sorted(
        p.name for p in out.iterdir() if (p / "metrics.json").is_file() and (p / "model.pt").is_file()
    )


def _assert_gone(pids: set[int]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in pids):
        time.sleep(0.2)
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes left running: {alive}"


def test_a_worker_killed_mid_task_is_retried_and_the_zoo_equals_the_sequential_one(reference, tmp_path):
    out = tmp_path / "zoo"
    proc = _zoo_process(out, tmp_path)
    killed, seen, listening = None, set(), set()
    deadline = time.monotonic() + TIMEOUT
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            family = _descendants(proc.pid)
            seen |= {p.pid for p in family}
            pids = {p.pid for p in family}
            for conn in psutil.net_connections(kind="inet"):
                if conn.pid in pids and conn.status == psutil.CONN_LISTEN:
                    listening.add(conn.laddr.ip)
            if killed is None:
                for p in family:
                    try:
                        if p.name().startswith("ray::zoo-task"):
                            os.kill(p.pid, signal.SIGKILL)  # the worker dies mid-task
                            killed = p.pid
                            break
                    except psutil.NoSuchProcess:
                        pass
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
    _, err = proc.communicate()
    assert proc.returncode == 0, err
    assert killed is not None, "no worker was seen running a task"
    # the embedded instance listened, and only on the loopback interface
    assert listening and listening <= LOOPBACK, listening
    manifest = json.loads((out / "zoo.json").read_text())
    runs = {r["name"]: r for r in manifest["runs"]}
    assert sorted(runs) == sorted(NAMES) and _finished(out) == sorted(NAMES)
    assert {r["status"] for r in runs.values()} == {"trained"}
    assert {(r["engine"], r["node_ip"], r["ensemble_size"]) for r in runs.values()} == {
        ("ray", "127.0.0.1", 2)
    }
    assert max(r["attempts"] for r in runs.values()) == 2  # the killed task ran again
    assert all(
        r["node_id"] and r["hostname"] == socket.gethostname() and r["seconds"] > 0 for r in runs.values()
    )
    assert manifest["engine"]["cluster"]["embedded"] is True
    assert "[4/4 runs]" in err and "attempt 2" in err
    for name in NAMES:
        assert _same_weights(out / name, reference / name), name
    assert not list(out.glob(".incoming-*")) and not list(out.glob(".replaced-*"))
    _assert_gone(seen)  # the embedded instance was shut down with the zoo


def test_ctrl_c_cancels_the_tasks_keeps_finished_runs_and_the_same_command_continues(reference, tmp_path):
    out = tmp_path / "zoo"
    # one run per task and one task at a time (each takes the 2-CPU embedded instance): after the
    # first two runs, two tasks are still to come when Ctrl-C arrives
    flags = ("--cpus-per-task", "2", "--max-ensemble", "1")
    proc = _zoo_process(out, tmp_path, *flags)
    seen: set[int] = set()
    deadline = time.monotonic() + TIMEOUT
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            seen |= {p.pid for p in _descendants(proc.pid)}
            if len(list(out.glob("*/metrics.json"))) >= 2:
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.05)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("error: interrupted")
    kept = _finished(out)
    assert 2 <= len(kept) < 4
    assert sorted(p.name for p in out.iterdir()) == sorted([*kept, "zoo.json"])  # nothing half-written
    _assert_gone(seen)
    stamps = {name: (out / name / "model.pt").stat().st_mtime_ns for name in kept}
    again = _zoo_process(out, tmp_path, *flags)
    _, err = again.communicate(timeout=TIMEOUT)
    assert again.returncode == 0, err
    runs = {r["name"]: r for r in json.loads((out / "zoo.json").read_text())["runs"]}
    assert {n: r["status"] for n, r in runs.items()} == {
        n: "skipped" if n in kept else "trained" for n in NAMES
    }
    assert all((out / n / "model.pt").stat().st_mtime_ns == t for n, t in stamps.items())  # not trained twice
    for name in NAMES:
        assert _same_weights(out / name, reference / name), name


def test_a_failing_task_is_named_and_the_other_tasks_finish(reference, tmp_path):
    out = tmp_path / "zoo"
    out.mkdir()
    broken = out / NAMES[2]  # an interrupted run whose last checkpoint is unreadable
    shutil.copytree(reference / NAMES[2], broken)
    (broken / "metrics.json").unlink()
    (broken / "model.pt").unlink()
    (broken / "checkpoints").mkdir()
    (broken / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    before = sorted(str(p.relative_to(broken)) for p in broken.rglob("*"))
    proc = _zoo_process(out, tmp_path)
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: 1 of 3 tasks failed: {NAMES[2]} (")
    runs = {r["name"]: r for r in json.loads((out / "zoo.json").read_text())["runs"]}
    assert runs[NAMES[2]]["status"] == "failed" and runs[NAMES[2]]["error"]
    assert {runs[n]["status"] for n in NAMES if n != NAMES[2]} == {"trained"}
    assert _finished(out) == sorted(n for n in NAMES if n != NAMES[2])
    assert sorted(str(p.relative_to(broken)) for p in broken.rglob("*")) == before  # left as it was
    for name in (NAMES[0], NAMES[1]):
        assert _same_weights(out / name, reference / name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "address, message",
    [
        ("nonsense", "--address 'nonsense': expected 'auto' or HOST:PORT"),
        ("127.0.0.1:99999", "expected 'auto' or HOST:PORT"),
        (None, "no Ray cluster reachable there (Connection refused)"),
    ],
)
def test_an_unknown_or_unreachable_address_is_one_line_and_writes_nothing(tmp_path, capsys, address, message):
    address = address or f"127.0.0.1:{_free_port()}"
    out = tmp_path / "zoo"
    assert zoo.main(["--out", str(out), *GRID, "--address", address]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --address ") and address in err and message in err and err.count("\n") == 1
    assert not out.exists()


def test_gpus_per_task_on_a_machine_without_gpus_is_one_line(tmp_path):
    out = tmp_path / "zoo"
    command = [sys.executable, "-m", "models.zoo", "--out", str(out), *GRID, "--gpus-per-task", "0.25"]
    result = subprocess.run(command, env=_env(tmp_path), capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --gpus-per-task 0.25: the embedded local Ray: 1 node(s)")
    assert "has no GPU" in result.stderr and result.stderr.count("\n") == 1
    assert not out.exists()


def test_the_cluster_helpers_in_one_python_session(tmp_path, monkeypatch):
    """models.cluster as another command (zoo_summary) will use it: start, run tasks, fail one, leave
    the process as it found it."""
    import math

    from models import cluster

    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with cluster.ray_cluster(num_cpus=1) as info:
        assert info.embedded and info.node_ips == ["127.0.0.1"] and info.cpus == 1.0 and info.gpus == 0.0
        with pytest.raises(cluster.ClusterError, match="--gpus-per-task 1: .* has no GPU"):
            cluster.check_resources(info, 1.0, 1.0)
        with pytest.raises(cluster.ClusterError, match="already initialised"):
            with cluster.ray_cluster():
                pass
        outcomes = list(cluster.run_tasks(math.sqrt, [4.0, -1.0, 9.0], ["four", "minus one", "nine"]))
    by_label = {o.label: o for o in outcomes}
    assert by_label["four"].value == 2.0 and by_label["nine"].value == 3.0
    assert (
        by_label["minus one"].value is None and by_label["minus one"].error == "ValueError: math domain error"
    )
    assert by_label["four"].info["attempts"] == 1 and by_label["four"].info["node_ip"] == "127.0.0.1"
    import ray

    assert not ray.is_initialized()
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ and "RAY_AUTH_MODE" not in os.environ
    folder = tmp_path / "a"
    (folder / "b").mkdir(parents=True)
    (folder / "b" / "c.txt").write_text("c")
    files = cluster.pack_folder(folder)
    assert files == {"b/c.txt": b"c"}
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "old.txt").write_text("replaced whole")
    cluster.install_folder(tmp_path / "dest", files=files)
    assert cluster.pack_folder(tmp_path / "dest") == files and not list(tmp_path.glob(".*"))
    with pytest.raises(ValueError, match="refusing the file name"):
        cluster.install_folder(tmp_path / "evil", files={"../x": b""})
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".incoming-*"))
