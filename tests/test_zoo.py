"""The model zoo: the grid, resumption after a kill, flag pass-through; and the zoo summary: its
statistics on hand-computed values and every output on a tiny real zoo."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from analyses import zoo_summary as zs
from analyses.zoo_summary import __main__ as zs_cli
from analyses.zoo_summary.figures import FIGURES
from analyses.zoo_summary.result import t_interval, welch_interval
from analyses.zoo_summary.runs import discover
from models import zoo

# Tiny runs: d_model 16, 960 training sequences (30 batches of 32), 30 steps (about a second each).
TINY = "--d-model 16 --train-size 960 --val-size 64 --test-size 64 --max-steps 30".split()
TINY_SPEC = dict(seeds=2, heads=(1,), layers=(1,), positional_embeddings=("sinusoidal",), train_args=TINY)


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
        (dict(heads=(0,)), "--heads"),
        (dict(positional_embeddings=("rotary",)), "unknown 'rotary'"),
        (dict(train_args=["--lr", "-1"]), "--lr"),  # checked by models.train before anything trains
    ],
)
def test_bad_grids_fail_before_training(tmp_path, spec, message):
    with pytest.raises(ValueError, match=message):
        zoo.run_zoo(tmp_path / "z", zoo.ZooSpec(**spec))
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
    assert err.startswith(f"error: --out {blocker / 'zoo'}: cannot create the folder (")
    assert err.count("\n") == 1
    # Lightning rejects the devices only when the first run starts: the folders made for it go again
    assert zoo.main(["--out", str(tmp_path / "new" / "zoo"), "--seeds", "1", "--", "--devices", "0"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "new").exists()


# --- a tiny real zoo ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zoo")
    records = zoo.run_zoo(out, zoo.ZooSpec(**TINY_SPEC, accelerator="cpu", devices="1"))
    assert [r["status"] for r in records] == ["trained"] * 4  # 2 seeds + 2 controls
    return out


def test_zoo_writes_run_folders_and_a_manifest(tiny_zoo):
    manifest = json.loads((tiny_zoo / "zoo.json").read_text())
    names = [r["name"] for r in manifest["runs"]]
    assert names == [
        "fast_sinusoidal_L1_H1_seed0",
        "fast_sinusoidal_L1_H1_seed1",
        "fast_none_L1_H1_seed0",
        "fast_none_L1_H1_seed1",
    ]
    for name in names:
        config = json.loads((tiny_zoo / name / "config.json").read_text())
        assert (tiny_zoo / name / "model.pt").is_file() and config["training"]["max_steps"] == 30
        assert config["training"]["accelerator"] == "cpu" and config["training"]["devices"] == "1"
        assert config["encoder"]["d_model"] == 16


def test_a_killed_zoo_continues_and_trains_only_what_is_missing(tmp_path):
    out = tmp_path / "zoo"
    zoo.run_zoo(out, zoo.ZooSpec(**TINY_SPEC))  # trained in place: a resumed run must find its own files
    # seed 1 was killed mid-run: its checkpoints exist, but neither model.pt nor metrics.json;
    # the first control never started.
    interrupted, unstarted = out / "fast_sinusoidal_L1_H1_seed1", out / "fast_none_L1_H1_seed0"
    (interrupted / "model.pt").unlink()
    (interrupted / "metrics.json").unlink()
    shutil.rmtree(unstarted)
    untouched = {p: p.stat().st_mtime_ns for p in out.glob("*/model.pt")}
    records = zoo.run_zoo(out, zoo.ZooSpec(**TINY_SPEC))
    status = {r["name"]: (r["before"], r["status"]) for r in records}
    assert status == {
        "fast_sinusoidal_L1_H1_seed0": ("finished", "skipped"),
        "fast_sinusoidal_L1_H1_seed1": ("partial", "resumed"),
        "fast_none_L1_H1_seed0": ("new", "trained"),
        "fast_none_L1_H1_seed1": ("finished", "skipped"),
    }
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in untouched.items())  # finished runs untouched
    assert (interrupted / "model.pt").is_file() and (unstarted / "model.pt").is_file()
    assert json.loads((interrupted / "metrics.json").read_text())["steps"] == 30


# --- the summary statistics -----------------------------------------------------------------------
def test_t_interval_by_hand():
    mean, low, high, sd = t_interval(np.array([1.0, 2.0, 3.0]), 0.95)
    half = 4.302652729911275 / math.sqrt(3)  # t_{0.975, 2} · s / √n with s = 1
    assert (mean, sd) == (2.0, 1.0) and low == pytest.approx(2 - half) and high == pytest.approx(2 + half)
    assert all(math.isnan(v) for v in t_interval(np.array([0.5]), 0.95)[1:])  # one seed: no interval
    assert t_interval(np.array([0.5, np.nan, 0.5]), 0.95)[:3] == (0.5, 0.5, 0.5)


def test_welch_interval_matches_scipy():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0, 6.0, 9.0])
    diff, low, high = welch_interval(a, b, 0.95)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(a.mean() - b.mean())
    assert (low, high) == pytest.approx((ci.low, ci.high))
    assert welch_interval(np.ones(3), np.ones(2), 0.95) == (0.0, 0.0, 0.0)  # no spread: no width


def test_summary_writes_every_output(tiny_zoo, tmp_path, capsys):
    out = tmp_path / "summary"
    argv = [str(tiny_zoo), "--out", str(out), "--num-sequences", "64", "--bootstrap-resamples", "50"]
    assert zs_cli.main(argv) == 0
    assert "sinusoidal L1 H1" in capsys.readouterr().out
    document = json.loads((out / "metrics.json").read_text())
    assert document["schema_version"] == zs.SCHEMA_VERSION and document["analysis"] == "zoo_summary"
    assert len(document["provenance"]["runs"]) == 4 and document["provenance"]["command"]
    archs = {a["name"]: a for a in document["architectures"]}
    assert (
        set(archs) == {"sinusoidal L1 H1", "none L1 H1"}
        and document["settings"]["reference"] == "sinusoidal L1 H1"
    )
    sin = archs["sinusoidal L1 H1"]
    runs = {r["name"]: r for r in document["runs"]}
    seeds = [runs[name]["flip_mass"]["mean"] for name in sin["runs"]]
    mean, low, high, _ = t_interval(np.array(seeds), 0.95)
    got = sin["stats"]["flip_mass"]
    assert got["values"] == seeds and got["n"] == 2
    assert (got["mean"], got["ci_low"], got["ci_high"]) == pytest.approx((mean, low, high))
    assert got["sd"] == pytest.approx(np.std(seeds, ddof=1))
    assert "zero_pe_accuracy" not in archs["none L1 H1"]["stats"]  # no PE to zero
    diff = archs["none L1 H1"]["differences"]["flip_mass"]
    none_seeds = [runs[name]["flip_mass"]["mean"] for name in archs["none L1 H1"]["runs"]]
    assert diff["mean"] == pytest.approx(np.mean(none_seeds) - np.mean(seeds))
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0] == ",".join(zs.CSV_FIELDS) and any(r.startswith("architecture,none L1 H1,") for r in rows)
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
    assert "nan" not in text and "n/a (1 seed)" in text
    sin = next(a for a in result.architectures if a.name == "sinusoidal L1 H1")
    run = next(r for r in result.runs if r.architecture == sin.name)
    e = run.measured["flip_mass"]
    lines = text.splitlines()
    row = lines.index(next(line for line in lines if line.startswith("sinusoidal L1 H1")))
    assert f"{e.mean:.3f} n/a (1 seed)" in lines[row]
    assert (
        lines[row + 1].startswith("  run CI (1 seed)")
        and f"[{e.ci_low:.3f}, {e.ci_high:.3f}]" in lines[row + 1]
    )
    html = (zs.write_outputs(result, tmp_path / "out") / "report.html").read_text()
    assert f"{e.mean:.3f} n/a (1 seed)" in html and f"run CI [{e.ci_low:.3f}, {e.ci_high:.3f}]" in html


def test_summary_without_a_manifest_scans_the_folder_and_reports_missing_runs(tiny_zoo, tmp_path):
    out = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, out)
    (out / "fast_none_L1_H1_seed1" / "metrics.json").unlink()
    assert discover(out)[1] == ["fast_none_L1_H1_seed1"]
    (out / "zoo.json").unlink()
    folders, missing = discover(out)
    assert [p.name for p, _ in folders] == [
        "fast_none_L1_H1_seed0",
        "fast_sinusoidal_L1_H1_seed0",
        "fast_sinusoidal_L1_H1_seed1",
    ]
    assert [role for _, role in folders] == ["control", "grid", "grid"] and missing == [
        "fast_none_L1_H1_seed1"
    ]


def test_summary_cli_errors(tmp_path, capsys):
    assert zs_cli.main([str(tmp_path / "nothing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert zs_cli.main([str(tmp_path)]) == 2
    assert "no finished run" in capsys.readouterr().err


def test_index_links_every_runs_full_report(tiny_zoo, tmp_path):
    zoo_dir = tmp_path / "zoo"
    shutil.copytree(tiny_zoo, zoo_dir)
    manifest = json.loads((zoo_dir / "zoo.json").read_text())
    manifest["runs"] = manifest["runs"][:1]  # one run keeps the full report build short
    (zoo_dir / "zoo.json").write_text(json.dumps(manifest))
    out = tmp_path / "summary"
    argv = [
        str(zoo_dir),
        "--out",
        str(out),
        "--num-sequences",
        "32",
        "--bootstrap-resamples",
        "20",
        "--index",
    ]
    assert zs_cli.main(argv) == 0
    run_report = zoo_dir / "fast_sinusoidal_L1_H1_seed0" / "report"
    assert (run_report / "report.html").is_file() and (run_report / "summary.json").is_file()
    index = (out / "index.html").read_text()
    assert "../zoo/fast_sinusoidal_L1_H1_seed0/report/report.html" in index
    assert json.loads((out / "metrics.json").read_text())["index_page"] == "index.html"
    assert 'href="index.html"' in (out / "report.html").read_text()
