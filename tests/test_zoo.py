"""The model zoo: the grid, resumption after a kill, flag pass-through; and the zoo summary: its
statistics on hand-computed values and every output on a tiny real zoo."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from analyses import zoo_summary as zs
from analyses.frame import numbers
from analyses.zoo_summary import __main__ as zs_cli
from analyses.zoo_summary.figures import FIGURES
from analyses.zoo_summary.result import RunSummary, seed_difference, seed_stats
from analyses.zoo_summary.runs import discover
from machine.devices import kernel_paths
from models.zoo import cli as zoo

# Tiny runs: d_model 16, 960 training sequences (30 batches of 32), 30 steps (about a second each).
TINY = "--train-size 960 --val-size 64 --test-size 64 --max-steps 30".split()
TINY_SPEC = dict(
    seeds=2, heads=(1,), layers=(1,), positional_embeddings=("sinusoidal",), d_models=(16,), train_args=TINY
)
SEQUENTIAL = zoo.ZooEngine(engine="sequential", ensemble=False)  # today's in-place path, one run at a time


# --- the grid -------------------------------------------------------------------------------------
def test_default_grid_is_five_seeds_of_twelve_architectures_plus_the_control():
    runs = zoo.ZooSpec().runs()
    grid = [r for r in runs if r.role == "grid"]
    assert len(grid) == 5 * 3 * 2 * 2 and len(runs) == len(grid) + 5
    assert {(r.n_heads, r.n_layers, r.positional_embedding) for r in grid} == {
        (h, n, pe) for h in (1, 2, 4) for n in (1, 2) for pe in ("sinusoidal", "learned")
    }
    controls = [r for r in runs if r.role == "control"]
    assert {(r.positional_embedding, r.n_heads, r.n_layers) for r in controls} == {("none", 1, 1)}
    assert len({r.name for r in runs}) == len(runs)  # one folder per run


def test_device_flags_go_to_every_run(tmp_path):
    spec = zoo.ZooSpec(
        accelerator="cpu", devices="2", strategy="ddp", num_nodes=3, train_args=["--lr", "0.01"]
    )
    argv = spec.train_argv(spec.runs()[0], tmp_path)
    for flag, value in (
        ("--accelerator", "cpu"),
        ("--devices", "2"),
        ("--strategy", "ddp"),
        ("--num-nodes", "3"),
    ):
        assert argv[argv.index(flag) + 1] == value
    assert argv[-2:] == ["--lr", "0.01"]


@pytest.mark.parametrize(
    "spec, message",
    [
        (dict(train_args=["--seed", "3"]), "the zoo sets --seed"),
        (dict(train_args=["--n-heads=2"]), "the zoo sets --n-heads"),
        (dict(train_args=["--d-model", "64"]), "the zoo sets --d-model"),
        (dict(train_args=["--num-categories=5"]), "the zoo sets --num-categories"),
        (dict(seq_lens=(0,)), "--seq-len"),
        (dict(d_models=(30,), heads=(4,)), "--d-model 30: not divisible by --n-heads 4"),
        (dict(heads=(0,)), "--heads"),
        (dict(positional_embeddings=("rotary",)), "unknown 'rotary'"),
        (dict(train_args=["--lr", "-1"]), "--lr"),  # checked by models.train.cli before anything trains
    ],
)
def test_bad_grids_fail_before_training(tmp_path, spec, message):
    with pytest.raises(ValueError, match=message):
        zoo.run_zoo(tmp_path / "z", zoo.ZooSpec(**spec), engine=SEQUENTIAL)
    assert not (tmp_path / "z").exists()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert zoo.main(["--out", str(tmp_path), "--heads", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert zoo.main(["--out", str(tmp_path), "--", "--name", "x"]) == 2
    assert "the zoo sets --name" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert zoo.main(["--out", str(blocker / "zoo")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {blocker / 'zoo'}: {blocker} exists and is not a folder")
    assert err.count("\n") == 1
    # Lightning rejects the devices only when a run starts: every task fails, each reported with its
    # runs' names, and the zoo exits 1 leaving no run folder behind (zoo.json records the failures)
    out = tmp_path / "new" / "zoo"
    grid = ["--seeds", "1", "--heads", "1", "--layers", "1", "--positional-embeddings", "learned"]
    argv = ["--out", str(out), *grid, "--engine", "sequential", "--", "--devices", "0"]
    assert zoo.main(argv) == 1
    err = capsys.readouterr().err
    assert "FAILED" in err and "fast_learned_L1_H1_seed0" in err and "--devices" in err
    last = err.strip().splitlines()[-1]  # the control first: it is predicted longest (it never stops early)
    assert (
        last.startswith("error: 2 of 2 tasks failed: fast_none_L1_H1_seed0 (")
        and "fast_learned_L1_H1_seed0" in last
    )
    assert sorted(p.name for p in out.iterdir()) == ["zoo.json"]
    assert {r["status"] for r in json.loads((out / "zoo.json").read_text())["runs"]} == {"failed"}


# --- a tiny real zoo ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zoo")
    records = zoo.run_zoo(out, zoo.ZooSpec(**TINY_SPEC, accelerator="cpu", devices="1"), engine=SEQUENTIAL)
    assert [r["status"] for r in records] == ["trained"] * 4  # 2 seeds + 2 controls
    return out


def test_zoo_writes_run_folders_and_a_manifest(tiny_zoo):
    manifest = json.loads((tiny_zoo / "zoo.json").read_text())
    names = [r["name"] for r in manifest["runs"]]
    assert names == [
        "fast_sinusoidal_L1_H1_D16_seed0",
        "fast_sinusoidal_L1_H1_D16_seed1",
        "fast_none_L1_H1_D16_seed0",
        "fast_none_L1_H1_D16_seed1",
    ]
    assert {(r["engine"], r["ensemble_size"], r["attempts"]) for r in manifest["runs"]} == {
        ("sequential", 1, 1)
    }
    assert all(r["seconds"] > 0 and r["hostname"] for r in manifest["runs"])
    # the reproducibility contract, and per run with whom it trained and on which kernels
    assert "to float32 rounding" in manifest["reproducibility"]
    assert all(r["ensemble_members"] == [] and r["kernels"] == kernel_paths() for r in manifest["runs"])
    assert manifest["runs"][0]["kernels"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    for name in names:
        config = json.loads((tiny_zoo / name / "config.json").read_text())
        assert (tiny_zoo / name / "model.pt").is_file() and config["training"]["max_steps"] == 30
        assert config["training"]["accelerator"] == "cpu" and config["training"]["devices"] == "1"
        assert config["encoder"]["d_model"] == 16


def test_a_killed_zoo_continues_and_trains_only_what_is_missing(tmp_path):
    out = tmp_path / "zoo"
    zoo.run_zoo(
        out, zoo.ZooSpec(**TINY_SPEC), engine=SEQUENTIAL
    )  # trained in place: resumes read their own files
    # seed 1 was killed mid-run: its checkpoints exist, but neither model.pt nor metrics.json;
    # the first control never started.
    interrupted, unstarted = out / "fast_sinusoidal_L1_H1_D16_seed1", out / "fast_none_L1_H1_D16_seed0"
    (interrupted / "model.pt").unlink()
    (interrupted / "metrics.json").unlink()
    shutil.rmtree(unstarted)
    untouched = {p: p.stat().st_mtime_ns for p in out.glob("*/model.pt")}
    first = {r["name"]: r for r in json.loads((out / "zoo.json").read_text())["runs"]}
    records = zoo.run_zoo(out, zoo.ZooSpec(**TINY_SPEC), engine=SEQUENTIAL)
    status = {r["name"]: (r["before"], r["status"]) for r in records}
    assert status == {
        "fast_sinusoidal_L1_H1_D16_seed0": ("finished", "skipped"),
        "fast_sinusoidal_L1_H1_D16_seed1": ("partial", "resumed"),
        "fast_none_L1_H1_D16_seed0": ("new", "trained"),
        "fast_none_L1_H1_D16_seed1": ("finished", "skipped"),
    }
    for r in records:  # a skipped run keeps how it was trained: with whom, on which kernels
        if r["status"] == "skipped":
            assert r["kernels"] == first[r["name"]]["kernels"] == kernel_paths()
            assert r["ensemble_members"] == first[r["name"]]["ensemble_members"] == []
            assert r["seconds"] == first[r["name"]]["seconds"]
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in untouched.items())  # finished runs untouched
    assert (interrupted / "model.pt").is_file() and (unstarted / "model.pt").is_file()
    assert json.loads((interrupted / "metrics.json").read_text())["steps"] == 30


# --- the summary statistics -----------------------------------------------------------------------
def test_seed_stats_stay_in_range_and_say_when_seeds_are_too_few():
    """The issue's case: 2 seeds of a flip mass gave a t-interval [0.306, 1.262]; now no interval."""
    two = seed_stats(np.array([0.6, 0.968]), 0.95)
    assert two.median == pytest.approx(0.784) and math.isnan(two.ci_low) and "fewer than 3" in two.note
    five = seed_stats(np.array([0.9, 0.99, 1.0, 0.95, 0.97]), 0.95)
    assert (five.ci_low, five.ci_high, five.median) == (0.9, 1.0, 0.97)  # [min, max], inside [0, 1]
    assert five.achieved == pytest.approx(1 - 2 / 2**5) and "93.8%" in five.note
    steps = seed_stats(np.array([50.0, 55, 60, 400, 70, 65, 58, 52, 61, 1000]), 0.95)
    assert steps.ci_low >= 50 and steps.achieved >= 0.95  # a count: never negative
    assert seed_stats(np.array([0.5, np.nan, 0.5, 0.5]), 0.95).n == 3


def test_ensemble_members_share_one_timing():
    """M members trained in one ensemble record its wall time: one timing, and time / M per member."""
    from analyses.zoo_summary.measure import fit_times
    from analyses.zoo_summary.runs import training_numbers

    member = training_numbers({"fit_seconds": 12.0, "ensemble": {"seeds": [0, 1, 2], "member": 1, "size": 3}})
    assert member["fit_seconds_per_member"] == 4.0 and member["ensemble_size"] == 3
    assert training_numbers({"fit_seconds": 5.0})["fit_seconds_per_member"] == 5.0  # a run of its own

    def run(name, seeds, seconds):
        numbers = training_numbers(
            {"fit_seconds": seconds, "ensemble": seeds and {"seeds": seeds, "size": 3}}
        )
        return RunSummary(
            name, 0, "sinusoidal", 1, 1, "trained", {}, numbers, (0, 0), np.zeros((1, 1)), "", 10
        )

    runs = [run(f"s{k}", [0, 1, 2], 12.0) for k in range(3)] + [run("alone", None, 7.0)]
    assert fit_times(runs).tolist() == [12.0, 7.0]  # one per training, not 12, 12, 12, 7
    assert math.isnan(seed_stats(fit_times(runs), 0.95).ci_low)  # 2 trainings: no interval


def test_seed_difference_is_a_shift_inside_the_pairwise_differences():
    a, b = np.array([0.9, 0.95, 1.0, 0.97, 0.93]), np.array([0.5, 0.6, 0.55, 0.7, 0.65])
    d = seed_difference(a, b, 0.95)
    pairwise = (a[:, None] - b[None, :]).ravel()
    assert d.mean == pytest.approx(np.median(pairwise))
    assert pairwise.min() <= d.ci_low <= d.mean <= d.ci_high <= pairwise.max() and d.ci_low > 0
    assert d.achieved >= 0.95 and d.to_dict()["note"] == ""
    assert math.isnan(seed_difference(a, b[:2], 0.95).ci_low)  # 2 seeds in a group: no interval


def test_summary_writes_every_output(tiny_zoo, tmp_path, capsys):
    out = tmp_path / "summary"
    argv = [str(tiny_zoo), "--out", str(out), "--num-sequences", "64", "--bootstrap-resamples", "50", "--svg"]
    assert zs_cli.main([*argv, "--engine", "sequential"]) == 0
    assert "sinusoidal L1 H1 D16" in capsys.readouterr().out  # width 16: not the tutorial's 32
    document = json.loads((out / "metrics.json").read_text())
    assert document["schema_version"] == zs.SCHEMA_VERSION and document["analysis"] == "zoo_summary"
    assert len(document["provenance"]["runs"]) == 4 and document["provenance"]["command"]
    archs = {a["name"]: a for a in document["architectures"]}
    assert (
        set(archs) == {"sinusoidal L1 H1 D16", "none L1 H1 D16"}
        and document["settings"]["reference"] == "sinusoidal L1 H1 D16"
    )
    sin = archs["sinusoidal L1 H1 D16"]
    runs = {r["name"]: r for r in document["runs"]}
    seeds = [runs[name]["flip_mass"]["mean"] for name in sin["runs"]]
    got = sin["stats"]["flip_mass"]
    assert got["values"] == seeds and got["n"] == 2
    assert got["median"] == pytest.approx(np.median(seeds)) and got["mean"] == pytest.approx(np.mean(seeds))
    assert got["ci_low"] is None and got["ci_high"] is None and "fewer than 3 seeds" in got["note"]
    assert got["sd"] == pytest.approx(np.std(seeds, ddof=1))
    assert "zero_pe_accuracy" not in archs["none L1 H1 D16"]["stats"]  # no PE to zero
    diff = archs["none L1 H1 D16"]["differences"]["flip_mass"]
    none_seeds = [runs[name]["flip_mass"]["mean"] for name in archs["none L1 H1 D16"]["runs"]]
    assert diff["mean"] == pytest.approx(np.median(np.subtract.outer(none_seeds, seeds)))
    assert diff["ci_low"] is None  # two seeds per group: no interval
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0] == ",".join(zs.CSV_FIELDS)
    assert any(r.startswith("architecture,none L1 H1 D16,") for r in rows)
    for name in FIGURES:
        for ext in ("png", "svg"):
            assert (out / "figures" / f"{name}.{ext}").stat().st_size > 1000
    html = (out / "report.html").read_text()
    assert "Model zoo" in html and html.count("data:image/png;base64,") == len(FIGURES)


def test_one_seed_has_no_interval_over_seeds_and_shows_the_runs_own_ci(tiny_zoo, tmp_path):
    zoo_dir = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, zoo_dir)
    manifest = json.loads((zoo_dir / "zoo.json").read_text())
    manifest["runs"] = [r for r in manifest["runs"] if r["seed"] == 0]  # one seed per architecture
    (zoo_dir / "zoo.json").write_text(json.dumps(manifest))
    result = zs.run(zoo_dir, num_sequences=64, bootstrap_resamples=50)
    text = result.summary()
    assert "nan" not in text and "(1 seed: no CI)" in text
    sin = next(a for a in result.architectures if a.name == "sinusoidal L1 H1 D16")
    run = next(r for r in result.runs if r.architecture == sin.name)
    e = run.measured["flip_mass"]
    lines = text.splitlines()
    row = lines.index(next(line for line in lines if line.startswith("sinusoidal L1 H1 D16")))
    assert f"{e.mean:.3f} (1 seed: no CI)" in lines[row]
    assert (
        lines[row + 1].startswith("  run CI (1 seed)")
        and numbers.interval(e.mean, e.ci_low, e.ci_high) in lines[row + 1]
    )
    html = (zs.write_outputs(result, tmp_path / "out") / "report.html").read_text()
    assert f"{e.mean:.3f} (1 seed: no CI)" in html and f"run CI [{e.ci_low:.3f}, {e.ci_high:.3f}]" in html


def test_summary_without_a_manifest_scans_the_folder_and_reports_missing_runs(tiny_zoo, tmp_path):
    out = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, out)
    (out / "fast_none_L1_H1_D16_seed1" / "metrics.json").unlink()
    assert discover(out)[1] == ["fast_none_L1_H1_D16_seed1"]
    (out / "zoo.json").unlink()
    folders, missing = discover(out)
    assert [p.name for p, _ in folders] == [
        "fast_none_L1_H1_D16_seed0",
        "fast_sinusoidal_L1_H1_D16_seed0",
        "fast_sinusoidal_L1_H1_D16_seed1",
    ]
    assert [role for _, role in folders] == ["control", "grid", "grid"] and missing == [
        "fast_none_L1_H1_D16_seed1"
    ]


def test_runs_of_different_widths_are_different_architectures_not_seeds(tmp_path):
    from models import save_model
    from tests.conftest import make_model

    for d_model, suffix in ((32, ""), (16, "_D16")):
        for seed in (0, 1):
            run = tmp_path / "zoo" / f"fast_sinusoidal_L1_H1{suffix}_seed{seed}"
            run.mkdir(parents=True)
            model = make_model(seed=seed, d_model=d_model)
            save_model(model, run / "model.pt")
            (run / "config.json").write_text(json.dumps({"seed": seed, "encoder": model.cfg.to_dict()}))
            (run / "metrics.json").write_text(json.dumps({"test_acc": 0.1, "steps": 30}))
    result = zs.run(tmp_path / "zoo", num_sequences=16, bootstrap_resamples=10)
    assert {a.name: (a.d_model, a.runs) for a in result.architectures} == {
        "sinusoidal L1 H1": (32, ["fast_sinusoidal_L1_H1_seed0", "fast_sinusoidal_L1_H1_seed1"]),
        "sinusoidal L1 H1 D16": (16, ["fast_sinusoidal_L1_H1_D16_seed0", "fast_sinusoidal_L1_H1_D16_seed1"]),
    }
    assert result.reference == "sinusoidal L1 H1" and all(
        a.stats["flip_mass"].n == 2 for a in result.architectures
    )
    assert {r["name"]: r["d_model"] for r in result.to_dict()["runs"]}[
        "fast_sinusoidal_L1_H1_D16_seed0"
    ] == 16


def test_summary_cli_errors(tmp_path, capsys):
    assert zs_cli.main([str(tmp_path / "nothing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert zs_cli.main([str(tmp_path)]) == 2
    assert "no finished run" in capsys.readouterr().err


def test_summary_engine_flags_are_one_line_and_write_nothing(tiny_zoo, tmp_path, capsys):
    """Bad --address, --engine and --cpus-per-task: one line, exit 2, no --out (the index's Ray tasks
    and the equality of both engines are in test_zoo_ray.py)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    out = tmp_path / "new" / "summary"
    for flags, message in (
        (["--address", "nonsense"], "error: --address 'nonsense': expected 'auto' or HOST:PORT"),
        (["--address", closed], f"error: --address {closed}: no Ray cluster reachable there"),
        (["--address", "auto", "--engine", "sequential"], "error: --address auto: needs --engine ray"),
        (["--cpus-per-task", "0"], "expected a positive number, got '0'"),
        (["--engine", "dask"], "invalid choice"),
        (["--report-only", "flip alignment"], "expected analysis names separated by commas"),
        (
            ["--report-only", "flip_alignment"],
            "error: --report-only chooses the analyses of --index's reports",
        ),
    ):
        assert zs_cli.main([str(tiny_zoo), "--out", str(out), *flags]) == 2, flags
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (flags, err)
        assert not (tmp_path / "new").exists()
    from analyses.zoo_summary.engine import SummaryEngine

    with pytest.raises(ValueError, match="--device cuda: Ray tasks evaluate on CPUs; use --engine seq"):
        SummaryEngine(engine="ray").check("cuda")  # (this machine has no CUDA for the CLI to accept)


def test_a_run_evaluated_from_its_files_is_named_by_its_zoo_folder(tiny_zoo, tmp_path):
    """What a Ray task does with a run: evaluate a copy of its files; the numbers and the errors are
    those of the run folder itself."""
    from analyses.zoo_summary import engine

    folder = tiny_zoo / "fast_sinusoidal_L1_H1_D16_seed0"
    settings = dict(num_sequences=32, seed=0, batch_size=16, resamples=20, confidence=0.9, device="cpu")
    here = engine.evaluate_run(engine.evaluation_payload(folder, "grid", **settings))
    payload = engine.shipped(engine.evaluation_payload(folder, "grid", **settings))
    files = ["SHA256SUMS", "config.json", "metrics.json", "model.pt", "versions.json"]
    assert sorted(payload["files"]) == files  # not checkpoints/ or logs/
    a, b = here["value"], engine.evaluate_run(payload)["value"]  # the same RunSummary, field by field
    assert a.measured == b.measured and a.training == b.training and a.sha256 == b.sha256
    assert a.name == b.name and (a.mean_pattern == b.mean_pattern).all()
    payload["files"]["model.pt"] = b"not a model"
    payload["files"].pop("SHA256SUMS")
    error = engine.evaluate_run(payload)["error"]
    assert error.startswith(str(folder / "model.pt")) and "zoo-summary-" not in error
    report = engine.report_payload(folder, [])
    report["folder"] = str(tmp_path / "elsewhere" / folder.name)  # as on a node without the zoo folder
    error = engine.build_report(report)["error"]
    assert "need the zoo folder at the same path on every node (a shared filesystem)" in error


# --- bigger grids, the plan and its estimate --------------------------------------------------------
def test_bigger_grids_name_only_what_differs_from_the_tutorial():
    spec = zoo.ZooSpec(seeds=2, heads=(1,), layers=(1,), positional_embeddings=("learned",),
                       d_models=(32, 64), seq_lens=(16, 24), num_categories=(10, 5))  # fmt: skip
    runs = spec.runs()
    assert len(runs) == 2 * 2 * 2 * 2 * 2  # seeds × d × N × C × (grid + control)
    names = {r.name for r in runs}
    assert "fast_learned_L1_H1_seed0" in names and "fast_none_L1_H1_D64_N24_C5_seed1" in names
    run = next(r for r in runs if r.name == "fast_learned_L1_H1_N24_C5_seed1")
    argv = spec.train_argv(run, Path("z"))
    for flag, value in (("--d-model", "32"), ("--seq-len", "24"), ("--num-categories", "5"), ("--seed", "1")):
        assert argv[argv.index(flag) + 1] == value


def test_the_plan_groups_seeds_into_ensembles_and_trains_the_rest_alone(tmp_path):
    from models.zoo.plan import plan_tasks

    spec = zoo.ZooSpec(seeds=5, heads=(1, 2), layers=(1,), positional_embeddings=("sinusoidal",))
    tasks = plan_tasks(spec, spec.runs(), tmp_path, max_ensemble=3)
    assert sorted(len(t.runs) for t in tasks) == [2, 2, 2, 3, 3, 3]  # 3 architectures × (3 + 2) seeds
    assert all(len({(r.n_heads, r.positional_embedding) for r in t.runs}) == 1 for t in tasks)
    # longest predicted first: the control without positional encoding never stops early (its whole
    # budget of 1,562 steps against ~200), then two heads before one
    assert [t.name for t in tasks[:3]] == [
        "fast_none_L1_H1_seeds0-2", "fast_none_L1_H1_seeds3-4", "fast_sinusoidal_L1_H2_seeds0-2"
    ]  # fmt: skip
    alone = plan_tasks(spec, spec.runs(), tmp_path, ensemble=False)
    assert len(alone) == 15 and {t.note for t in alone} == {"--no-ensemble"}
    dropout = zoo.ZooSpec(
        seeds=2, heads=(1,), layers=(1,), positional_embeddings=("sinusoidal",), control=False,
        train_args=["--dropout", "0.1"],
    )  # fmt: skip
    assert [t.note for t in plan_tasks(dropout, dropout.runs(), tmp_path)] == ["dropout", "dropout"]


def test_predicted_work_is_the_formula_and_splits_a_straggler_ensemble(tmp_path):
    """``predicted_work`` by hand for a fast-preset run with and without positional encoding; on 2
    slots an ensemble predicted longer than a slot's share of the work is halved until none is."""
    from models.train.args import parse_args
    from models.zoo.plan import plan_tasks, predicted_work

    def args(*extra: str):
        return parse_args(["--preset", "fast", "--n-heads", "2", *extra]).resolve()

    # W = 1 layer · 32 · (1 + 2/4) = 48; n_ctx 16; E = 10,000 + 10,000; v = 20; batch 32, val 1,000
    per_step = 3 * 32 + 1000 / 20
    assert predicted_work(args(), 1) == pytest.approx(48 * 16 * (20_000 + 200 * per_step))
    budget = 50_000 // 32  # 1,562 steps: the whole epoch
    assert predicted_work(args("--positional-embedding", "none"), 3) == pytest.approx(
        3 * 48 * 16 * (20_000 + budget * per_step)
    )
    assert predicted_work(args("--max-steps", "50"), 1) == pytest.approx(48 * 16 * (20_000 + 50 * per_step))
    spec = zoo.ZooSpec(seeds=8, heads=(1,), layers=(1,), positional_embeddings=("sinusoidal",))
    one = plan_tasks(spec, spec.runs(), tmp_path)
    assert [len(t.runs) for t in one] == [8, 8]  # one slot: nothing to balance
    two = plan_tasks(spec, spec.runs(), tmp_path, slots=2)
    total = sum(t.work for t in two)
    assert total == pytest.approx(sum(t.work for t in one))
    # the no-PE ensemble is 83% of the work: halved once (4 + 4 seeds, 42% each), the other kept whole
    assert [(t.name, len(t.runs)) for t in two] == [
        ("fast_none_L1_H1_seeds0-3", 4),
        ("fast_none_L1_H1_seeds4-7", 4),
        ("fast_sinusoidal_L1_H1_seeds0-7", 8),
    ]
    assert max(t.work for t in two) <= total / 2
    assert sorted(r.name for t in two for r in t.runs) == sorted(r.name for r in spec.runs())
    assert [t.work for t in two] == sorted((t.work for t in two), reverse=True)


def test_list_shows_the_plan_and_an_estimate_from_the_measured_throughput(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("REVERSE_ENCODER_INTERP_CACHE", str(tmp_path / "cache"))
    from models.zoo.plan import record_throughput

    assert zoo.main(["--out", str(tmp_path / "z"), "--list"]) == 0
    out = capsys.readouterr().out
    assert "65 runs, 0 finished; 65 to train in 13 tasks:" in out and "ensemble of 5" in out
    assert "runs/min, default for ray/ensemble" in out
    record_throughput("ray", True, 2.0, runs=65, seconds=130.0)  # 30 runs per minute
    assert zoo.main(["--out", str(tmp_path / "z"), "--list", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert "26 to train in 13 tasks" in out and "52 s (30.0 runs/min, measured here: 65 runs in 130 s" in out
    assert not (tmp_path / "z").exists()  # --list writes nothing


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--engine", "sequential", "--address", "auto"], "--address auto: needs --engine ray"),
        (["--engine", "sequential", "--gpus-per-task", "0.5"], "--gpus-per-task: needs --engine ray"),
        (["--cpus-per-task", "0"], "--cpus-per-task 0.0: must be a positive number"),
        (["--gpus-per-task", "1.5"], "--gpus-per-task 1.5: above 1 it must be a whole number"),
        (["--gpus-per-task", "nan"], "expected a finite number"),
        (["--max-ensemble", "0"], "expected a positive integer"),
        (["--engine", "dask"], "invalid choice"),
        (["--d-model", "0"], "expected a positive integer"),
    ],
)
def test_engine_flags_are_checked_before_anything_starts(tmp_path, capsys, argv, message):
    assert zoo.main(["--out", str(tmp_path / "z"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "z").exists()


def test_a_fresh_process_imports_lightning_only_to_train_and_ray_only_on_ray(tmp_path):
    """One fresh interpreter (what is imported is the thing tested, so a process of its own; one, as
    each interpreter pays torch's import): models.encoder.data and models.train.cli (their CLI's argument
    errors and parsing included) never import Lightning; models.train.cli, the analyses, the sequential
    zoo and
    the sequential zoo summary never import Ray."""
    import subprocess
    import sys

    probe = (
        "import sys, models.encoder.data, models.train.cli, models.train.args\n"
        "assert models.train.cli.main(['--preset', 'nope']) == 2\n"
        "from models.train.cli import TrainArgs, build_parser, main, parse_args, train\n"
        "assert TrainArgs is models.train.args.TrainArgs and parse_args is models.train.args.parse_args\n"
        "assert parse_args(['--preset', 'fast']).resolve().lr == 7e-3\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pytorch_lightning', 'lightning')]\n"
        "assert not bad, ('Lightning imported by models.encoder.data/models.train.cli', bad)\n"
        "import models.train.cli, models.train.ensemble, models.zoo.cli, models.zoo.plan, machine.cluster\n"
        "import analyses.flip_alignment, analyses.zoo_summary, analyses.training_dynamics, reports.build\n"
        "assert 'ray' not in sys.modules, 'imported by a module'\n"
        "from models.zoo import cli as zoo\n"
        "argv = ['--out', sys.argv[1], '--engine', 'sequential', '--seeds', '1', '--heads', '1',"
        " '--layers', '1', '--positional-embeddings', 'sinusoidal', '--no-control', '--',"
        " '--train-size', '64', '--val-size', '8', '--test-size', '8', '--max-steps', '2']\n"
        "assert zoo.main(argv) == 0\n"
        "assert 'ray' not in sys.modules, 'imported by the sequential engine'\n"
        "assert 'transformers' not in sys.modules, 'imported by training (torchmetrics, through Lightning)'\n"
        "from analyses.zoo_summary import __main__ as summary\n"
        "argv = [sys.argv[1], '--out', sys.argv[1] + '-summary', '--engine', 'sequential', '--quiet',"
        " '--num-sequences', '8', '--bootstrap-resamples', '5']\n"
        "assert summary.main(argv) == 0\n"
        "assert 'ray' not in sys.modules, 'imported by the sequential zoo summary'\n"
        "print('ok')\n"
    )
    env = {**__import__("os").environ, "REVERSE_ENCODER_INTERP_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "z")],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        timeout=300,
    )
    assert result.returncode == 0 and result.stdout.strip().splitlines()[-1] == "ok", result.stderr[-2000:]


def test_a_task_given_a_gpu_that_finds_no_cuda_fails_saying_so(monkeypatch):
    import torch

    from models.zoo import task as zoo_task

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a node without a usable GPU
    task = {"names": ["fast_x_seed0", "fast_x_seed1"], "argvs": [], "ensemble": True, "gpus": 0.5}
    with pytest.raises(
        RuntimeError, match=r"fast_x_seed0 and others: --gpus-per-task 0.5 but no CUDA device"
    ):
        zoo_task.execute(task)


# --- machine.cluster.run_tasks when it is left early (a stand-in for Ray: no instance needed) ---------
class _FakeRay:
    """What run_tasks uses of Ray: each submitted item's value is ready one ``wait`` after submission;
    ``cancel`` records what it was asked to stop."""

    def __init__(self):
        self.cancelled: list[int] = []

    def remote(self, fn):
        class Remote:
            def options(self, **kwargs):
                return self

            def remote(self, fn, item):
                return ("ref", item)

        return Remote()

    def wait(self, refs, num_returns, timeout):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return ref[1], {}

    def cancel(self, ref, force):
        self.cancelled.append(ref[1])


@pytest.mark.parametrize(
    "raised, cancels",
    [(ValueError("the caller's mistake"), True), (KeyboardInterrupt(), False), (SystemExit(143), False)],
)
def test_run_tasks_left_early_cancels_the_rest_unless_the_process_is_ending(monkeypatch, raised, cancels):
    """An error in the caller's loop cancels the tasks still pending; Ctrl-C, SIGTERM or exit do not
    (the job ends with the process, and cancelling then can abort it in Ray 2.60)."""
    import contextlib

    from machine import cluster

    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    outcomes = cluster.run_tasks(abs, [1, 2, 3, 4])
    with pytest.raises(type(raised)):
        with contextlib.closing(outcomes):
            for outcome in outcomes:
                assert outcome.value == 1
                raise raised
    assert fake.cancelled == ([2, 3, 4] if cancels else [])
    # raised inside the generator itself (Ctrl-C while it waits for Ray)
    fake.cancelled.clear()

    def interrupted(refs, num_returns, timeout):
        raise type(raised)(*raised.args)

    monkeypatch.setattr(fake, "wait", interrupted)
    with pytest.raises(type(raised)):
        next(cluster.run_tasks(abs, [1, 2]))
    assert fake.cancelled == ([1, 2] if cancels else [])


def test_process_ending_reads_the_exception_and_what_it_interrupted():
    from machine.cluster import _process_ending

    closed_by_ctrl_c = GeneratorExit()
    closed_by_ctrl_c.__context__ = KeyboardInterrupt()
    closed_by_an_error = GeneratorExit()
    closed_by_an_error.__context__ = ValueError()

    class Terminated(BaseException):  # as the commands' SIGTERM handlers raise
        pass

    assert _process_ending(KeyboardInterrupt()) and _process_ending(SystemExit(0))
    assert _process_ending(Terminated()) and _process_ending(closed_by_ctrl_c)
    assert not _process_ending(None) and not _process_ending(ValueError())
    assert not _process_ending(GeneratorExit()) and not _process_ending(closed_by_an_error)


@pytest.mark.parametrize("nested", [False, True])
def test_ctrl_c_with_a_failed_tasks_outcome_in_hand_and_in_a_nested_block(monkeypatch, nested):
    """The caller's Ctrl-C while it handles a failed task's outcome is still Ctrl-C (nothing cancelled);
    inside a ray_cluster block that reuses an open one (a notebook's), the instance outlives the
    Ctrl-C, so the rest is cancelled."""
    import contextlib

    from machine import cluster

    fake = _FakeRay()

    def get(ref):
        if ref[1] == 1:
            raise RuntimeError("the task failed")
        return ref[1], {}

    monkeypatch.setattr(fake, "get", get)
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(cluster, "_NESTED", [True] if nested else [])
    outcomes = cluster.run_tasks(abs, [1, 2, 3])
    with pytest.raises(KeyboardInterrupt):
        with contextlib.closing(outcomes):
            for outcome in outcomes:
                assert outcome.error == "RuntimeError: the task failed"
                raise KeyboardInterrupt
    assert fake.cancelled == ([2, 3] if nested else [])
