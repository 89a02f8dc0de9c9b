"""Issue 27, without Ray: the zoo's flags after ``--`` in every spelling, names read from files or
returned by workers (one path component, checked by ``machine.names`` wherever they become paths),
resume re-verifying what it skips, and one line instead of a traceback for hostile files and paths.
The Ray half (kill -9, SIGTERM, addresses that are not Ray) is in test_zoo_ray_reliability.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from analyses.frame.cli import UserError
from machine import cluster
from machine.names import output_path_problem, path_component, relative_file, unique_components
from models.zoo import cli as zoo

TINY = "--train-size 640 --val-size 64 --test-size 64 --max-steps 20".split()
ONE_RUN = dict(seeds=1, heads=(1,), layers=(1,), positional_embeddings=("sinusoidal",), d_models=(16,))
NAME = "fast_sinusoidal_L1_H1_D16_seed0"
SEQUENTIAL = zoo.ZooEngine(engine="sequential", ensemble=False)
HOSTILE = ["/abs/path", "../../x", "..", ".", "", "a/b", "a\0b", " x", 5, None, "x" * 256, "\\..\\x"]


# --- 1. reserved flags after -- ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra, flag",
    [
        (["--see", "7"], "--seed"),
        (["--ou", "/elsewhere"], "--out"),
        (["--n-h", "2"], "--n-heads"),
        (["--pres", "tutorial"], "--preset"),
        (["--nam", "x"], "--name"),
        (["--seed=7"], "--seed"),
        (["--n-ctx", "8"], "--seq-len"),
        (["--d-voc=5"], "--num-categories"),
        (["--max-steps", "20", "--positional-embed", "none"], "--positional-embedding"),
    ],
)
def test_a_grid_flag_after_the_double_dash_is_refused_in_every_spelling_train_accepts(
    tmp_path, capsys, extra, flag
):
    out = tmp_path / "zoo"
    argv = ["--out", str(out), "--seeds", "2", "--heads", "1", "--layers", "1", "--no-control", "--", *extra]
    assert zoo.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"the zoo sets {flag} itself" in err[0] and err[0].startswith("error: -- --")
    assert zoo.main([*argv[: -len(extra) - 1], "--list", "--", *extra]) == 2  # --list refuses it too
    assert not out.exists()
    with pytest.raises(ValueError, match="the zoo sets"):
        zoo.run_zoo(out, zoo.ZooSpec(**ONE_RUN, train_args=extra), engine=SEQUENTIAL)


def test_other_flags_and_their_prefixes_still_pass_and_an_ambiguous_prefix_is_named():
    from models.zoo.plan import check_train_args

    check_train_args(["--train-si", "640", "--max-steps", "20", "--lr=0.01", "--no-progress-bar"])
    with pytest.raises(ValueError, match="ambiguous option: --n"):
        check_train_args(["--n", "2"])


# --- 2. names from files and workers ------------------------------------------------------------
@pytest.mark.parametrize("name", HOSTILE)
def test_a_name_that_is_not_one_path_component_is_refused(name):
    with pytest.raises(ValueError, match=r"^zoo.json: .* is not a plain folder or file name \("):
        path_component(name, "zoo.json")
    if name != "a/b":  # a relative file path may have several components
        with pytest.raises(ValueError):
            relative_file(f"a/{name}" if isinstance(name, str) else name, "worker")


def test_plain_names_and_relative_files_pass():
    assert path_component("fast_sinusoidal_L1_H1_seed0", "x") == "fast_sinusoidal_L1_H1_seed0"
    assert path_component("..x", "x") == "..x" and path_component("é", "x") == "é"
    assert relative_file("checkpoints/last.ckpt", "x") == "checkpoints/last.ckpt"
    for bad in ("/etc/passwd", "a/../../b", "a//b", "a/", "./a"):
        with pytest.raises(ValueError, match="not a relative file path inside the folder"):
            relative_file(bad, "x")
    with pytest.raises(ValueError, match="'a' is listed twice"):
        unique_components(["a", "b", "a"], "zoo.json")


def _write_manifest(zoo_dir: Path, names: list) -> None:
    zoo_dir.mkdir(parents=True, exist_ok=True)
    runs = [{"name": n, "role": "grid"} for n in names]
    (zoo_dir / "zoo.json").write_text(json.dumps({"schema_version": 2, "runs": runs}))


@pytest.mark.parametrize("bad", ["/abs/path", "../../x", "..", "", "a/b", 7])
def test_zoo_summary_refuses_a_run_name_that_leaves_the_zoo(tmp_path, capsys, one_run_zoo, bad):
    from analyses.zoo_summary import __main__ as zs_cli
    from analyses.zoo_summary.runs import discover

    # a real finished run outside the zoo, which the hostile name points at
    zoo_dir = tmp_path / "a" / "b" / "zoo"
    outside = tmp_path / "a" / "x"
    (outside).mkdir(parents=True)
    for f in (one_run_zoo / NAME).iterdir():
        if f.is_file():
            (outside / f.name).write_bytes(f.read_bytes())
    _write_manifest(zoo_dir, [bad if bad != "/abs/path" else str(outside)])
    with pytest.raises(UserError, match=r"zoo.json: .* is not a plain folder or file name"):
        discover(zoo_dir)
    assert zs_cli.main([str(zoo_dir), "--out", str(tmp_path / "summary"), "--engine", "sequential"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a plain folder or file name" in err[0]
    assert not (tmp_path / "summary").exists()


def test_zoo_summary_refuses_a_manifest_that_lists_a_run_twice(tmp_path, one_run_zoo):
    from analyses.zoo_summary.runs import discover

    zoo_dir = tmp_path / "zoo"
    zoo_dir.mkdir()
    (zoo_dir / NAME).symlink_to(one_run_zoo / NAME)
    _write_manifest(zoo_dir, [NAME])
    assert [p.name for p, _ in discover(zoo_dir)[0]] == [NAME]
    _write_manifest(zoo_dir, [NAME, NAME])  # n per architecture would double: narrower intervals
    with pytest.raises(UserError, match=f"'{NAME}' is listed twice"):
        discover(zoo_dir)


def test_figure_names_from_captions_json_stay_in_the_figures_folder(tmp_path):
    from analyses.frame.html import figure_list, read_captions

    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG\r\n\x1a\nsecret")
    figures = tmp_path / "report" / "analysis" / "figures"
    figures.mkdir(parents=True)
    (figures / "fine.png").write_bytes(b"\x89PNG\r\n\x1a\nfine")
    (figures / "captions.json").write_text(json.dumps({"fine": "ok", "../../../secret": "stolen"}))
    with pytest.raises(ValueError, match=r"captions.json: figure name: '../../../secret' is not a plain"):
        read_captions(figures)
    with pytest.raises(ValueError, match="is not a plain folder or file name"):
        figure_list(figures, {str(tmp_path / "secret"): "absolute"})
    (figures / "link.png").symlink_to(secret)  # a reused report folder with a planted link
    with pytest.raises(ValueError, match="is not a regular file"):
        figure_list(figures, {"link": "linked"})
    assert [f["name"] for f in figure_list(figures, {"fine": "ok"})] == ["fine"]


def test_the_driver_installs_only_the_run_folders_it_asked_for(tmp_path, monkeypatch):
    """A worker's answer (any node of a cluster) naming other folders or files outside its run
    folder fails that task; nothing is written outside the zoo folder."""
    from models.zoo import engine
    from models.zoo.plan import ZooTask

    spec = zoo.ZooSpec(**ONE_RUN, control=False, train_args=TINY)
    out = tmp_path / "zoo"
    out.mkdir()
    run = spec.runs()[0]
    task = ZooTask([run], [spec.train_argv(run, out)], ensemble=False)
    good = {"config.json": b"{}", "checkpoints/last.ckpt": b"x"}
    answers = [
        {"runs": {"../escaped": {"files": good, "status": "trained"}}},
        {"runs": {"/tmp/abs": {"files": good, "status": "trained"}}},
        {"runs": {"other_run": {"files": good, "status": "trained"}}},
        {"runs": {NAME: {"files": {"../../escaped.txt": b"x"}, "status": "trained"}}},
        {"runs": {NAME: {"files": {"/tmp/abs.txt": b"x"}, "status": "trained"}}},
        {"runs": {NAME: {"files": {"ok.txt": "not bytes"}, "status": "trained"}}},
        ["not", "a", "dict"],
    ]
    for answer in answers:

        def fake_run_tasks(fn, payloads, labels, answer=answer, **kwargs):
            yield cluster.TaskOutcome(0, labels[0], value=answer, info={"hostname": "evil"})

        monkeypatch.setattr(cluster, "run_tasks", fake_run_tasks)
        seen: list = []
        engine._run_on_ray(
            out, SEQUENTIAL, [task], lambda t, s, i, error, seen=seen: seen.append(error), slots=1
        )
        assert len(seen) == 1 and seen[0] and seen[0].startswith("ValueError: task "), (answer, seen)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["zoo"] and not any(out.iterdir())


def test_install_folder_refuses_names_and_files_outside_its_folder(tmp_path):
    for dest in (tmp_path / "..", tmp_path / "a" / ".."):
        with pytest.raises(ValueError, match="is not a plain folder or file name"):
            cluster.install_folder(dest, files={"x": b"1"})
    with pytest.raises(ValueError, match="not a relative file path inside the folder"):
        cluster.install_folder(tmp_path / "run", files={"a/../../b": b"1"})
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --- 6. resume re-verifies what it skips ------------------------------------------------------------
@pytest.fixture(scope="module")
def one_run_zoo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one_run") / "zoo"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REVERSE_ENCODER_INTERP_CACHE", str(out.parent / "cache"))
        zoo.run_zoo(out, zoo.ZooSpec(**ONE_RUN, control=False, train_args=TINY), engine=SEQUENTIAL)
    return out


def _flip_a_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    ["model.pt: one byte", "model.pt: one byte, no record", "metrics.json truncated", "metrics.json []"],
)
def test_a_corrupt_finished_run_is_listed_corrupt_and_trained_again(
    tmp_path, capsys, monkeypatch, one_run_zoo, damage
):
    import torch

    monkeypatch.setenv("REVERSE_ENCODER_INTERP_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "zoo"
    import shutil

    shutil.copytree(one_run_zoo, out)
    run = out / NAME
    if damage.startswith("model.pt"):
        _flip_a_byte(run / "model.pt", len((run / "model.pt").read_bytes()) // 2)
        if "no record" in damage:
            (run / "SHA256SUMS").unlink()  # an older run: the zip's CRC-32s catch it
    elif damage == "metrics.json truncated":
        text = (run / "metrics.json").read_text()
        (run / "metrics.json").write_text(text[: len(text) // 2])
    else:
        (run / "metrics.json").write_text("[]")
    from models.zoo.plan import run_state

    assert run_state(run)[0] == "corrupt"
    argv = ["--out", str(out), "--engine", "sequential", "--no-ensemble", "--seeds", "1", "--heads", "1"]
    argv += ["--layers", "1", "--positional-embeddings", "sinusoidal", "--d-model", "16", "--no-control"]
    argv += ["--", *TINY]
    assert zoo.main([*argv[: -len(TINY) - 1], "--list", "--", *TINY]) == 0
    listed = capsys.readouterr().out
    assert f"{NAME:<48} corrupt" in listed and "1 to train" in listed
    assert zoo.main(argv) == 0
    err = capsys.readouterr().err
    assert f"{NAME}: " in err and "training it again" in err
    record = json.loads((out / "zoo.json").read_text())["runs"][0]
    assert record["before"] == "corrupt" and record["status"] == "trained"
    assert run_state(run)[0] == "finished"
    a = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(one_run_zoo / NAME / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in b)  # same seed, same weights


# --- 7, 8: one line instead of a traceback ---------------------------------------------------------
@pytest.mark.parametrize(
    "file, content, message",
    [
        ("metrics.json", "[]", "metrics.json: holds a JSON list, not the object a run writes"),
        ("config.json", '{"seed": 0, "enc', "config.json: unreadable or truncated"),
    ],
)
def test_zoo_summary_names_a_broken_run_file_in_one_line(
    tmp_path, capsys, one_run_zoo, file, content, message
):
    import shutil

    from analyses.zoo_summary import __main__ as zs_cli

    out = tmp_path / "zoo"
    shutil.copytree(one_run_zoo, out)
    (out / NAME / file).write_text(content)
    code = zs_cli.main(
        [str(out), "--out", str(tmp_path / "s"), "--engine", "sequential", "--num-sequences", "64"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0] and str(out / NAME) in err[0], err


def _report_folder(folder: Path, summary: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "report.html").write_text("<html></html>")
    (folder / "summary.json").write_text(json.dumps({"kind": "report_summary", **summary}))
    return folder


@pytest.mark.parametrize(
    "summary",
    [
        {"timestamp": 1733550000},
        {"timestamp": ["2026"], "name": 5},
        {"metrics": {"accuracy": {"estimate": "high"}, "flip_mass": "x"}},
        {"metrics": {"accuracy": {"estimate": {"mean": "0.9", "ci_low": 0.8, "ci_high": 1}}}},
        {"metrics": {"qk_verdict": {"label": ["a"], "spearman_rho": "0.9"}}, "num_sequences": "many"},
        {"metrics": {"tolerance_verdict": {"label": 3, "margin": [1]}, "top_head": {"delta_accuracy": 1}}},
    ],
)
def test_the_index_shows_a_hand_edited_summary_as_missing_numbers(tmp_path, capsys, summary):
    from reports import build

    run = _report_folder(tmp_path / "run", summary)
    good = _report_folder(
        tmp_path / "good",
        {"timestamp": "2026-12-07T04:00:00+00:00", "metrics": {"accuracy": {"estimate": {"mean": 0.5}}}},
    )
    assert build.main(["--index", str(run), str(good), "--out", str(tmp_path / "index")]) == 0, (
        capsys.readouterr().err
    )
    page = (tmp_path / "index" / "index.html").read_text()
    assert "2026-12-07" in page and "0.500" in page


def test_a_checkpoint_at_a_symlink_loop_is_one_line(tmp_path, capsys):
    from analyses.flip_alignment import __main__ as flip

    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(loop)
    code = flip.main(["--checkpoint", str(loop), "--out", str(tmp_path / "out"), "--num-sequences", "16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "symlink loop" in err[0] and str(loop) in err[0], err


@pytest.mark.parametrize("kind", ["dangling symlink", "symlink loop", "not UTF-8", "dangling parent"])
def test_an_unusable_out_fails_before_the_model_is_read(tmp_path, capsys, kind):
    """--checkpoint names a file that does not exist: the error is about --out, so --out was checked
    first, before any computation."""
    from analyses.flip_alignment import __main__ as flip

    out: str | Path = tmp_path / "out"
    if kind == "dangling symlink":
        out.symlink_to(tmp_path / "nowhere")
    elif kind == "symlink loop":
        out.symlink_to(out)
    elif kind == "dangling parent":
        (tmp_path / "parent").symlink_to(tmp_path / "nowhere")
        out = tmp_path / "parent" / "out"
    else:
        out = os.fsdecode(bytes(tmp_path) + b"/out\xff")
    missing = tmp_path / "missing.pt"
    code = flip.main(["--checkpoint", str(missing), "--out", str(out), "--num-sequences", "16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --out "), err
    assert ("UTF-8" if kind == "not UTF-8" else "symlink") in err[0]
    assert output_path_problem(out) is not None
    assert sorted(p.name for p in tmp_path.iterdir() if not p.is_symlink()) == []


def test_train_and_zoo_refuse_an_unusable_out_before_training(tmp_path):
    from models.train.args import check_out

    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    for out in (tmp_path / "link", Path(os.fsdecode(bytes(tmp_path) + b"/x\xff"))):
        with pytest.raises(ValueError, match=r"^--out "):
            check_out(out)
        with pytest.raises(ValueError, match=r"^--out "):
            zoo.run_zoo(out, zoo.ZooSpec(**ONE_RUN, train_args=TINY), engine=SEQUENTIAL)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", " padded"])
def test_train_refuses_a_name_that_is_not_a_folder_name(tmp_path, capsys, name):
    from models.train.cli import main

    code = main(["--preset", "fast", "--out", str(tmp_path), "--name", name, *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: --name: ") and "plain folder" in err[-1]
    assert not any(tmp_path.iterdir())


def test_the_next_zoo_removes_task_folders_of_dead_tasks_only(tmp_path, monkeypatch, one_run_zoo):
    """A worker killed mid-task cannot remove its zoo-task-* folder: the next zoo (and the next task on
    that node) removes it, by owner (machine.staging), never a live process' folder."""
    import shutil
    import tempfile

    from machine.staging import _host, staging_prefix

    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("REVERSE_ENCODER_INTERP_CACHE", str(tmp_path / "cache"))
    dead = subprocess_pid_that_exited()
    (tmp / f"zoo-task-{_host()}-{dead}-12345-abcd1234").mkdir()  # its creator is gone
    live = Path(tempfile.mkdtemp(prefix=staging_prefix("zoo-task-")))  # this process: alive
    foreign = tmp / "zoo-task-unrelated"  # not named by machine.staging: never touched
    foreign.mkdir()
    out = tmp_path / "zoo"
    shutil.copytree(one_run_zoo, out)
    zoo.run_zoo(out, zoo.ZooSpec(**ONE_RUN, control=False, train_args=TINY), engine=SEQUENTIAL)
    assert sorted(p.name for p in tmp.iterdir()) == sorted([live.name, foreign.name])


def subprocess_pid_that_exited() -> int:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)
