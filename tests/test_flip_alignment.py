"""The flip-alignment analysis: ground truth on planted patterns, agreement with a direct computation,
determinism, the output folder, the CLI and its errors, and a trained model."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_model, no_figures, numbers

from analyses import flip_alignment as fa
from analyses.flip_alignment import __main__ as fa_cli
from analyses.flip_alignment.figures import FIGURES
from analyses.frame import cli, files, sequences
from interp import metrics
from models import load_model, save_model, sha256_file
from models.storage.checkpoints import to_flax_tree, write_flax_msgpack
from models.train import default_model

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(num_sequences=60, batch_size=16, bootstrap_resamples=50, n_examples=2)


def anti_diagonal(pattern, hook):
    n = pattern.shape[-1]
    return torch.eye(n, dtype=pattern.dtype).flip(-1).expand_as(pattern).clone()


def shift_by_one(pattern, hook):
    """Query i reads key N−1−i+1; query 0, which has no such key, reads key 0."""
    n = pattern.shape[-1]
    keys = torch.arange(n - 1, -1, -1) + 1
    keys[0] = 0
    return torch.nn.functional.one_hot(keys, n).to(pattern.dtype).expand_as(pattern).clone()


def strip_volatile(document: dict) -> dict:
    document = dict(document)
    document["provenance"] = {k: v for k, v in document["provenance"].items() if k != "timestamp"}
    return document


# --- the analysis (Python API) --------------------------------------------------------------------
def test_planted_anti_diagonal_gives_a_perfect_flip(tiny_model):
    with tiny_model.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", anti_diagonal)]):
        result = fa.run(tiny_model, **SMALL)
    (head,) = result.layers[0]
    for est in (head.flip_mass, head.offset_mass[0]):  # masses: percentile bootstrap
        assert (est.mean, est.ci_low, est.ci_high) == (1.0, 1.0, 1.0)
    # a hit rate of 100% on n sequences is a proportion: the exact bound (α/2)^(1/n), never [1, 1]
    hits = head.argmax_hit_rate
    assert (hits.mean, hits.ci_high) == (1.0, 1.0)
    assert hits.ci_low == pytest.approx(0.025 ** (1 / result.num_sequences))
    for est in (head.entropy, head.neighbour_mass, head.remainder_mass, head.offset_mass[1]):
        assert (est.mean, est.ci_low, est.ci_high) == (0.0, 0.0, 0.0)
    assert all(e.mean == 1.0 for e in head.per_position_flip_mass)
    assert head.entropy_counts[0] == result.num_sequences * result.seq_len  # every row in the first bin


def test_planted_shift_puts_the_mass_at_offset_plus_one(tiny_model):
    with tiny_model.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", shift_by_one)]):
        result = fa.run(tiny_model, **SMALL)
    (head,) = result.layers[0]
    assert head.offset_mass[1].mean == 1.0 and head.flip_mass.mean == 0.0
    assert head.neighbour_mass.mean == pytest.approx(15 / 16)  # query 0 reads key 0, far away
    assert result.offset_queries == [13, 14, 15, 16, 15, 14, 13]


def test_uniform_attention_reference_values(tiny_model):
    uniform = lambda p, hook: torch.full_like(p, 1.0 / p.shape[-1])  # noqa: E731
    with tiny_model.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", uniform)]):
        result = fa.run(tiny_model, **SMALL)
    (head,) = result.layers[0]
    assert head.flip_mass.mean == pytest.approx(1 / 16)
    assert head.entropy.mean == pytest.approx(math.log(16))
    # Every neighbour key gets 1/N whatever digit it holds: duplicates are not preferred.
    assert head.duplicate_mass_per_key.mean == pytest.approx(1 / 16)
    assert head.duplicate_minus_other.mean == pytest.approx(0.0, abs=1e-12)


def test_run_agrees_with_a_direct_computation(multi_model):
    result = fa.run(multi_model, **SMALL)
    tokens = torch.cat(list(sequences.token_batches(60, 16, 10, seed=0, batch_size=60)))
    logits, cache = multi_model.run_with_cache(tokens)
    for layer in range(2):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"].double()
        flip = metrics.flip_mass(pattern).mean((0, 2))  # [head]
        entropy = metrics.row_entropy(pattern).mean((0, 2))
        mean_map = pattern.mean(0)
        for head in range(4):
            h = result.layers[layer][head]
            assert h.flip_mass.mean == pytest.approx(flip[head].item())
            assert h.flip_mass.ci_low <= h.flip_mass.mean <= h.flip_mass.ci_high
            assert h.entropy.mean == pytest.approx(entropy[head].item())
            assert torch.allclose(torch.from_numpy(h.mean_pattern), mean_map[head], atol=1e-6)
    accuracy = (logits.argmax(-1) == tokens.flip(-1)).double().mean().item()
    assert result.accuracy.mean == pytest.approx(accuracy)
    assert result.example_patterns.shape == (2, 2, 4, 16, 16)


def test_same_seed_same_numbers_and_batch_size_does_not_matter(tiny_model):
    a = numbers(fa.run(tiny_model, **SMALL))  # without the provenance timestamp, which may tick between runs
    b = numbers(fa.run(tiny_model, **{**SMALL, "batch_size": 7}))
    a["settings"].pop("batch_size"), b["settings"].pop("batch_size")
    assert a == b
    c = fa.run(tiny_model, **{**SMALL, "seed": 1}).to_dict()
    assert c["layers"] != a["layers"]


def test_metrics_json_contract(multi_model):
    document = fa.run(multi_model, **SMALL).to_dict()
    est = {"mean", "ci_low", "ci_high"}
    assert document["schema_version"] == fa.SCHEMA_VERSION
    assert set(document["accuracy"]) == est
    assert len(document["layers"]) == 2
    for layer in document["layers"]:
        assert len(layer["heads"]) == 4
        for head in layer["heads"]:
            for key in ("flip_mass", "argmax_hit_rate", "entropy"):
                assert set(head[key]) == est
            assert list(head["offset_mass"]) == ["-3", "-2", "-1", "0", "1", "2", "3"]
            assert all(set(v) == est for v in head["offset_mass"].values())
            assert len(head["per_position_flip_mass"]) == 16
            assert all(set(v) == est for v in head["per_position_flip_mass"])
    json.dumps(document, allow_nan=False)  # strict JSON


def test_seq_len_other_than_training_length(tiny_model):
    result = fa.run(tiny_model, **{**SMALL, "seq_len": 5})
    assert result.seq_len == 5 and len(result.layers[0][0].per_position_flip_mass) == 5
    assert result.offset_queries == [2, 3, 4, 5, 4, 3, 2]


def test_bad_arguments_raise_value_errors(tiny_model):
    with pytest.raises(ValueError, match="num_sequences"):
        fa.run(tiny_model, num_sequences=0)
    learned = make_model(positional_embedding="learned")
    with pytest.raises(ValueError, match="seq_len 17 exceeds"):
        fa.run(learned, num_sequences=4, seq_len=17)
    with pytest.raises(ValueError, match="seed"):
        fa.run(tiny_model, num_sequences=4, seed=-1)


# --- shared infrastructure --------------------------------------------------------------------------
def test_token_batches_are_deterministic_and_batch_size_free():
    whole = torch.cat(list(sequences.token_batches(9000, 4, 10, seed=3, batch_size=9000)))
    pieces = list(sequences.token_batches(9000, 4, 10, seed=3, batch_size=1000))
    assert [len(p) for p in pieces] == [1000] * 9
    assert torch.equal(torch.cat(pieces), whole)
    assert whole.min() >= 0 and whole.max() <= 9
    assert not torch.equal(
        whole, torch.cat(list(sequences.token_batches(9000, 4, 10, seed=4, batch_size=9000)))
    )


def test_atomic_output_dir_all_or_nothing(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(RuntimeError):
        with files.atomic_output_dir(out) as tmp:
            (tmp / "half.json").write_text("{")
            raise RuntimeError("boom")
    assert not (tmp_path / "a").exists()  # the parents it made are gone too
    with files.atomic_output_dir(out) as tmp:
        files.write_json(tmp / "metrics.json", {"schema_version": 1, "analysis": "x", "v": float("nan")})
    assert json.loads((out / "metrics.json").read_text())["v"] is None
    with pytest.raises(RuntimeError):
        with files.atomic_output_dir(out) as tmp:
            raise RuntimeError("boom")
    assert (out / "metrics.json").exists()  # the previous output survives a failed rerun
    with files.atomic_output_dir(out) as tmp:
        files.write_text(tmp / "y.txt", "new")
    assert sorted(p.name for p in out.iterdir()) == ["y.txt"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # no temp folders left


def test_out_never_replaces_a_folder_that_is_not_an_output(tmp_path, monkeypatch):
    """An output folder is replaced whole, so --out may only name a new or empty folder or an earlier
    output: never the current folder, a folder containing it, or one holding the user's files."""
    home = tmp_path / "project"
    (home / "src").mkdir(parents=True)
    (home / "keep.txt").write_text("mine")
    (home / "metrics.json").write_text('{"train_acc": 1.0}')  # a training run's metrics.json
    monkeypatch.chdir(home / "src")
    for out in (home, home / "src", Path("."), Path(".."), tmp_path):
        with pytest.raises(cli.UserError, match="current folder or contains it"):
            with files.atomic_output_dir(out):
                pass
    monkeypatch.chdir(tmp_path)
    with pytest.raises(cli.UserError, match="not an analysis output folder"):
        with files.atomic_output_dir(home):
            pass
    with pytest.raises(cli.UserError, match="empty"):
        files.check_replaceable("")
    assert (home / "keep.txt").read_text() == "mine" and (home / "src").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]  # no temp folders left
    (tmp_path / "empty").mkdir()
    with files.atomic_output_dir(tmp_path / "empty") as tmp:  # an empty folder is fine
        files.write_text(tmp / "a.txt", "a")
    assert (tmp_path / "empty" / "a.txt").exists()
    # the CLI: one line, exit 2, the folder untouched
    monkeypatch.chdir(home)
    for argv in (["--out", ""], ["--out", "."], ["--out", str(home.parent)]):
        assert fa_cli.main([*CLI_SMALL, *argv]) == 2
    assert (home / "keep.txt").read_text() == "mine" and (home / "src").is_dir()


def test_unwritable_out_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(cli.UserError, match="cannot write to --out"):
        with files.atomic_output_dir(blocker / "out"):
            pass
    with pytest.raises(cli.UserError, match="not a folder"):
        with files.atomic_output_dir(blocker):
            pass


def test_report_is_self_contained_and_escaped(tiny_model, tmp_path):
    result = fa.run(tiny_model, **SMALL)
    result.provenance = {"checkpoint": "<script>alert(1)</script>", "command": "a & b"}
    fa.write_outputs(result, tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "a &amp; b" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "http://" not in html and "https://" not in html
    names = sorted(p.stem for p in (tmp_path / "out" / "figures").glob("*.png"))
    assert not list((tmp_path / "out" / "figures").glob("*.svg"))  # SVG only when asked for (--svg)
    assert html.count("data:image/png;base64,") == len(names) == 6  # 2 examples + 4 summary figures


# --- the command line -------------------------------------------------------------------------------
CLI_SMALL = ["--num-sequences", "40", "--batch-size", "16", "--bootstrap-resamples", "30"]


@pytest.fixture
def checkpoint(tmp_path):
    return save_model(make_model(), tmp_path / "model.pt")


def test_cli_writes_every_output_and_reruns_identically(checkpoint, tmp_path, capsys):
    out = tmp_path / "results" / "flip"
    assert fa_cli.main(["--checkpoint", str(checkpoint), "--out", str(out), *CLI_SMALL, "--svg"]) == 0
    printed = capsys.readouterr().out
    assert "flip mass" in printed and str(out.absolute()) in printed
    figures = {p.name for p in (out / "figures").iterdir()}
    for name in [*FIGURES, *(f"example_attention_{k}" for k in range(3))]:
        assert {f"{name}.png", f"{name}.svg"} <= figures
    assert sorted(p.name for p in out.iterdir()) == ["figures", "metrics.csv", "metrics.json", "report.html"]
    first = json.loads((out / "metrics.json").read_text())
    provenance = first["provenance"]
    assert provenance["checkpoint_sha256"] == sha256_file(checkpoint)
    assert provenance["checkpoint"] == str(checkpoint.absolute())
    assert provenance["config"]["d_model"] == 16 and provenance["num_sequences"] == 40
    assert "--num-sequences 40" in provenance["command"] and provenance["packages"]["torch"]
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0] == ",".join(fa.CSV_FIELDS)
    assert any(r.startswith("head,0,0,flip_mass,,") for r in rows)
    # metrics.json's duplicate_neighbours.difference says in metrics.csv what it is the difference of.
    (difference,) = [
        r.split(",") for r in rows if r.startswith("head,0,0,duplicate_minus_other_mass_per_key,,")
    ]
    expected = first["layers"][0]["heads"][0]["duplicate_neighbours"]["difference"]["mean"]
    assert float(difference[5]) == pytest.approx(expected)
    assert not any(r.split(",")[3] == "difference" for r in rows[1:])
    figure_bytes = {p.name: p.read_bytes() for p in (out / "figures").iterdir()}

    assert fa_cli.main(["--checkpoint", str(checkpoint), "--out", str(out), *CLI_SMALL, "--svg"]) == 0
    assert strip_volatile(json.loads((out / "metrics.json").read_text())) == strip_volatile(first)
    assert {p.name: p.read_bytes() for p in (out / "figures").iterdir()} == figure_bytes
    assert sorted(p.name for p in out.parent.iterdir()) == ["flip"]  # no temp folders left behind


def test_cli_reads_a_run_folder_and_other_seq_len(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr(fa_cli, "OUTPUTS", no_figures(monkeypatch, fa.OUTPUTS))
    out = tmp_path / "out"
    assert (
        fa_cli.main(["--checkpoint", str(checkpoint.parent), "--out", str(out), "--seq-len", "6", *CLI_SMALL])
        == 0
    )
    document = json.loads((out / "metrics.json").read_text())
    assert document["settings"]["seq_len"] == 6
    assert len(document["layers"][0]["heads"][0]["per_position_flip_mass"]) == 6


def test_cli_reads_the_tutorial_flax_format_with_n_heads(tmp_path, monkeypatch):
    monkeypatch.setattr(fa_cli, "OUTPUTS", no_figures(monkeypatch, fa.OUTPUTS))
    model = make_model(seed=5, n_heads=2, layer_norm_eps=1e-6)
    flax_file = write_flax_msgpack(to_flax_tree(model), tmp_path / "tutorial.msgpack")
    out = tmp_path / "out"
    assert fa_cli.main(["--checkpoint", str(flax_file), "--n-heads", "2", "--out", str(out), *CLI_SMALL]) == 0
    heads = json.loads((out / "metrics.json").read_text())["layers"][0]["heads"]
    direct = fa.run(model, num_sequences=40, batch_size=16, bootstrap_resamples=30)
    assert len(heads) == 2
    for h, expected in zip(heads, direct.layers[0]):
        assert h["flip_mass"]["mean"] == pytest.approx(expected.flip_mass.mean, abs=1e-6)


def bad_inputs(tmp_path, checkpoint):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    learned = save_model(make_model(positional_embedding="learned"), tmp_path / "learned.pt")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = str(tmp_path / "out")
    return {
        "missing checkpoint": (["--checkpoint", str(tmp_path / "nope.pt"), "--out", out], "no such file"),
        "corrupt checkpoint": (["--checkpoint", str(corrupt), "--out", out], "corrupt.pt"),
        "zero sequences": (["--checkpoint", str(checkpoint), "--num-sequences", "0", "--out", out], "0"),
        "negative sequences": (
            ["--checkpoint", str(checkpoint), "--num-sequences", "-3", "--out", out],
            "-3",
        ),
        "seq-len too long": (["--checkpoint", str(learned), "--seq-len", "17", "--out", out], "17"),
        "seq-len beyond PE table": (
            ["--checkpoint", str(checkpoint), "--seq-len", "5001", "--out", out],
            "5000",
        ),
        "unwritable out": (["--checkpoint", str(checkpoint), "--out", str(blocker / "out")], "--out"),
        "unknown device": (["--checkpoint", str(checkpoint), "--device", "tpu9", "--out", out], "tpu9"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing checkpoint",
        "corrupt checkpoint",
        "zero sequences",
        "negative sequences",
        "seq-len too long",
        "seq-len beyond PE table",
        "unwritable out",
        "unknown device",
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_no_output(case, tmp_path, checkpoint, capsys):
    argv, needle = bad_inputs(tmp_path, checkpoint)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    assert fa_cli.main([*argv, *CLI_SMALL[2:]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert needle in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output folder, no temp folder


def test_no_checkpoint_reuses_the_cached_default_model(tmp_path, monkeypatch):
    monkeypatch.setattr(fa_cli, "OUTPUTS", no_figures(monkeypatch, fa.OUTPUTS))
    monkeypatch.setenv(default_model.CACHE_ENV, str(tmp_path / "cache"))
    run = default_model.default_model_dir()
    assert run == tmp_path / "cache" / "models" / "tutorial-seed0"
    run.mkdir(parents=True)
    cached = save_model(make_model(seed=3), run / "model.pt")
    (run / "metrics.json").write_text("{}")  # a finished training run
    out = tmp_path / "out"
    assert fa_cli.main(["--out", str(out), *CLI_SMALL]) == 0
    provenance = json.loads((out / "metrics.json").read_text())["provenance"]
    assert provenance["checkpoint"] == str(cached) and provenance["checkpoint_sha256"] == sha256_file(cached)


def test_no_checkpoint_trains_the_default_model_once(tmp_path, monkeypatch, capsys):
    import models.train.cli

    monkeypatch.setattr(fa_cli, "OUTPUTS", no_figures(monkeypatch, fa.OUTPUTS))
    monkeypatch.setenv(default_model.CACHE_ENV, str(tmp_path / "cache"))
    calls = []

    def fake_train(argv):  # stands in for Lightning: writes a finished run folder like the trainer
        calls.append(argv)
        run = Path(argv[argv.index("--out") + 1]) / argv[argv.index("--name") + 1]
        run.mkdir(parents=True)
        save_model(make_model(seed=4), run / "model.pt")
        (run / "metrics.json").write_text("{}")
        return run

    monkeypatch.setattr(models.train.cli, "train", fake_train)
    assert fa_cli.main(["--out", str(tmp_path / "out"), *CLI_SMALL, "--quiet"]) == 0
    assert capsys.readouterr().err == ""  # --quiet: not even the line saying the model is being trained
    assert fa_cli.main(["--out", str(tmp_path / "out"), *CLI_SMALL]) == 0
    assert len(calls) == 1  # the second run reuses the cache
    assert calls[0][:5] == ["--preset", "tutorial", "--stop-at-perfect", "--seed", "0"]
    assert default_model.default_model_dir().joinpath("model.pt").is_file()


def test_the_analysis_never_imports_lightning(checkpoint, tmp_path):
    code = (
        "import sys\n"
        "from analyses.flip_alignment.__main__ import main\n"
        "assert 'matplotlib' not in sys.modules and 'jinja2' not in sys.modules  # lazy until used\n"
        f"assert main(['--checkpoint', {str(checkpoint)!r}, '--out', {str(tmp_path / 'o')!r}, "
        "'--num-sequences', '8', '--bootstrap-resamples', '5']) == 0\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr


# --- a trained model --------------------------------------------------------------------------------
def test_trained_fast_model_reverses_and_attends_to_the_flipped_key(trained_fast_run):
    model = load_model(trained_fast_run)
    result = fa.run(model, num_sequences=500, batch_size=250, bootstrap_resamples=200)
    assert result.accuracy.mean == 1.0
    (head,) = result.layers[0]
    assert head.argmax_hit_rate.mean >= 0.99
    assert head.flip_mass.mean > 0.5 and head.entropy.mean < math.log(16) / 2
