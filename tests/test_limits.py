"""Counts without an upper bound (issue 16, item 5, the models CLIs): every count flag of
``models.train.cli`` and ``models.zoo.cli`` is checked against this machine before any work, in one line
naming the flag; ``models.zoo.cli --list`` checks the plan as a real run does. Each case is bounded in
time: what
hung before fails at a deadline instead of hanging the suite."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

import pytest

from machine import limits
from models.train.cli import main, parse_args
from models.train.lightning_module import log_spaced_steps
from models.zoo import cli as zoo

TINY = [
    "--d-model", "16", "--train-size", "512", "--batch-size", "32", "--epochs", "3", "--val-size", "64",
    "--test-size", "64", "--lr", "1e-2", "--warmup", "4", "--no-progress-bar",
]  # fmt: skip


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Fail (TimeoutError) instead of hanging when the body takes longer than ``seconds``."""

    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def refused(argv: list[str], capsys, run=main) -> str:
    with deadline(60):
        assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--train-size", "1e12"], "--train-size 1000000000000: this run needs at least 123.7 TiB of memory"),
        (["--val-size", str(10**12)], "--val-size 1000000000000: this run needs at least"),
        (
            ["--seq-len", "1000000", "--positional-embedding", "none"],
            "--seq-len 1000000: this run needs at least",
        ),
        (["--threads", "100000"], "--threads 100000: this machine has"),
        (["--devices", "100000", "--accelerator", "cpu"], "--devices 100000: this machine has"),
        (["--num-nodes", "4"], "--num-nodes 4: no multi-node launcher found"),
        (["--d-model", "30000"], "--d-model 30000: EncoderConfig: "),
        (["--n-layers", str(10**9)], f"--n-layers {10**9}: EncoderConfig: "),
        (
            ["--save-every-log-steps", "1000000000", "--epochs", "100000000"],
            "--save-every-log-steps 1000000000: at least 2,387,574,775 snapshots of",
        ),
    ],
)
def test_train_counts_beyond_the_machine_are_one_line_before_any_work(
    argv, fragment, tmp_path, capsys, monkeypatch
):
    for name in limits.MULTI_NODE_ENV:
        monkeypatch.delenv(name, raising=False)
    err = refused([*argv, "--out", str(tmp_path / "runs")], capsys)
    assert fragment in err, err
    assert not (tmp_path / "runs").exists()


def test_the_memory_bound_is_a_lower_bound_on_what_the_run_keeps(tmp_path, capsys, monkeypatch):
    """The same request fails on a machine with less memory than the stated need and passes with more."""
    argv = ["--train-size", "1e8", "--out", str(tmp_path / "runs"), "--max-steps", "1"]
    monkeypatch.setattr(limits, "memory_bytes", lambda: 8 << 30)
    err = refused(argv, capsys)
    # int64 tokens: 8 bytes x 16 positions x (10^8 + 1,000 + 10,000) sequences + 8 bytes x 10^8 (shuffle)
    assert err.startswith("error: --train-size 100000000: this run needs at least 12.7 GiB of memory")
    assert "tokens 12.7 GiB" in err and "machine's 8.0 GiB" in err
    monkeypatch.setattr(limits, "memory_bytes", lambda: 13 << 30)
    assert parse_args(argv).resolve().train_size == 10**8  # accepted: 12.7 GiB fit in 13


def test_snapshots_every_step_no_longer_hang(tmp_path):
    with deadline(30):  # looped over 10^9 exponents per decade before
        assert log_spaced_steps(3910, 10**9) == list(range(3911))
    assert log_spaced_steps(100, 4) == [0, 1, 2, 3, 6, 10, 18, 32, 56, 100]
    with deadline(60):
        assert (
            main([*TINY, "--max-steps", "12", "--save-every-log-steps", str(10**9), "--out", str(tmp_path)])
            == 0
        )
    snapshots = sorted((tmp_path / "tutorial-seed0" / "snapshots").glob("step_*.pt"))
    assert [p.name for p in snapshots] == [f"step_{s:06d}.pt" for s in range(13)]  # one per step


def test_log_spaced_count_lower_bound_never_exceeds_the_count():
    for max_steps in (1, 2, 12, 100, 3910, 10**5):
        for per_decade in (1, 2, 4, 10, 1000, 10**6, 10**9):
            exact = sum(1 for _ in limits.iter_log_spaced_steps(max_steps, per_decade))
            assert limits.log_spaced_count_lower_bound(max_steps, per_decade) <= exact


# --- models.zoo.cli ---------------------------------------------------------------------------------------
def test_zoo_seeds_beyond_the_disk_are_refused_before_the_plan_is_built(tmp_path, capsys):
    err = refused(["--out", str(tmp_path / "zoo"), "--seeds", str(10**9), "--list"], capsys, run=zoo.main)
    assert err.startswith("error: --seeds 1000000000: 13,000,000,000 new runs need at least ")
    assert "free on --out" in err and not (tmp_path / "zoo").exists()


def test_zoo_counts_only_the_runs_it_has_not_started_against_the_disk(tmp_path, capsys, monkeypatch):
    out = tmp_path / "zoo"
    grid = ["--out", str(out), "--heads", "1", "--layers", "1"]
    for pe in ("sinusoidal", "learned", "none"):
        for seed in (0, 1):
            (out / f"fast_{pe}_L1_H1_seed{seed}").mkdir(parents=True)
            (out / f"fast_{pe}_L1_H1_seed{seed}" / "config.json").write_text("{}")  # a started run
    monkeypatch.setattr(limits, "free_bytes", lambda folder: 0)  # a full disk
    assert zoo.main([*grid, "--seeds", "2", "--list"]) == 0  # every run exists: nothing new to write
    capsys.readouterr()
    err = refused([*grid, "--seeds", "3", "--list"], capsys, run=zoo.main)
    assert err.startswith("error: --seeds 3: 3 new runs need at least ") and "the 0 B free" in err


@pytest.mark.parametrize(
    "own, train_flags, fragment",
    [
        ([], ["--lr", "-1"], "--lr: must be a positive number"),
        ([], ["--threads", "100000"], "--threads 100000: this machine has"),
        ([], ["--train-size", "1e12"], "--train-size 1000000000000: this run needs at least"),
        (["--layers", str(10**6)], [], f"--n-layers {10**6} --n-heads 1"),
    ],
)
def test_zoo_list_checks_the_plan_as_a_real_run_does(own, train_flags, fragment, tmp_path, capsys):
    for listing in (["--list"], []):  # --list, then a real run: the same one line, nothing written
        argv = ["--out", str(tmp_path / "zoo"), "--seeds", "1", *own, *listing, "--", *train_flags]
        err = refused(argv, capsys, run=zoo.main)
        assert fragment in err, err
        assert not (tmp_path / "zoo").exists()


def test_zoo_list_of_a_good_plan_lists_every_run(tmp_path, capsys):
    assert (
        zoo.main(["--out", str(tmp_path / "zoo"), "--seeds", "2", "--heads", "1", "--layers", "1", "--list"])
        == 0
    )
    lines = capsys.readouterr().out.split("\n\n")[0].splitlines()  # the runs; then the tasks and estimate
    assert [line.split()[0] for line in lines] == [
        "fast_sinusoidal_L1_H1_seed0",
        "fast_sinusoidal_L1_H1_seed1",
        "fast_learned_L1_H1_seed0",
        "fast_learned_L1_H1_seed1",
        "fast_none_L1_H1_seed0",
        "fast_none_L1_H1_seed1",
    ]
    assert all(line.split()[1] == "new" for line in lines) and not (tmp_path / "zoo").exists()
