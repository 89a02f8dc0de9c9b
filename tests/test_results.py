"""What every analysis' result object offers, checked on all nine: ``run`` takes a checkpoint path,
a short ``repr``, ``summary()``, ``to_dataframe()`` (pandas optional), and metrics.csv rows with a
scope and integer layer/head cells."""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_model, no_figures, numbers

from analyses import flip_alignment as fa
from analyses import head_ablation as ha
from analyses import interchange as ic
from analyses import length_generalisation as lg
from analyses import pe_ablation as pa
from analyses import qk_circuit as qk
from analyses import tolerance as tol
from analyses import training_dynamics as td
from analyses import zoo_summary as zs
from analyses.flip_alignment import __main__ as fa_cli
from analyses.frame.files import write_csv
from analyses.frame.result import AnalysisResult
from models import load_model, save_model, sha256_file

SMALL = dict(num_sequences=24, batch_size=12, bootstrap_resamples=20)
ONE_MODEL = (
    "flip_alignment",
    "qk_circuit",
    "pe_ablation",
    "head_ablation",
    "length_generalisation",
    "tolerance",
    "interchange",
)
TOLERANCE = dict(
    temperatures=(1.0, 2.0), mixes=(0.0, 0.5), adversarial_sequences=4, beam_width=2, beam_steps=1
)


def fake_zoo(folder: Path) -> Path:
    """Two finished runs of one architecture, as ``models.zoo.cli`` lays them out (untrained weights)."""
    for seed in (0, 1):
        run = folder / f"fast_sinusoidal_L1_H1_seed{seed}"
        run.mkdir(parents=True)
        model = make_model(seed=seed)
        save_model(model, run / "model.pt")
        (run / "config.json").write_text(json.dumps({"seed": seed, "encoder": model.cfg.to_dict()}))
        (run / "metrics.json").write_text(
            json.dumps({"test_acc": 0.1, "first_perfect_step": None, "steps": 30})
        )
    return folder


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("results")
    return {
        "one": save_model(make_model(), folder / "one.pt"),
        "two": save_model(make_model(seed=1, n_layers=2, n_heads=2), folder / "two.pt"),
        "zoo": fake_zoo(folder / "zoo"),
    }


@pytest.fixture(scope="module")
def results(paths) -> dict[str, AnalysisResult]:
    """One small result of every analysis; the model analyses get a checkpoint path, not a model."""
    one, two = paths["one"], paths["two"]
    return {
        "flip_alignment": fa.run(str(one), **SMALL),
        "qk_circuit": qk.run(two, **SMALL),  # two layers: a model-wide rollout row
        "pe_ablation": pa.run(str(two), **SMALL, shuffle_seeds=1, alphas=(0.5,), monte_carlo_sequences=100),
        "head_ablation": ha.run(
            one, **SMALL, permutations=1, reference_sequences=4, patch_sequences=6, progress=False
        ),
        "length_generalisation": lg.run(str(one), lengths=(8, 16), **SMALL),
        "tolerance": tol.run(str(one), **SMALL, **TOLERANCE),
        "interchange": ic.run(str(one), **SMALL),
        "training_dynamics": td.run([(0, make_model(seed=3)), (10, make_model())], **SMALL),
        "zoo_summary": zs.run(paths["zoo"], **SMALL),
    }


@pytest.mark.parametrize("name", ONE_MODEL)
def test_run_takes_a_checkpoint_path_and_names_it(results, paths, name):
    provenance = results[name].provenance
    path = paths["two"] if name in ("qk_circuit", "pe_ablation") else paths["one"]
    assert provenance["checkpoint"] == str(path.absolute())
    assert provenance["checkpoint_sha256"] == sha256_file(path) and provenance["command"] is None


def test_a_path_gives_the_numbers_of_the_model_loaded_from_it(results, paths):
    from_model = fa.run(load_model(paths["one"]), **SMALL)
    assert numbers(from_model) == numbers(results["flip_alignment"])


@pytest.mark.parametrize("name", [*ONE_MODEL, "training_dynamics", "zoo_summary"])
def test_repr_is_one_short_line(results, name):
    text = repr(results[name])
    assert len(text.splitlines()) == 1 and len(text) < 200, text
    assert text.startswith(f"<{type(results[name]).__name__} {name}: ") and "24 sequences, seed 0" in text
    assert "array(" not in text and "Estimate(" not in text


@pytest.mark.parametrize("name", [*ONE_MODEL, "training_dynamics", "zoo_summary"])
def test_summary_is_the_same_method_everywhere(results, name):
    text = results[name].summary()
    assert isinstance(text, str) and len(text.splitlines()) >= 2


def test_summary_is_what_the_cli_prints(paths, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fa_cli, "OUTPUTS", no_figures(monkeypatch, fa.OUTPUTS))
    argv = ["--checkpoint", str(paths["one"]), "--num-sequences", "24", "--batch-size", "12"]
    assert fa_cli.main([*argv, "--bootstrap-resamples", "20", "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert printed == fa.run(paths["one"], **SMALL).summary() + f"\n\nwrote {tmp_path / 'out'}\n"


@pytest.mark.parametrize("name", [*ONE_MODEL, "training_dynamics", "zoo_summary"])
def test_metrics_csv_marks_model_rows_and_has_integer_layers_and_heads(results, name, tmp_path):
    result = results[name]
    write_csv(tmp_path / "metrics.csv", result.csv_rows(), result.CSV_FIELDS)
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and "scope" in rows[0]
    assert not any(row["metric"] == "difference" for row in rows)  # say what is differenced
    if "layer" not in rows[0]:  # zoo_summary: runs and architectures, no heads
        assert {row["scope"] for row in rows} <= {"run", "architecture", "difference_from_reference"}
        return
    assert {row["scope"] for row in rows} == {"model", "head"}
    for row in rows:
        if row["scope"] == "head":
            assert re.fullmatch(r"\d+", row["layer"]) and re.fullmatch(r"\d+", row["head"]), row
        else:
            assert row["layer"] == row["head"] == "", row


@pytest.mark.parametrize("name", [*ONE_MODEL, "training_dynamics", "zoo_summary"])
def test_to_dataframe_is_metrics_csv(results, name):
    result = results[name]
    frame = result.to_dataframe()
    rows = result.csv_rows()
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == list(result.CSV_FIELDS)
    assert len(frame) == len(rows)
    means = [row.get("mean") for row in rows]
    assert [None if pd.isna(v) else v for v in frame["mean"]] == means
    if "layer" in frame:
        assert str(frame["layer"].dtype) == str(frame["head"].dtype) == "Int64"
        heads = frame[frame["scope"] == "head"]
        assert len(heads) and not heads["layer"].isna().any() and not heads["head"].isna().any()
        assert frame[frame["scope"] == "model"]["layer"].isna().all()


def test_to_dataframe_without_pandas_says_how_to_get_it(results, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` now raises ImportError
    with pytest.raises(ImportError) as info:
        results["flip_alignment"].to_dataframe()
    assert str(info.value) == "to_dataframe() needs pandas: pip install pandas"


def test_our_progress_lines_follow_progress_and_quiet(paths, tmp_path, capsys, monkeypatch):
    from analyses.zoo_summary import __main__ as zs_cli

    zs.run(paths["zoo"], **SMALL, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[1] == "[2/2 runs] fast_sinusoidal_L1_H1_seed1: evaluation"
    assert re.fullmatch(r"\[1/2 runs, ETA \d+ s\] fast_sinusoidal_L1_H1_seed0: evaluation", lines[0])
    zs.run(paths["zoo"], **SMALL)  # from Python: quiet unless asked
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(zs_cli, "OUTPUTS", no_figures(monkeypatch, zs.OUTPUTS))
    argv = [str(paths["zoo"]), "--num-sequences", "24", "--bootstrap-resamples", "20"]
    argv += ["--engine", "sequential"]
    assert zs_cli.main([*argv, "--out", str(tmp_path / "loud")]) == 0
    assert "[2/2 runs]" in capsys.readouterr().err
    assert zs_cli.main([*argv, "--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "wrote" in captured.out
