"""Output folders under hard kills, concurrency and read-only files (issue 16, items 1, 6 and 8): real
processes killed with SIGKILL, two real processes replacing the same folder, a real read-only folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import make_model

from analyses.frame import files
from analyses.frame.cli import UserError
from machine import staging
from models import save_model
from reports import build

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_model(make_model(seed=3), tmp_path_factory.mktemp("ckpt") / "model.pt")


def children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (Linux /proc)."""
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            pass
    return found


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


# --- item 1: kill -9 of reports.build ---------------------------------------------------------------
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads child processes from Linux /proc")
def test_kill_9_of_a_build_takes_its_workers_along_and_a_rerun_cleans_up(checkpoint, tmp_path):
    out = tmp_path / "report"
    args = ["--checkpoint", str(checkpoint), "--out", str(out), "--seed", "1"]
    parent = subprocess.Popen(
        [sys.executable, "-m", "reports.build", *args, "--num-sequences", "50000", "--jobs", "2"],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: set[int] = set()
    try:
        assert wait_for(lambda: len(children(parent.pid)) >= 2, 120), "the build started no workers"
        workers = children(parent.pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert wait_for(lambda: not any(alive(w) for w in workers), 10), "workers outlived their parent"
    finally:
        parent.kill()
        parent.wait(10)
        for worker in workers:  # whatever the outcome, leave no process behind
            if alive(worker):
                os.kill(worker, signal.SIGKILL)
    left = sorted(p.name for p in out.iterdir())
    assert len(left) == 1 and left[0].startswith(build.STAGING_PREFIX), left
    # A staging folder of a live build (this process) and one not named by us must survive the rerun.
    live = Path(tempfile.mkdtemp(dir=out, prefix=staging.staging_prefix(build.STAGING_PREFIX)))
    foreign = out / ".report-build-by-hand"
    foreign.mkdir()
    rerun = subprocess.run(
        [sys.executable, "-m", "reports.build", *args, "--num-sequences", "8", "--only", "interchange"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"removed {out / left[0]}, left by a build that was killed" in rerun.stderr
    hidden = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert hidden == sorted([live.name, foreign.name])


def test_only_dead_creators_folders_count_as_stale(tmp_path):
    mine = staging.staging_prefix(".out.tmp-")
    assert not staging.is_stale(mine + "abc", ".out.tmp-")  # this process is alive
    host, pid, start = staging.owner_token().split("-")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(dead.stdout)
    assert staging.is_stale(f".out.tmp-{host}-{dead_pid}-5-x1", ".out.tmp-")
    assert staging.is_stale(f".out.tmp-{host}-{os.getppid()}-1-x1", ".out.tmp-")  # pid reused later
    assert not staging.is_stale(f".out.tmp-00000000-{dead_pid}-5-x1", ".out.tmp-")  # another machine
    assert not staging.is_stale(f".out.tmp-{host}-{dead_pid}-5", ".out.tmp-")  # not our name
    assert not staging.is_stale(f".out.old-{host}-{dead_pid}-5-x1", ".out.tmp-")


def test_an_analysis_rerun_removes_what_a_killed_one_left(checkpoint, tmp_path):
    from analyses.interchange.__main__ import main

    host = staging.owner_token().split("-")[0]
    dead = int(
        subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout
    )
    for name in (f".out.tmp-{host}-{dead}-7-a1", f".out.old-{host}-{dead}-7-b2"):
        (tmp_path / name / "figures").mkdir(parents=True)
    (tmp_path / ".out.tmp-unrelated").mkdir()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code = main(["--checkpoint", str(checkpoint), "--out", "out", "--num-sequences", "8", "--quiet"])
    finally:
        os.chdir(cwd)
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.tmp-unrelated", "out"]


# --- item 8: two processes replacing the same OUT ---------------------------------------------------
WRITER = """
import sys
from pathlib import Path
from analyses.frame import files
out, tag, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
failures = 0
for i in range(rounds):
    try:
        with files.atomic_output_dir(out) as folder:
            (folder / "figures").mkdir()
            for k in range(5):
                (folder / "figures" / f"f{k}.txt").write_text(tag)
            files.write_json(folder / "metrics.json", {"analysis": tag, "schema_version": 1, "round": i})
    except Exception as e:
        failures += 1
        print(type(e).__name__, e, file=sys.stderr)
print(failures)
"""


def test_two_processes_replacing_the_same_out_never_fail_or_leave_folders(tmp_path):
    out, rounds = tmp_path / "out", 1000
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(out), tag, str(rounds)],
            cwd=tmp_path,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    try:
        results = [w.communicate(timeout=300) for w in writers]
    finally:
        for w in writers:
            w.kill()
    for stdout, stderr in results:
        assert stdout.strip() == "0", stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    document = json.loads((out / "metrics.json").read_text())
    tags = {(out / "figures" / f"f{k}.txt").read_text() for k in range(5)}
    assert document["round"] == rounds - 1 and tags == {document["analysis"]}  # whole, one writer's


# --- item 6: a read-only OUT ---------------------------------------------------------------------------
def make_read_only(folder: Path) -> None:
    """Read-only even for root: the immutable attribute (chattr +i) there, mode 0555 otherwise."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(folder)], check=True)
    else:
        folder.chmod(0o555)


def make_writable(folder: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


def analysis_argv(checkpoint: Path, out: Path) -> list[str]:
    return ["--checkpoint", str(checkpoint), "--out", str(out), "--num-sequences", "8", "--quiet"]


@pytest.fixture(scope="module")
def analysis_output(checkpoint, tmp_path_factory) -> Path:
    """An output folder of ``python -m analyses.interchange`` (the quickest figures), made once."""
    from analyses.interchange.__main__ import main

    out = tmp_path_factory.mktemp("flip") / "out"
    assert main(analysis_argv(checkpoint, out)) == 0
    return out


@pytest.mark.parametrize("where", ["out", "figures"])
def test_a_read_only_out_is_one_line_before_any_work_and_leaves_nothing(
    checkpoint, analysis_output, tmp_path, capsys, where
):
    from analyses.interchange.__main__ import main

    out = shutil.copytree(analysis_output, tmp_path / "out")  # an earlier output of the same command
    argv = analysis_argv(checkpoint, out)
    before = sorted(p.name for p in out.rglob("*"))
    locked = out if where == "out" else out / "figures"
    make_read_only(locked)
    try:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        expected = f"error: --out {out} cannot be replaced: {locked} is read-only (make it writable, or "
        assert err == expected + "name another folder)\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
        assert sorted(p.name for p in out.rglob("*")) == before
        # replace_dir itself, if the folder turns read-only after the check: one line, nothing left
        source = tmp_path / "new"
        source.mkdir()
        if where == "out":
            with pytest.raises(UserError, match=f"cannot replace {out}: "):
                files.replace_dir(source, out)
            assert sorted(p.name for p in tmp_path.iterdir()) == ["new", "out"]
    finally:
        make_writable(locked)
