"""Training runs under hard kills, Ctrl-C, corrupt files and full disks (issue 16, items 2, 6 and 7):
real processes killed with SIGKILL, a real SIGINT, a real full file system (a small tmpfs)."""

from __future__ import annotations

import errno
import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import models.train.cli as train_module
from models import load_model
from models.storage import integrity
from models.train.cli import main, train
from models.train.lightning_import import pl
from tests.conftest import TINY_TRAIN

TINY = TINY_TRAIN  # 48 steps, validation every 12 (tests/conftest.py)
# The fast preset on less data: reaches 100% validation accuracy (and stops) after 120 steps.
PERFECT = ["--preset", "fast", "--train-size", "4096", "--val-size", "128", "--test-size", "128"]
PERFECT += ["--epochs", "3", "--no-progress-bar"]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_model(run, check_accuracy=False).state_dict()


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return all(torch.equal(wa[k], wb[k]) for k in wa)


def one_line(err: str) -> str:
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def with_callbacks(monkeypatch, *callbacks) -> None:
    """``main`` trains through ``models.train.cli.train``: give that call extra Lightning callbacks."""
    monkeypatch.setattr(train_module, "train", functools.partial(train, callbacks=list(callbacks)))


@pytest.fixture
def reference(tiny_uninterrupted_run) -> Path:
    """The TINY run, uninterrupted (trained once per session; read only)."""
    return tiny_uninterrupted_run


# --- item 2: a corrupt last.ckpt on resume ----------------------------------------------------------------
class Crash(pl.Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == 30:
            raise RuntimeError("simulated crash")


def test_a_corrupt_last_checkpoint_falls_back_to_the_previous_good_one(tmp_path, reference, capsys):
    args = [*TINY, "--out", str(tmp_path), "--name", "run"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(args, callbacks=[Crash()])
    run, checkpoints = tmp_path / "run", tmp_path / "run" / "checkpoints"
    last = checkpoints / "last.ckpt"
    best = next(p for p in checkpoints.glob("best-*.ckpt"))
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # truncated by a failing disk
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"{last}: sha256 " in err and f"; resuming from {best.name} (step " in err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 48 and metrics["resumed_from_step"] in (12, 24)
    assert same_weights(run, reference)  # it lost some steps, not the result


def test_no_intact_checkpoint_is_one_line_on_every_rerun(tmp_path, capsys):
    args = [*TINY, "--out", str(tmp_path), "--name", "run"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(args, callbacks=[Crash()])
    checkpoints = tmp_path / "run" / "checkpoints"
    (checkpoints / "SHA256SUMS").unlink()  # as a run written before records existed: the zip is checked
    for path in checkpoints.glob("*.ckpt"):
        path.write_bytes(path.read_bytes()[:1000])
    capsys.readouterr()
    for _ in range(2):
        assert main(args) == 2
        err = one_line(capsys.readouterr().err)
        assert f"error: {checkpoints / 'last.ckpt'}: truncated or corrupt torch.save file" in err
        assert "rerun with --overwrite to start the run over" in err
    assert main([*args, "--overwrite"]) == 0  # what the line says works


def test_a_corrupt_config_json_is_named(tmp_path, capsys):
    args = [*TINY, "--max-steps", "2", "--out", str(tmp_path), "--name", "run"]
    train(args)
    (tmp_path / "run" / "config.json").write_text('{"preset": "tutorial", "seed"')
    capsys.readouterr()
    assert main(args) == 2
    err = one_line(capsys.readouterr().err)
    assert err.startswith(f"error: {tmp_path / 'run' / 'config.json'}: unreadable or corrupt (")
    assert "pass --overwrite to start the run over" in err


# --- item 7: bookkeeping after a kill ---------------------------------------------------------------------
class KillAfterPerfect(pl.Callback):
    def on_train_end(self, trainer, pl_module):  # 100% reached, last.ckpt written, metadata not yet
        if trainer.should_stop:
            os.kill(os.getpid(), signal.SIGKILL)


def killed_in_a_child_process(args: list[str], timeout: float = 300) -> int:
    """``train(args)`` in a forked child process that SIGKILLs itself at :class:`KillAfterPerfect`;
    returns the child's wait status. A fork, not a new interpreter: the child inherits this process's
    imports (torch, Lightning: ~5 s of a fresh process's start), and is killed for real all the same."""
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized(), "no fork while this process holds a Ray connection"
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest, whatever happens
        code = 3
        try:
            train(args, callbacks=[KillAfterPerfect()])
        except BaseException:  # noqa: BLE001 - reported by the parent as exit code 4
            code = 4
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the child process did not end within {timeout} s")


def test_a_run_killed_between_perfect_and_its_metadata_records_what_an_uninterrupted_run_does(tmp_path):
    reference = train([*PERFECT, "--out", str(tmp_path), "--name", "reference"])
    expected = json.loads((reference / "metrics.json").read_text())
    assert expected["stopped_at_perfect"] and expected["stop_reason"] == "perfect"
    args = [*PERFECT, "--out", str(tmp_path), "--name", "killed"]
    status = killed_in_a_child_process(args)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"wait status {status}"
    killed = tmp_path / "killed"
    last = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == expected["steps"] and not (killed / "metrics.json").exists()
    train(args)  # the rerun
    found = json.loads((killed / "metrics.json").read_text())
    for key in ("steps", "stop_reason", "stopped_at_perfect", "first_perfect_step", "val_acc", "test_acc"):
        assert found[key] == expected[key], key
    assert found["resumed_from_step"] == expected["steps"]
    assert same_weights(killed, reference)


def test_ctrl_c_under_overwrite_says_to_drop_it_and_that_works(
    tmp_path, reference, monkeypatch, capsys, ctrl_c_delivered
):
    class CtrlC(pl.Callback):  # a real SIGINT, handled by Python and Lightning as a keypress would be
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 30:
                signal.raise_signal(signal.SIGINT)

    args = [*TINY, "--out", str(tmp_path), "--name", "run"]
    train([*args, "--max-steps", "6"])  # an earlier run that --overwrite replaces
    handler = signal.getsignal(signal.SIGINT)
    try:
        with_callbacks(monkeypatch, CtrlC())
        assert main([*args, "--overwrite"]) == 130
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-Cs while it shuts down
        monkeypatch.undo()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        "error: interrupted: rerun without --overwrite to continue from the last checkpoint (with it, "
        "the run starts over)"
    )
    assert main(args) == 0  # what the line says: the same command without --overwrite continues
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == 24 and metrics["steps"] == 48
    assert same_weights(tmp_path / "run", reference)


# --- item 6: a full disk ----------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MiB file system (tmpfs) at tmp_path/disk, unmounted afterwards (needs root, as CI runs)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.fail(f"mounting a tmpfs needs root (the CI runs as root): {done.stderr.strip()}")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


class FillDisk(pl.Callback):
    """After the first validation's checkpoints are written, fills the file system to the last byte."""

    def __init__(self, filler: Path):
        self.filler = filler

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == 13 and not self.filler.exists():
            fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT)  # unbuffered: nothing left to flush
            try:
                while os.write(fd, b"\0" * 4096):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
            finally:
                os.close(fd)


def test_a_full_disk_is_one_line_leaves_no_truncated_checkpoint_and_the_run_continues(
    small_disk, reference, monkeypatch, capsys
):
    args = [*TINY, "--out", str(small_disk), "--name", "run"]
    filler = small_disk / "filler"
    with_callbacks(monkeypatch, FillDisk(filler))
    assert main(args) == 1
    monkeypatch.undo()
    err = one_line(capsys.readouterr().err)
    # The save that failed is named: the next validation's checkpoint (the best one or last.ckpt).
    assert err.startswith(f"error: {small_disk / 'run' / 'checkpoints'}/") and ".ckpt: No space left" in err
    assert err.endswith("; once fixed, rerun the same command to continue from the last checkpoint\n")
    run = small_disk / "run"
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]  # no temp file left
    checkpoints = sorted((run / "checkpoints").glob("*.ckpt"))
    assert checkpoints and set(integrity.read_sums(run / "checkpoints")) == {p.name for p in checkpoints}
    for path in checkpoints:  # every checkpoint there is whole: it matches its record and loads
        assert integrity.verify_recorded(path) is not None
        load_model(path, check_accuracy=False)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 12
    filler.unlink()  # space is freed: the same command continues from step 12
    assert main(args) == 0
    assert json.loads((run / "metrics.json").read_text())["resumed_from_step"] == 12
    assert same_weights(run, reference)
