"""Data, Lightning training, the `python -m models.train` CLI: outcomes, resumption, determinism, errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models import EncoderConfig, load_model
from models.data import make_reverse_data, make_split, make_splits, split_seed
from models.datamodule import ReverseDataModule, TokenBatches, slice_loader
from models.lightning_module import (
    ReverseTaskModule,
    cosine_warmup_factor,
    log_spaced_steps,
    token_accuracy,
)
from models.train import main, train

ROOT = Path(__file__).resolve().parents[1]

# A tiny run: d_model 16, 512 training sequences in 16 batches of 32, 3 epochs = 48 steps.
TINY = [
    "--d-model", "16", "--train-size", "512", "--batch-size", "32", "--epochs", "3",
    "--val-size", "64", "--test-size", "64", "--lr", "1e-2", "--warmup", "4", "--no-progress-bar",
]  # fmt: skip


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_model(run).state_dict()


def _last_ckpt_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


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
    # The Lightning checkpoint loads through the same door and holds the same weights.
    best = load_model(trained_fast_run / metrics["best_checkpoint"]).state_dict()
    assert all(torch.equal(best[k], v) for k, v in model.state_dict().items())


def test_killed_run_resumes_where_it_stopped(tmp_path):
    import pytorch_lightning as pl

    class Kill(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 30:
                raise RuntimeError("simulated kill")

    args = [*TINY, "--val-check-interval", "12", "--out", str(tmp_path)]
    reference = train([*args, "--name", "uninterrupted"])
    with pytest.raises(RuntimeError, match="simulated kill"):
        train([*args, "--name", "killed"], callbacks=[Kill()])
    killed = tmp_path / "killed"
    assert (killed / "checkpoints" / "last.ckpt").is_file()
    assert not (killed / "metrics.json").exists() and not (killed / "model.pt").exists()
    assert torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 24

    assert train([*args, "--name", "killed"]) == killed
    metrics = json.loads((killed / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == 24 and metrics["steps"] == 48
    second_session = (killed / "logs" / "version_1" / "metrics.csv").read_text().splitlines()[1:]
    assert min(int(line.split(",")[1]) for line in second_session) > 24  # continued, not from step 0
    # Mid-epoch resumption is exact: the same batches, so the same final weights as an unbroken run.
    a, b = _last_ckpt_weights(reference), _last_ckpt_weights(killed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_step_capped_run_continues_with_a_larger_budget(tmp_path, capsys):
    args = [*TINY, "--val-check-interval", "12", "--out", str(tmp_path)]
    reference = train([*args, "--name", "uninterrupted"])
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
    names = sorted(p.name for p in (run / "snapshots").iterdir())
    assert names == ["step_000000.pt", "step_000001.pt", "step_000003.pt", "step_000010.pt"]
    first, tenth = load_model(run / "snapshots" / names[0]), load_model(run / "snapshots" / names[-1])
    assert not torch.equal(first.embed.proj.weight, tenth.embed.proj.weight)
    meta = torch.load(run / "snapshots" / names[-1], weights_only=True)["metadata"]
    assert meta["step"] == 10


# --- CLI ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--d-model", "30", "--n-heads", "4"], "not divisible"),
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


def test_importing_data_and_train_does_not_import_lightning():
    code = (
        "import sys, models.data, models.train\n"
        "assert models.train.main(['--preset', 'nope']) == 2\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pytorch_lightning', 'lightning')]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr


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
