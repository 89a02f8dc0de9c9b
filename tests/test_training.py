"""Data, Lightning training, the `python -m models.train` CLI: outcomes, resumption, determinism, errors."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models import EncoderConfig, load_model
from models.encoder.data import make_reverse_data, make_split, make_splits, split_seed
from models.train.cli import main, train
from models.train.datamodule import ReverseDataModule, TokenBatches, slice_loader
from models.train.lightning_module import (
    ReverseTaskModule,
    RunCheckpoint,
    cosine_warmup_factor,
    log_spaced_steps,
    token_accuracy,
)
from tests.conftest import TINY_TRAIN

ROOT = Path(__file__).resolve().parents[1]

# A tiny run: d_model 16, 512 training sequences in 16 batches of 32, 3 epochs = 48 steps (the
# shared TINY_TRAIN of tests/conftest.py without its validation interval).
TINY = TINY_TRAIN[: TINY_TRAIN.index("--val-check-interval")]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_model(run).state_dict()


def _last_ckpt_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


# --- Lightning's import -------------------------------------------------------------------------------
def test_lightning_is_imported_through_one_module_that_leaves_the_version_check_as_it_was(monkeypatch):
    """models.train.lightning_import hides transformers from torchmetrics during Lightning's import only (the
    fresh process of test_zoo checks that training then never imports transformers)."""
    import importlib.metadata

    from lightning_utilities.core import imports

    from models.train import lightning_import

    assert lightning_import.pl is sys.modules["pytorch_lightning"]
    assert imports._version is importlib.metadata.version  # restored after the import
    hidden = lightning_import._transformers_hidden_from_torchmetrics
    with monkeypatch.context() as mp:  # as in a fresh process: neither imported yet
        for name in ("torchmetrics", "transformers"):
            mp.delitem(sys.modules, name, raising=False)
        with hidden():
            with pytest.raises(importlib.metadata.PackageNotFoundError):
                imports._version("transformers")
            assert imports._version("torch") == importlib.metadata.version("torch")
        assert imports._version is importlib.metadata.version
        mp.setitem(sys.modules, "torchmetrics", lightning_import)  # imported before: nothing is hidden
        with hidden():
            assert imports._version is importlib.metadata.version


# --- data ---------------------------------------------------------------------------------------------
def test_data_is_seeded_and_splits_differ():
    a = make_reverse_data(100, seq_len=16, num_categories=10, seed=3)
    assert a.shape == (100, 16) and a.dtype == torch.int64 and 0 <= a.min() and a.max() <= 9
    assert torch.equal(a, make_reverse_data(100, seq_len=16, num_categories=10, seed=3))
    assert not torch.equal(a, make_reverse_data(100, seq_len=16, num_categories=10, seed=4))
    splits = make_splits(seed=0, train_size=200, val_size=50, test_size=60)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [200, 50, 60]
    assert not torch.equal(splits.train[:50], splits.val) and not torch.equal(splits.val, splits.test[:50])
    assert torch.equal(make_split("val", 50, seed=0), splits.val)
    assert len({split_seed(0, "train"), split_seed(0, "val"), split_seed(1, "train")}) == 3
    assert make_splits().train.shape == (50_000, 16)  # the tutorial's defaults
    with pytest.raises(ValueError, match="num_sequences"):
        make_reverse_data(-1)
    with pytest.raises(ValueError, match="split"):
        make_split("dev")


def test_datamodule_batches_are_deterministic_slices_with_flipped_targets():
    dm = ReverseDataModule(
        train_size=100, val_size=30, test_size=30, batch_size=32, eval_batch_size=16, seed=5
    )
    assert dm.steps_per_epoch == 3  # drop_last, like the tutorial's loader
    loader = dm.train_dataloader()
    assert loader.batch_size is None and loader.num_workers == 0  # batches come whole, not collated
    tokens = dm.splits.train
    calls = []
    original = TokenBatches.__getitem__
    TokenBatches.__getitem__ = lambda self, idx: calls.append(idx) or original(self, idx)
    try:
        loader.sampler.set_epoch(0)
        epoch0 = list(loader)
    finally:
        TokenBatches.__getitem__ = original
    assert len(calls) == 3 and all(isinstance(c, torch.Tensor) and c.shape == (32,) for c in calls)
    seen = torch.cat(calls)
    assert len(set(seen.tolist())) == 96  # a permutation: no row twice within an epoch
    for idx, (x, y) in zip(calls, epoch0):
        assert torch.equal(x, tokens[idx]) and torch.equal(y, x.flip(-1))
    # Same seed and epoch -> same batches; another epoch -> another order; a fresh module agrees.
    other = ReverseDataModule(train_size=100, val_size=30, test_size=30, batch_size=32, seed=5)
    other_loader = other.train_dataloader()
    other_loader.sampler.set_epoch(0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(epoch0, other_loader))
    loader.sampler.set_epoch(1)
    assert not torch.equal(torch.cat([x for x, _ in loader]), torch.cat([x for x, _ in epoch0]))
    # Evaluation batches are views of the split tensor, in order, last one short.
    val = list(dm.val_dataloader())
    assert [len(x) for x, _ in val] == [16, 14]
    assert val[0][0].data_ptr() == dm.splits.val.data_ptr()
    assert torch.equal(torch.cat([y for _, y in val]), dm.splits.val.flip(-1))
    # resume_at skips the batches an interrupted epoch had consumed.
    sampler = slice_loader(tokens, 32, shuffle=True, seed=5, drop_last=True).sampler
    sampler.set_epoch(0)
    sampler.resume_at(0, 2)
    assert [b.tolist() for b in sampler] == [calls[2].tolist()]
    with pytest.raises(ValueError, match="batch_size"):
        ReverseDataModule(train_size=10, batch_size=32)


# --- module -------------------------------------------------------------------------------------------
def test_cosine_warmup_schedule_matches_the_tutorial_formula():
    warmup, max_iters = 10, 100
    assert cosine_warmup_factor(0, warmup, max_iters) == 0.0
    assert cosine_warmup_factor(5, warmup, max_iters) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 0.05)) * 0.5
    )
    assert cosine_warmup_factor(10, warmup, max_iters) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.1)))
    assert cosine_warmup_factor(50, warmup, max_iters) == pytest.approx(0.5)
    assert cosine_warmup_factor(100, warmup, max_iters) == pytest.approx(0.0, abs=1e-12)
    # The optimizer's lr follows it, stepped once per optimizer step from step 0.
    module = ReverseTaskModule(EncoderConfig(d_model=16), lr=1e-3, warmup=warmup, max_iters=max_iters)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert config["lr_scheduler"]["interval"] == "step"
    seen = {}
    for step in range(51):
        seen[step] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    assert seen[0] == 0.0
    assert seen[5] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 0.05)) * 0.5)
    assert seen[10] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 0.1)))
    assert seen[50] == pytest.approx(0.5e-3)
    hp = module.hparams
    assert hp.config["d_model"] == 16 and (hp.lr, hp.warmup, hp.max_iters) == (1e-3, 10, 100)


def test_token_accuracy_and_loss_on_a_hand_built_case():
    tokens = torch.tensor([[0, 1, 2]])
    logits = torch.full((1, 3, 3), -10.0)
    logits[0, 0, 2] = logits[0, 1, 1] = 10.0  # positions 0, 1 right (targets 2, 1), position 2 wrong
    logits[0, 2, 1] = 10.0
    assert float(token_accuracy(logits, tokens)) == pytest.approx(2 / 3)


def test_log_spaced_steps():
    assert log_spaced_steps(12, 2) == [0, 1, 3, 10]
    assert log_spaced_steps(100, 4) == [0, 1, 2, 3, 6, 10, 18, 32, 56, 100]
    with pytest.raises(ValueError):
        log_spaced_steps(10, 0)


# --- end to end ---------------------------------------------------------------------------------------
def test_fast_preset_reaches_perfect_validation_accuracy(trained_fast_run):
    metrics = json.loads((trained_fast_run / "metrics.json").read_text())
    config = json.loads((trained_fast_run / "config.json").read_text())
    assert (
        config["preset"] == "fast"
        and config["encoder"]["d_model"] == 32
        and config["encoder"]["n_heads"] == 1
    )
    assert metrics["val_acc"] == 1.0 and metrics["stopped_at_perfect"]
    assert metrics["steps"] == metrics["first_perfect_step"] < metrics["max_iters"]
    # Independently: the saved model reverses the validation split perfectly.
    model = load_model(trained_fast_run)
    val = make_split("val", 1000, seed=0)
    with torch.no_grad():
        assert float(token_accuracy(model(val), val)) == 1.0
    for name in ("model.pt", "metrics.json", "config.json", "versions.json", "checkpoints/last.ckpt"):
        assert (trained_fast_run / name).is_file(), name
    assert list((trained_fast_run / "logs").glob("version_*/metrics.csv"))
    meta = torch.load(trained_fast_run / "model.pt", weights_only=True)["metadata"]
    assert meta["seed"] == 0 and meta["preset"] == "fast" and "torch" in meta["versions"]
    assert meta["metrics"]["val_acc"] == 1.0
    # The best checkpoint is the first 100% one, where the run stopped: model.pt records that step.
    assert meta["step"] == metrics["steps"] == metrics["first_perfect_step"]
    # The Lightning checkpoint loads through the same door and holds the same weights.
    best = load_model(trained_fast_run / metrics["best_checkpoint"]).state_dict()
    assert all(torch.equal(best[k], v) for k, v in model.state_dict().items())


def test_killed_run_resumes_where_it_stopped(tmp_path, tiny_uninterrupted_run):
    from models.train.lightning_import import pl

    class Kill(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 30:
                raise RuntimeError("simulated kill")

    args = [*TINY, "--val-check-interval", "12", "--out", str(tmp_path)]
    reference = tiny_uninterrupted_run  # these arguments, trained without a kill
    with pytest.raises(RuntimeError, match="simulated kill"):
        train([*args, "--name", "killed"], callbacks=[Kill()])
    killed = tmp_path / "killed"
    assert (killed / "checkpoints" / "last.ckpt").is_file()
    assert not (killed / "metrics.json").exists() and not (killed / "model.pt").exists()
    resumed_step = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert resumed_step == 24

    assert train([*args, "--name", "killed"]) == killed
    metrics = json.loads((killed / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == resumed_step and metrics["steps"] == 48
    second_session = (killed / "logs" / "version_1" / "metrics.csv").read_text().splitlines()[1:]
    assert min(int(line.split(",")[1]) for line in second_session) > 24  # continued, not from step 0
    # Mid-epoch resumption is exact: the same batches, so the same final weights as an unbroken run.
    a, b = _last_ckpt_weights(reference), _last_ckpt_weights(killed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_killed_after_its_last_step_finishes_on_rerun(tmp_path):
    from models.train.lightning_import import pl

    class Kill(pl.Callback):  # between the last step (last.ckpt written) and metrics.json
        def on_train_end(self, trainer, *args):
            raise RuntimeError("simulated kill")

    args = [*TINY, "--max-steps", "6", "--val-check-interval", "3", "--save-every-log-steps", "2"]
    args += ["--out", str(tmp_path)]
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(args, callbacks=[Kill()])
    run = tmp_path / "tutorial-seed0"
    resumed_step = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert resumed_step == 6 and not (run / "metrics.json").exists()
    assert not (run / "snapshots" / "step_000006.pt").exists()  # killed before the final snapshot
    # Lightning restores a loop with no step left and skips on_train_start and on_train_end.
    train(args)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == resumed_step == metrics["steps"]
    final = run / "snapshots" / "step_000006.pt"
    assert torch.load(final, weights_only=True)["metadata"]["final"] is True
    last = load_model(run / "checkpoints" / "last.ckpt").state_dict()
    assert all(torch.equal(last[k], v) for k, v in load_model(final).state_dict().items())


def test_a_step_capped_run_continues_with_a_larger_budget(tmp_path, capsys, tiny_uninterrupted_run):
    args = [*TINY, "--val-check-interval", "12", "--out", str(tmp_path)]
    reference = tiny_uninterrupted_run  # these arguments, trained without a cap
    capped = train([*args, "--name", "capped", "--max-steps", "20"])
    first = json.loads((capped / "metrics.json").read_text())
    assert (first["steps"], first["stop_reason"]) == (20, "max_steps")
    assert train([*args, "--name", "capped", "--max-steps", "20"]) == capped  # same budget: done
    assert "already finished" in capsys.readouterr().err
    train([*args, "--name", "capped"])  # the full budget: continues from step 20
    second = json.loads((capped / "metrics.json").read_text())
    assert (second["resumed_from_step"], second["steps"], second["stop_reason"]) == (20, 48, "epochs")
    a, b = _last_ckpt_weights(reference), _last_ckpt_weights(capped)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_moved_run_folder_resumes_from_its_own_checkpoints(tmp_path, tiny_uninterrupted_run):
    args = [*TINY, "--val-check-interval", "12", "--name", "run"]
    reference = tiny_uninterrupted_run  # these arguments, trained where it stays
    old = train([*args, "--out", str(tmp_path / "zoo0"), "--max-steps", "20"])
    shutil.move(tmp_path / "zoo0", tmp_path / "zoo1")
    assert not old.exists()  # nothing can be read from the old location
    moved = tmp_path / "zoo1" / "run"
    # No validation between steps 20 and 23: the best model can only come from the restored state.
    train([*args, "--out", str(tmp_path / "zoo1"), "--max-steps", "23"])
    first = json.loads((moved / "metrics.json").read_text())
    assert (first["resumed_from_step"], first["steps"]) == (20, 23)
    assert first["best_checkpoint"].startswith("checkpoints/best-step=12-")
    assert (moved / first["best_checkpoint"]).is_file()
    meta = torch.load(moved / "model.pt", weights_only=True)["metadata"]
    assert meta["source_checkpoint"] == first["best_checkpoint"] and meta["step"] == 12
    # The full budget: the same best checkpoint and the same files as a run that never moved (the
    # restored top-k scores decide the best, and a superseded best file is removed from the new folder).
    train([*args, "--out", str(tmp_path / "zoo1")])
    second, expected = (json.loads((r / "metrics.json").read_text()) for r in (moved, reference))
    assert second["best_checkpoint"] == expected["best_checkpoint"]
    names = lambda r: sorted(p.name for p in (r / "checkpoints").iterdir())
    assert names(moved) == names(reference)
    a, b = _weights(reference), _weights(moved)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_run_checkpoint_maps_recorded_paths_onto_its_own_folder(tmp_path):
    old, new = tmp_path / "old" / "checkpoints", tmp_path / "new" / "checkpoints"
    new.mkdir(parents=True)
    for name in ("a.ckpt", "b.ckpt"):
        (new / name).write_bytes(b"")
    here = lambda name: os.path.join(os.path.realpath(new), name)
    callback = RunCheckpoint(dirpath=new, monitor="val_acc", mode="max", save_top_k=3)
    state = {
        "monitor": "val_acc",
        "best_model_score": torch.tensor(0.75),
        "best_model_path": str(old / "c.ckpt"),  # c.ckpt did not come along
        "current_score": torch.tensor(0.5),
        "dirpath": str(old),
        "best_k_models": {
            str(old / n): torch.tensor(v) for n, v in (("a.ckpt", 0.25), ("b.ckpt", 0.5), ("c.ckpt", 0.75))
        },
        "kth_best_model_path": str(old / "a.ckpt"),
        "kth_value": torch.tensor(0.25),
        "last_model_path": str(old / "last.ckpt"),
    }
    callback.load_state_dict(state)
    assert callback.best_k_models == {here("a.ckpt"): 0.25, here("b.ckpt"): 0.5}
    assert (callback.best_model_path, float(callback.best_model_score)) == (here("b.ckpt"), 0.5)
    assert (callback.kth_best_model_path, float(callback.kth_value)) == (here("a.ckpt"), 0.25)
    assert callback.last_model_path == here("last.ckpt")
    # Nothing left in the new folder: a fresh start, so the next validation becomes the best.
    empty = RunCheckpoint(dirpath=tmp_path / "empty", monitor="val_acc", mode="max")
    empty.load_state_dict(state)
    assert (empty.best_k_models, empty.best_model_path, empty.best_model_score) == ({}, "", None)
    assert float(empty.kth_value) == -math.inf
    # The same folder: Lightning's own restore, paths untouched.
    same = RunCheckpoint(dirpath=old, monitor="val_acc", mode="max", save_top_k=3)
    same.load_state_dict({**state, "dirpath": same.dirpath})
    assert same.best_model_path == str(old / "c.ckpt") and len(same.best_k_models) == 3
    # Checkpoints written by Lightning's ModelCheckpoint keep restoring into this subclass.
    from pytorch_lightning.callbacks import ModelCheckpoint

    assert callback.state_key == ModelCheckpoint(dirpath=new, monitor="val_acc", mode="max").state_key


def test_same_seed_same_weights_and_finished_runs_are_kept(tmp_path, capsys):
    args = [*TINY, "--max-steps", "6", "--val-check-interval", "3", "--out", str(tmp_path)]
    first = train([*args, "--name", "a"])
    second = train([*args, "--name", "b"])
    other = train([*args, "--name", "c", "--seed", "1"])
    wa, wb, wc = _weights(first), _weights(second), _weights(other)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    # Finished: the same command returns at once and leaves the files alone; --overwrite retrains.
    stamp = (first / "model.pt").stat().st_mtime_ns
    assert train([*args, "--name", "a"]) == first
    assert "already finished" in capsys.readouterr().err
    assert (first / "model.pt").stat().st_mtime_ns == stamp
    train([*args, "--name", "a", "--overwrite"])
    assert (first / "model.pt").stat().st_mtime_ns != stamp
    # The same folder with another recipe is refused rather than silently mixed.
    with pytest.raises(ValueError, match="different lr"):
        train([*args, "--name", "a", "--lr", "0.002"])


def test_snapshots_at_log_spaced_steps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # and a relative --out, as in the default `runs/`
    run = train(
        [
            *TINY,
            "--max-steps",
            "12",
            "--val-check-interval",
            "6",
            "--save-every-log-steps",
            "2",
            "--out",
            "runs",
        ]
    )
    assert run == Path("runs") / "tutorial-seed0"
    best = json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    assert best.startswith("checkpoints/best-step=") and (run / best).is_file()
    names = sorted(p.name for p in (run / "snapshots").glob("step_*.pt"))
    # Log-spaced steps 0, 1, 3, 10, then the step training ended at.
    assert names == ["step_000000.pt", "step_000001.pt", "step_000003.pt", "step_000010.pt", "step_000012.pt"]
    first, tenth = load_model(run / "snapshots" / names[0]), load_model(run / "snapshots" / names[3])
    assert not torch.equal(first.embed.proj.weight, tenth.embed.proj.weight)
    meta = [torch.load(run / "snapshots" / n, weights_only=True)["metadata"] for n in names]
    assert [m["step"] for m in meta] == [0, 1, 3, 10, 12] and [m.get("final") for m in meta[-2:]] == [
        None,
        True,
    ]
    last = load_model(run / "checkpoints" / "last.ckpt").state_dict()
    assert all(
        torch.equal(last[k], v) for k, v in load_model(run / "snapshots" / names[-1]).state_dict().items()
    )
    # model.pt holds the best checkpoint's weights and records its step.
    step = torch.load(run / best, weights_only=True)["global_step"]
    assert step in (6, 12) and torch.load(run / "model.pt", weights_only=True)["metadata"]["step"] == step


# --- CLI ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--d-model", "30", "--n-heads", "4"], "--d-model 30: not divisible by --n-heads 4"),
        (["--seq-len", "0"], "--seq-len 0: must be a positive integer"),
        (["--num-categories", "-1"], "--num-categories -1: must be a positive integer"),
        (["--dropout", "1.5"], "--dropout 1.5: must be in [0, 1)"),
        (["--seq-len", "6000"], "--seq-len 6000: longer than the sinusoidal encoding's 5000 positions"),
        (["--train-size", "-5"], "--train-size"),
        (["--preset", "nope"], "unknown preset"),
        (["--lr", "0"], "--lr"),
        (["--batch-size", "64", "--train-size", "10"], "--batch-size"),
        (["--val-check-interval", "1.5"], "--val-check-interval"),
        (["--max-time", "soon"], "--max-time"),
        (["--accelerator", "nonsense"], "--accelerator"),
        (["--positional-embedding", "rotary"], "positional-embedding"),
        (["--epochs", "two"], "--epochs"),
        (["--name", "../escape"], "--name"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, argv, needle):
    assert main([*argv, "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "runs").exists()


def test_summary_percentages_round_down_so_100_means_every_token():
    from models.train.cli import percent

    assert percent(1.0) == "100.00%" and percent(0.9999875) == "99.99%"  # 2 wrong tokens of 160,000
    assert percent(0.57) == "57.00%" and percent(0.0) == "0.00%" and percent(0.123456) == "12.34%"


def test_cli_unwritable_out_and_help(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["--out", str(blocker / "runs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out") and err.count("\n") == 1
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--preset", "--num-categories", "--seq-len", "--stop-at-perfect", "--save-every-log-steps"):
        assert flag in out


# That importing models.encoder.data and models.train.cli does not import Lightning is checked in the one
# fresh process of
# tests/test_zoo.py::test_a_fresh_process_imports_lightning_only_to_train_and_ray_only_on_ray,
# which also checks where Ray is imported.


def test_cli_subprocess_error_has_no_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "models.train", "--d-model", "30", "--n-heads", "4", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 2
    assert (
        done.stderr.startswith("error: ") and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    )
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seed", str(2**33)], "error: --seed: must be at most 4294967295"),
        (["--out", ""], "error: --out: empty path"),
    ],
)
def test_more_bad_training_arguments(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("raised", [KeyboardInterrupt(), SystemExit(1)])
@pytest.mark.parametrize(
    "state, flags, advice",
    [
        ("checkpoint", [], "rerun the same command to continue from the last checkpoint"),
        (
            "checkpoint",
            ["--overwrite"],
            "rerun without --overwrite to continue from the last checkpoint (with it, the run starts over)",
        ),
        ("none", [], "rerun the same command to start again (no checkpoint was written yet)"),
    ],
)
def test_ctrl_c_during_training_says_how_to_continue(
    raised, state, flags, advice, tmp_path, monkeypatch, capsys
):
    """Lightning answers a Ctrl-C during fit with a graceful shutdown and sys.exit(1): the user gets a
    line saying what rerunning will do, and exit code 130, not a silent 1. With --overwrite the same
    command would start over, so it is not what the line suggests."""
    import models.train.cli as train_module

    monkeypatch.chdir(tmp_path)
    if state == "checkpoint":
        (tmp_path / "runs" / "fast-seed0" / "checkpoints").mkdir(parents=True)
        (tmp_path / "runs" / "fast-seed0" / "checkpoints" / "last.ckpt").write_bytes(b"")

    def interrupted(argv):
        raise raised

    monkeypatch.setattr(train_module, "train", interrupted)
    assert train_module.main(["--preset", "fast", *flags]) == 130
    assert capsys.readouterr().err == f"error: interrupted: {advice}\n"
