"""The zoo and its summary on the Ray engine, for real: a worker killed with SIGKILL mid-task, a task
that fails, Ctrl-C on a zoo driver process (with its own embedded instance, as a user runs it), bad
addresses and GPU requests, and zoo_summary's Ray tasks against its sequential engine. The multi-node
run is in test_zoo_cluster.py.

Ray's start-up and its workers' imports (torch, Lightning) are most of a tiny zoo's cost, so the tests
that need no driver process of their own share one embedded instance in this process (``session``,
held open by ``machine.cluster.ray_cluster``; the zoo's and the summary's own ``ray_cluster`` blocks
reuse it, and its workers stay warm between tests). Every zoo here is compared with the same zoo
trained by the sequential engine in this process with the same tasks (ensembles, or every run alone):
the weights must be equal to the last bit (same seeds, one thread, same kernels on the same shapes).
An ensemble member is never compared bit for bit with its seed trained alone: the batched products
round differently (tests/test_ensemble.py compares those)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch

from machine import cluster
from machine.devices import kernel_paths
from models.zoo import cli as zoo

TINY = "--train-size 640 --val-size 64 --test-size 64 --max-steps 20".split()
GRID = "--seeds 2 --heads 1 --layers 1 --positional-embeddings sinusoidal --d-model 16".split()
SPEC = dict(seeds=2, heads=(1,), layers=(1,), positional_embeddings=("sinusoidal",), d_models=(16,))
NAMES = [f"fast_{pe}_L1_H1_D16_seed{s}" for pe in ("sinusoidal", "none") for s in (0, 1)]
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
TIMEOUT = 240  # seconds for one zoo at most (a loaded 2-core machine); they take 5-40 s
# The module's instance has 2 CPUs; tasks asking for both run one at a time, so Ray reuses the worker
# that already imported torch and Lightning instead of warming a second one (~6 CPU seconds each).
ONE_AT_A_TIME = 2.0


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory):
    """The measured throughput that every zoo records goes to a private cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REVERSE_ENCODER_INTERP_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def reference(tmp_path_factory, private_cache) -> Path:
    """The tiny zoo trained by the sequential engine (ensembles on), in this process."""
    out = tmp_path_factory.mktemp("reference") / "zoo"
    zoo.run_zoo(out, zoo.ZooSpec(**SPEC, train_args=TINY), engine=zoo.ZooEngine(engine="sequential"))
    return out


@pytest.fixture(scope="module")
def reference_alone(tmp_path_factory, private_cache) -> Path:
    """The tiny zoo trained by the sequential engine with every run alone (``--max-ensemble 1``)."""
    out = tmp_path_factory.mktemp("reference_alone") / "zoo"
    engine = zoo.ZooEngine(engine="sequential", max_ensemble=1)
    zoo.run_zoo(out, zoo.ZooSpec(**SPEC, train_args=TINY), engine=engine)
    return out


@pytest.fixture(scope="module")
def session(private_cache):
    """One embedded Ray instance (2 CPUs) for this module; afterwards Ray is shut down, its processes
    are gone and this process's environment is as it was."""
    import ray

    before = {key: os.environ.get(key) for key in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE")}
    seen: set[int] = set()
    with cluster.ray_cluster(num_cpus=2) as info:
        yield info
        seen = {p.pid for p in psutil.Process().children(recursive=True)}
    assert not ray.is_initialized()
    assert {key: os.environ.get(key) for key in before} == before
    _assert_gone(seen)


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "REVERSE_ENCODER_INTERP_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}


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


def _in_a_thread(target) -> tuple[threading.Thread, dict]:
    """Run ``target()`` in a thread; the dict gets its ``value`` or ``error``."""
    answer: dict = {}

    def body():
        try:
            answer["value"] = target()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            answer["error"] = e

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, answer


# --- faults ---------------------------------------------------------------------------------------
def test_a_worker_killed_mid_task_is_retried_and_the_zoo_equals_the_sequential_one(
    session, reference, tmp_path
):
    out, lines = tmp_path / "zoo", []
    spec = zoo.ZooSpec(**SPEC, train_args=TINY)
    engine = zoo.ZooEngine(cpus_per_task=ONE_AT_A_TIME)
    thread, answer = _in_a_thread(lambda: zoo.run_zoo(out, spec, log=lines.append, engine=engine))
    killed = None
    deadline = time.monotonic() + TIMEOUT
    while thread.is_alive() and time.monotonic() < deadline:
        if killed is None:
            for p in psutil.Process().children(recursive=True):
                try:
                    if p.name().startswith("ray::zoo-task"):
                        os.kill(p.pid, signal.SIGKILL)  # the worker dies mid-task
                        killed = p.pid
                        break
                except psutil.NoSuchProcess:
                    pass
        time.sleep(0.05)
    thread.join(timeout=60)
    assert "error" not in answer, answer.get("error")
    assert killed is not None, "no worker was seen running a task"
    manifest = json.loads((out / "zoo.json").read_text())
    runs = {r["name"]: r for r in manifest["runs"]}
    assert sorted(runs) == sorted(NAMES) and _finished(out) == sorted(NAMES)
    assert {r["status"] for r in runs.values()} == {"trained"}
    assert {(r["engine"], r["node_ip"], r["ensemble_size"]) for r in runs.values()} == {
        ("ray", "127.0.0.1", 2)
    }
    for r in runs.values():  # with whom each trained, and on which kernels (the worker's, this machine's)
        assert r["name"] in r["ensemble_members"] and len(r["ensemble_members"]) == 2
        assert r["kernels"] == kernel_paths()
    assert max(r["attempts"] for r in runs.values()) == 2  # the killed task ran again
    assert all(
        r["node_id"] and r["hostname"] == socket.gethostname() and r["seconds"] > 0 for r in runs.values()
    )
    assert manifest["engine"]["cluster"]["embedded"] is True
    assert lines[-2].startswith("[4/4 runs]") and any("attempt 2" in line for line in lines)
    for name in NAMES:
        assert _same_weights(out / name, reference / name), name
    assert not list(out.glob(".incoming-*")) and not list(out.glob(".replaced-*"))


def test_a_failing_task_is_named_and_the_other_tasks_finish(session, reference, tmp_path):
    out = tmp_path / "zoo"
    out.mkdir()
    broken = out / NAMES[2]  # an interrupted run whose last checkpoint is unreadable
    shutil.copytree(reference / NAMES[2], broken)
    (broken / "metrics.json").unlink()
    (broken / "model.pt").unlink()
    (broken / "checkpoints").mkdir()
    (broken / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    before = sorted(str(p.relative_to(broken)) for p in broken.rglob("*"))
    with pytest.raises(zoo.ZooTaskError, match=rf"^1 of 3 tasks failed: {NAMES[2]} \(") as info:
        zoo.run_zoo(
            out, zoo.ZooSpec(**SPEC, train_args=TINY), engine=zoo.ZooEngine(cpus_per_task=ONE_AT_A_TIME)
        )
    runs = {r["name"]: r for r in json.loads((out / "zoo.json").read_text())["runs"]}
    assert runs == {r["name"]: r for r in info.value.records}
    # each record in the message: a failure under load names the task, its attempts and its error
    seen = {
        n: {k: r.get(k) for k in ("status", "task", "attempts", "error", "kernels")} for n, r in runs.items()
    }
    assert runs[NAMES[2]]["status"] == "failed" and runs[NAMES[2]]["error"], seen
    assert {runs[n]["status"] for n in NAMES if n != NAMES[2]} == {"trained"}, seen
    assert _finished(out) == sorted(n for n in NAMES if n != NAMES[2])
    assert sorted(str(p.relative_to(broken)) for p in broken.rglob("*")) == before  # left as it was
    for name in (NAMES[0], NAMES[1]):
        assert _same_weights(out / name, reference / name), (name, seen[name], kernel_paths())


def test_ctrl_c_cancels_the_tasks_keeps_finished_runs_and_the_same_command_continues(
    session, reference_alone, tmp_path, ctrl_c_delivered
):
    """The driver is a process of its own with its own embedded instance, as a user runs the zoo:
    it listens on loopback only, and Ctrl-C leaves no Ray process behind."""
    out = tmp_path / "zoo"
    # one run per task and one task at a time (each takes the 2-CPU embedded instance): after the
    # first two runs, two tasks are still to come when Ctrl-C arrives
    argv = ["--out", str(out), *GRID, "--cpus-per-task", "2", "--max-ensemble", "1", "--", *TINY]
    tasks = tmp_path / "tmpdir"  # the driver's and its workers' TMPDIR: their zoo-task-* folders
    tasks.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "models.zoo", *argv],
        env={**_env(tmp_path), "TMPDIR": str(tasks)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: set[int] = set()
    listening: set[str] = set()
    deadline = time.monotonic() + TIMEOUT
    polls = 0
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                family = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
            except psutil.NoSuchProcess:
                family = set()
            seen |= family
            if polls % 5 == 0:  # every quarter second: reading every socket of the machine takes CPU
                listening |= {
                    c.laddr.ip
                    for c in psutil.net_connections(kind="inet")
                    if c.pid in family and c.status == psutil.CONN_LISTEN
                }
            polls += 1
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
    assert listening and listening <= LOOPBACK, listening  # the embedded instance: loopback only
    kept = _finished(out)
    assert 2 <= len(kept) < 4
    assert sorted(p.name for p in out.iterdir()) == sorted([*kept, "zoo.json"])  # nothing half-written
    _assert_gone(seen)
    assert not list(tasks.iterdir())  # no task folder left behind (the tasks were killed by Ray)
    stamps = {name: (out / name / "model.pt").stat().st_mtime_ns for name in kept}
    assert zoo.main(argv) == 0  # the same command line, here in this process on the module's instance
    runs = {r["name"]: r for r in json.loads((out / "zoo.json").read_text())["runs"]}
    assert {n: r["status"] for n, r in runs.items()} == {
        n: "skipped" if n in kept else "trained" for n in NAMES
    }
    assert all((out / n / "model.pt").stat().st_mtime_ns == t for n, t in stamps.items())  # not trained twice
    assert {r["ensemble_size"] for r in runs.values() if r["status"] == "trained"} == {1}
    for name in NAMES:  # every run alone here, as in reference_alone: the same kernels, the same bits
        assert _same_weights(out / name, reference_alone / name), name


# --- bad input ------------------------------------------------------------------------------------
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


def test_gpus_per_task_on_a_machine_without_gpus_is_one_line(session, tmp_path, capsys):
    out = tmp_path / "zoo"
    assert zoo.main(["--out", str(out), *GRID, "--gpus-per-task", "0.25"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --gpus-per-task 0.25: the embedded local Ray: 1 node(s)")
    assert "has no GPU" in err and err.count("\n") == 1
    assert not out.exists()


# --- machine.cluster on its own ----------------------------------------------------------------------
def test_the_cluster_helpers_in_one_python_session(session, tmp_path, monkeypatch):
    """machine.cluster as any command uses it: the open instance reused, tasks run, one fails."""
    import math

    import ray

    assert session.embedded and session.node_ips == ["127.0.0.1"] and session.cpus == 2.0
    assert session.gpus == 0.0 and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    with cluster.ray_cluster() as again:  # a nested block reuses the open instance, and leaves it open
        assert again is session
    assert ray.is_initialized()
    with pytest.raises(cluster.ClusterError, match="of 1 CPUs: this process already uses the embedded"):
        with cluster.ray_cluster(num_cpus=1):
            pass
    with monkeypatch.context() as mp:  # Ray initialised by someone else in this process
        mp.setattr(cluster, "_OPEN", [])
        with pytest.raises(cluster.ClusterError, match="already initialised"):
            with cluster.ray_cluster():
                pass
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0" and ray.is_initialized()
    with pytest.raises(cluster.ClusterError, match="--gpus-per-task 1: .* has no GPU"):
        cluster.check_resources(session, 1.0, 1.0)
    outcomes = list(cluster.run_tasks(math.sqrt, [4.0, -1.0, 9.0], ["four", "minus one", "nine"]))
    by_label = {o.label: o for o in outcomes}
    assert by_label["four"].value == 2.0 and by_label["nine"].value == 3.0
    assert (
        by_label["minus one"].value is None and by_label["minus one"].error == "ValueError: math domain error"
    )
    assert by_label["four"].info["attempts"] == 1 and by_label["four"].info["node_ip"] == "127.0.0.1"

    class Logged(list):  # records which items were read, and when
        def __init__(self, values):
            super().__init__(values)
            self.read: list[int] = []

        def __getitem__(self, i):
            self.read.append(i)
            return super().__getitem__(i)

    items = Logged([1.0, 4.0, 9.0, 16.0])
    got = [(o.value, len(items.read)) for o in cluster.run_tasks(math.sqrt, items, max_pending=1)]
    assert got == [(1.0, 1), (2.0, 2), (3.0, 3), (4.0, 4)]  # one at a time, each read when submitted
    folder = tmp_path / "a"
    (folder / "b").mkdir(parents=True)
    (folder / "b" / "c.txt").write_text("c")
    files = cluster.pack_folder(folder)
    assert files == {"b/c.txt": b"c"}
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "old.txt").write_text("replaced whole")
    cluster.install_folder(tmp_path / "dest", files=files)
    assert cluster.pack_folder(tmp_path / "dest") == files and not list(tmp_path.glob(".*"))
    with pytest.raises(ValueError, match="is not a relative file path inside the folder"):
        cluster.install_folder(tmp_path / "evil", files={"../x": b""})
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".incoming-*"))


# --- the zoo summary on Ray -------------------------------------------------------------------------
def _numbers(out: Path) -> dict:
    document = json.loads((out / "metrics.json").read_text())
    document.pop("provenance")  # the command line and the time differ; every number must not
    return document


def test_the_zoo_summary_on_ray_gives_the_numbers_of_the_sequential_engine(
    session, reference, tmp_path, capsys, monkeypatch
):
    from analyses.zoo_summary import __main__ as zs_cli
    from tests.conftest import no_figures

    monkeypatch.setattr(zs_cli, "OUTPUTS", no_figures(monkeypatch, zs_cli.OUTPUTS))  # numbers only
    argv = [str(reference), "--num-sequences", "64", "--bootstrap-resamples", "50"]
    assert zs_cli.main([*argv, "--out", str(tmp_path / "sequential"), "--engine", "sequential"]) == 0
    capsys.readouterr()
    assert zs_cli.main([*argv, "--out", str(tmp_path / "ray")]) == 0  # the default engine: Ray
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and err[-1].startswith("[4/4 runs] ")
    assert err[-1].endswith(f": evaluation on {socket.gethostname()}")
    assert _numbers(tmp_path / "ray") == _numbers(tmp_path / "sequential")
    provenance = json.loads((tmp_path / "ray" / "metrics.json").read_text())["provenance"]
    assert [r["name"] for r in provenance["runs"]] == [r["name"] for r in _numbers(tmp_path / "ray")["runs"]]


def test_the_index_builds_each_runs_report_as_a_ray_task(session, reference, tmp_path, monkeypatch, capsys):
    from analyses.zoo_summary import __main__ as zs_cli
    from tests.conftest import no_figures

    monkeypatch.setattr(zs_cli, "OUTPUTS", no_figures(monkeypatch, zs_cli.OUTPUTS))  # the summary's own

    zoo_dir = tmp_path / "zoo"
    shutil.copytree(reference, zoo_dir)
    manifest = json.loads((zoo_dir / "zoo.json").read_text())
    manifest["runs"] = manifest["runs"][:1]  # one run keeps the full report build short
    (zoo_dir / "zoo.json").write_text(json.dumps(manifest))
    out = tmp_path / "summary"
    argv = [str(zoo_dir), "--out", str(out), "--num-sequences", "32", "--bootstrap-resamples", "20"]
    # Two of the seven analyses keep the report short (the full build is test_report_build's); an
    # unknown one is the report build's own error line, naming the run.
    assert zs_cli.main([*argv, "--index", "--quiet", "--report-only", "flip_alignment,nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--only flip_alignment,nope: --only: unknown analysis 'nope'" in err
    assert not out.exists() and not (zoo_dir / NAMES[0] / "report").exists()
    assert zs_cli.main([*argv, "--index", "--quiet", "--report-only", "flip_alignment,interchange"]) == 0
    run_report = zoo_dir / NAMES[0] / "report"
    assert (run_report / "report.html").is_file()
    summary = json.loads((run_report / "summary.json").read_text())
    assert summary["checkpoint"] == str(zoo_dir.absolute() / NAMES[0] / "model.pt")  # the zoo's own file
    assert sorted(p.name for p in run_report.iterdir() if p.is_dir()) == ["flip_alignment", "interchange"]
    index = (out / "index.html").read_text()
    assert f"../zoo/{NAMES[0]}/report/report.html" in index
    assert json.loads((out / "metrics.json").read_text())["index_page"] == "index.html"
    assert 'href="index.html"' in (out / "report.html").read_text()
