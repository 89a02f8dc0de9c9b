"""Train the reverse-task encoder: ``python -m models.train [--preset tutorial|fast] [flags]``.

Writes one run folder ``OUT/NAME`` (NAME defaults to ``<preset>-seed<seed>``)::

    config.json     the resolved arguments (encoder config + training recipe), written first
    versions.json   python / torch / lightning / transformer-lens versions
    checkpoints/    Lightning checkpoints: the best on val_acc, and last.ckpt after every validation
    logs/           CSV logs (and TensorBoard logs when tensorboard is installed)
    snapshots/      with --save-every-log-steps K: the encoder at log-spaced steps and at the step
                    training ended (metadata "final": True), step_XXXXXX.pt
    model.pt        the best checkpoint's encoder in this project's format (models.save_model);
                    its metadata records that checkpoint's "step"
    metrics.json    final train/val/test loss and accuracy, steps, seconds; written last = finished
    SHA256SUMS      (here, in checkpoints/ and in snapshots/) the sha256 of each model file, recorded
                    when it is written atomically (models.storage.integrity) and checked by models.load_model

A folder with ``checkpoints/last.ckpt`` and no ``metrics.json`` is an interrupted run: the same
command continues it (from the newest intact checkpoint when ``last.ckpt`` is corrupt, see
:mod:`models.train.atomic_checkpoint`). A finished run is left alone unless ``--overwrite``. A run
folder may be copied or moved (another ``--out``): it resumes from its own checkpoints, whatever paths
Lightning recorded.
Arguments, presets and their checks live in :mod:`models.train.args` (re-exported here).

Presets: ``tutorial`` is the tutorial's recipe (Adam 5e-4, warm-up 50, batch 128, 10 epochs, one
validation per epoch). ``fast`` is tuned for wall-clock seconds to 100% validation accuracy on a CPU
(see benchmarks/train_speed.py): same architecture, lr 7e-3, warm-up 10, batch 32 (cosine over one
epoch), validation every 20 steps, stop at the first 100%. Small batches win on a CPU because a step's
cost grows with the batch while the steps needed to converge shrink more slowly; lr 1e-2 was ~10%
faster but its first-100% models still missed a few test tokens (test accuracy 0.99997) where
7e-3's reached 1.0 on all 8 seeds tried. One intra-op thread by default (``--threads``): the thread
count changes the trained weights (summation order; ~1e-5 after 120 steps), so one thread gives the
same weights whatever the core count; on a busy 2-core machine a second OpenMP thread made steps up to
10x slower, and idle it saves ~25% at batch 128 and ~8% at batch 32 (benchmarks/train_speed.py).
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Re-exported: callers import TrainArgs / parse_args / build_parser / PRESETS from models.train.cli.
from models.train.args import (
    PRESETS,
    TrainArgs,
    build_parser,
    changed_fields,
    check_out,
    parse_args,
    parse_max_time,
    recorded_config,
)

# Lightning, torch and the encoder are imported inside train(): `--help` and bad input answer at once.
__all__ = ["PRESETS", "TrainArgs", "build_parser", "main", "parse_args", "summary", "train", "versions"]

QUIET_WARNINGS = (
    ".*does not have many workers.*",  # batches are tensor slices: workers would only add latency
    ".*exists and is not empty.*",  # resuming into our own checkpoints/ folder
    ".*isinstance.treespec, LeafSpec.*",  # Lightning 2.6 internals on torch 2.13
    ".*your dataloader is not resumable.*",  # it is: ReverseDataModule.state_dict/load_state_dict
)
TRAIN_EVAL_SEQUENCES = 10_000  # final train metrics use the first 10k training sequences (seconds matter)


# --------------------------------------------------------------------------------------------------
def _write_json(path: Path, data: Any) -> None:
    """Atomic: a temp file in the same folder, then os.replace (never a half-written file, no temp
    file left when the disk is full)."""
    from models.storage.integrity import atomic_write

    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()), record=False)


def _read_json(path: Path) -> dict[str, Any]:
    """A run folder's JSON object, or a one-line ``ValueError`` naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]
        raise ValueError(
            f"{path}: unreadable or corrupt ({reason}); repair it, or pass --overwrite to start the run over"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: holds a JSON {type(data).__name__}, not an object; repair it, or pass --overwrite to "
            "start the run over"
        )
    return data


def versions() -> dict[str, str]:
    """The versions of Python and of the packages a run's numbers depend on (a new dict each call)."""
    return dict(_versions())


@functools.cache
def _versions() -> dict[str, str]:
    # Read once per process (~7 ms each from the installed metadata; a run wrote it twice, an ensemble
    # twice per member): the modules this process imported do not change when pip changes the files.
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for package in ("torch", "pytorch-lightning", "transformer-lens", "numpy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def _plan(args: TrainArgs, run: Path, config: dict[str, Any]) -> str:
    """What to do with the run folder: "new", "resume" (from checkpoints/last.ckpt) or "finished".

    A finished run that stopped at its --max-steps cap or its --max-time window is continued when the
    new budget allows more steps; one that completed its epochs or reached 100% is left alone.
    """
    if not run.exists():
        return "new"
    if not run.is_dir():
        raise ValueError(f"--name: {run} exists and is not a folder")
    if not (run / "config.json").is_file():
        if any(run.iterdir()):
            raise ValueError(f"--name: {run} exists, is not empty and is not a run folder (no config.json)")
        return "new"
    if args.overwrite:
        return "new"
    differ = changed_fields(_read_json(run / "config.json"), config)
    if differ:
        raise ValueError(f"{run} holds a run with different {', '.join(differ)}; pass --name or --overwrite")
    last = (run / "checkpoints" / "last.ckpt").is_file()
    if (run / "model.pt").is_file() and (run / "metrics.json").is_file():
        done = _read_json(run / "metrics.json")
        reason = done.get("stop_reason")
        more_steps = args.max_steps is None or args.max_steps > done.get("steps", 0)
        if last and (reason == "max_time" or (reason == "max_steps" and more_steps)):
            return "resume"
        return "finished"
    return "resume" if last else "new"


def _evaluate(model, tokens, batch_size: int = 1024) -> dict[str, float]:
    """Mean loss and token accuracy of ``model`` on ``tokens`` (targets ``tokens.flip(-1)``)."""
    import torch

    from models.encoder.hooked import HookedReverseEncoder

    model.eval()
    loss_sum, correct = 0.0, 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(tokens), batch_size):
            batch = tokens[start : start + batch_size].to(device)
            logits = model(batch)
            loss_sum += float(HookedReverseEncoder.loss_fn(logits, batch, per_token=True).sum())
            correct += int((logits.argmax(-1) == batch.flip(-1)).sum())
    n = tokens.numel()
    return {"loss": loss_sum / n, "acc": correct / n}


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train(args: TrainArgs | list[str] | None = None, callbacks: list | None = None) -> Path:
    """Train (or resume, or find finished) the run described by ``args``; return its run folder.

    ``args`` is a :class:`TrainArgs`, a CLI argument list, or None for the defaults (tutorial preset).
    ``callbacks`` are extra Lightning callbacks. Bad input raises ``ValueError`` before anything is
    written.
    """
    started = time.perf_counter()
    command = None
    if args is None:
        args = TrainArgs()
    elif not isinstance(args, TrainArgs):
        command = ["python", "-m", "models.train", *map(str, args)]
        args = parse_args(list(args))
    args = args.resolve()
    run = Path(args.out) / args.run_name
    config = {**recorded_config(args), "command": command}

    plan = _plan(args, run, config)
    if plan == "finished":
        _say(f"{run}: already finished (model.pt and metrics.json); --overwrite to train again")
        return run
    check_out(Path(args.out))
    resume_from = None
    if plan == "resume":  # last.ckpt, or the newest intact checkpoint when it is corrupt
        from models.train.atomic_checkpoint import resume_checkpoint

        resume_from = resume_checkpoint(run, _say)

    with quiet_fit(args.threads):
        return _fit(args, run, config, resume_from, list(callbacks or []), started)


@contextmanager
def quiet_fit(threads: int) -> Iterator[None]:
    """The block of a fit (``models.train.cli``'s and ``models.train.ensemble``'s): Lightning's loggers at
    WARNING and its :data:`QUIET_WARNINGS` ignored, ``threads`` intra-op threads (0: torch's default); the
    loggers' levels and the thread count are restored after."""
    import logging
    import warnings

    import torch

    import models.train.lightning_import  # noqa: F401  (Lightning sets its loggers' levels on import: quiet them after)

    quieted = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning_fabric")]
    levels = [logger.level for logger in quieted]
    previous_threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():
            for noise in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=noise)
            for logger in quieted:  # GPU/TPU availability banners and the like: not needed here
                logger.setLevel(logging.WARNING)
            if threads:
                torch.set_num_threads(threads)
            yield
    finally:
        torch.set_num_threads(previous_threads)
        for logger, level in zip(quieted, levels):
            logger.setLevel(level)


def make_trainer(**kwargs: Any):
    """``pl.Trainer(**kwargs)``, with Lightning rejecting the accelerator, devices, strategy or nodes
    (its MisconfigurationException & co) said as a one-line ``ValueError`` naming those flags."""
    from machine.cluster import first_line
    from models.train.lightning_import import pl

    try:
        return pl.Trainer(**kwargs)
    except Exception as exc:
        raise ValueError(f"--accelerator/--devices/--strategy/--num-nodes: {first_line(exc)}") from None


def _trainer_kwargs(args: TrainArgs) -> dict[str, Any]:
    from models.train import lightning_module

    devices: Any = args.devices
    if str(devices).lstrip("-").isdigit():
        devices = int(devices)
    vci = args.val_check_interval
    return dict(
        accelerator=args.accelerator,
        devices=devices,
        strategy=args.strategy,
        num_nodes=args.num_nodes,
        max_epochs=args.epochs,
        max_steps=-1 if args.max_steps is None else args.max_steps,
        max_time=None if args.max_time is None else parse_max_time(args.max_time),
        val_check_interval=vci,
        # An int interval counts steps across epoch boundaries; a float is a fraction of each epoch.
        check_val_every_n_epoch=None if isinstance(vci, int) else 1,
        gradient_clip_val=lightning_module.CLIP_NORM,
        num_sanity_val_steps=0,
        log_every_n_steps=10,
        enable_model_summary=False,
        enable_progress_bar=args.progress_bar,
    )


def _fit(
    args: TrainArgs, run: Path, config: dict, resume_from: Path | None, extra_callbacks: list, started: float
) -> Path:
    import importlib.util
    import inspect
    import math
    import shutil

    import torch

    from models.storage.checkpoints import load_model
    from models.train.atomic_checkpoint import AtomicCheckpointIO
    from models.train.datamodule import ReverseDataModule
    from models.train.lightning_import import pl
    from models.train.lightning_module import (
        LastCheckpoint,
        ReverseTaskModule,
        RunCheckpoint,
        SnapshotCallback,
        StopAtPerfect,
        log_spaced_steps,
    )

    pl.seed_everything(args.seed, workers=True, verbose=False)
    cfg = args.encoder_config()
    dm = ReverseDataModule(
        num_categories=cfg.d_vocab,
        seq_len=cfg.n_ctx,
        train_size=args.train_size,
        val_size=args.val_size,
        test_size=args.test_size,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    recorder = StopAtPerfect(stop=args.stop_at_perfect)
    # RunCheckpoint: a ModelCheckpoint that, resumed in a copied or moved run folder, uses that folder's
    # own files instead of the absolute paths recorded in last.ckpt.
    checkpoint = RunCheckpoint(
        dirpath=run / "checkpoints",
        filename="best-{step}-{val_acc:.4f}",
        monitor="val_acc",
        mode="max",
        save_top_k=1,
        enable_version_counter=False,
        # Save right after each validation (also at epoch end), before LastCheckpoint below records
        # this callback's state; saving at train-epoch end would put last.ckpt one step behind it.
        save_on_train_epoch_end=False,
    )
    # last.ckpt after every validation: a killed run loses at most one validation interval.
    last = LastCheckpoint(run / "checkpoints" / "last.ckpt")
    callbacks = [recorder, checkpoint, last, *extra_callbacks]
    if args.progress_bar:
        callbacks.append(pl.callbacks.TQDMProgressBar(refresh_rate=max(1, dm.steps_per_epoch // 50)))
    loggers = [pl.loggers.CSVLogger(run, name="logs")]
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        loggers.append(pl.loggers.TensorBoardLogger(run, name="tensorboard"))
    trainer = make_trainer(
        logger=loggers,
        callbacks=callbacks,
        default_root_dir=run,
        plugins=[AtomicCheckpointIO()],  # checkpoints written in place atomically, sha256 recorded
        **_trainer_kwargs(args),
    )
    max_iters = args.epochs * math.ceil(dm.steps_per_epoch / trainer.world_size)
    if args.save_every_log_steps:
        steps = log_spaced_steps(args.max_steps or max_iters, args.save_every_log_steps)
        meta = {"seed": args.seed, "preset": args.preset, "run": args.run_name}
        trainer.callbacks.append(SnapshotCallback(run / "snapshots", steps, meta))
    module = ReverseTaskModule(cfg, lr=args.lr, warmup=args.warmup, max_iters=max_iters)

    if trainer.is_global_zero:
        if args.overwrite and run.exists():
            shutil.rmtree(run)
        try:
            run.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"--out {args.out}: cannot create {run} ({exc.strerror or exc})") from None
        _write_json(run / "config.json", {**config, "max_iters": max_iters})
        _write_json(run / "versions.json", versions())
    if resume_from is not None:
        _say(f"{run}: resuming from {resume_from}")
    fit_start = time.perf_counter()
    # Resuming reads checkpoints/last.ckpt with torch.load(weights_only=True): a run folder copied from
    # elsewhere cannot run code (Lightning >= 2.6 takes the flag; older ones use torch's default).
    safe = {"weights_only": True} if "weights_only" in inspect.signature(pl.Trainer.fit).parameters else {}
    trainer.fit(module, datamodule=dm, ckpt_path=resume_from, **safe)
    fit_seconds = time.perf_counter() - fit_start
    if not trainer.is_global_zero or trainer.interrupted:
        return run

    best = checkpoint.best_model_path
    model = load_model(best, check_accuracy=False) if best else module.model.cpu().eval()
    # The step of the weights model.pt holds: the best checkpoint's (or the last step without one).
    model_step = torch.load(best, map_location="cpu", weights_only=True)["global_step"] if best else None
    dm.setup()
    metrics: dict[str, Any] = {}
    for split, tokens in (
        ("train", dm.splits.train[:TRAIN_EVAL_SEQUENCES]),
        ("val", dm.splits.val),
        ("test", dm.splits.test),
    ):
        result = _evaluate(model, tokens)
        metrics[f"{split}_loss"], metrics[f"{split}_acc"] = result["loss"], result["acc"]
    metrics.update(
        train_eval_sequences=min(args.train_size, TRAIN_EVAL_SEQUENCES),
        steps=trainer.global_step,
        epochs=round(trainer.global_step / math.ceil(dm.steps_per_epoch / trainer.world_size), 4),
        max_iters=max_iters,
        # Lightning stores absolute real paths; record it relative to the run folder, which may move.
        best_checkpoint=os.path.relpath(os.path.realpath(best), os.path.realpath(run)) if best else None,
        first_perfect_step=recorder.first_perfect_step,
        seconds_to_perfect=recorder.seconds_to_perfect,
        stopped_at_perfect=recorder.stopped,
        stop_reason=_stop_reason(args, trainer, recorder),
        resumed_from_step=recorder.start_step if resume_from is not None else None,
        fit_seconds=fit_seconds,
    )
    step = trainer.global_step if model_step is None else int(model_step)
    return save_run(run, model, args, metrics, step, started)


def save_run(run: Path, model, args: TrainArgs, metrics: dict[str, Any], step: int, started: float, **extra):
    """The end of a run (``models.train.cli``'s, and each member of ``models.train.ensemble``'s): ``model.pt``
    with the run's seed, preset, recipe, versions, best checkpoint, the ``step`` of its weights,
    ``metrics`` and ``extra`` as metadata, then ``metrics.json`` with the run's wall time since
    ``started``. Returns ``run``."""
    from models.storage.checkpoints import save_model

    metadata = {
        "seed": args.seed,
        "preset": args.preset,
        "training": recorded_config(args)["training"],
        "versions": versions(),
        "source_checkpoint": metrics["best_checkpoint"],
        "step": step,
        "metrics": metrics,
        **extra,
    }
    save_model(model, run / "model.pt", metadata)
    metrics["wall_seconds"] = time.perf_counter() - started
    _write_json(run / "metrics.json", metrics)  # last: its presence marks the run as finished
    return run


def _stop_reason(args: TrainArgs, trainer, recorder) -> str:
    if recorder.stopped:
        return "perfect"
    if args.max_steps is not None and trainer.global_step >= args.max_steps:
        return "max_steps"
    if trainer.current_epoch >= args.epochs:
        return "epochs"
    return "max_time"


def percent(fraction: float) -> str:
    """``fraction`` as a percentage with two decimals, rounded *down*, so that "100.00%" means exactly 1
    (0.9999875 → "99.99%", not "100.00%"). The product is first rounded to 6 decimals so that binary
    noise does not push an exact value down (0.57 · 10⁴ = 5699.999...)."""
    return f"{math.floor(round(fraction * 10_000, 6)) / 100:.2f}%"


def summary(run: Path) -> str:
    """The one-screen report printed at the end of a run."""
    config = json.loads((run / "config.json").read_text())
    m = json.loads((run / "metrics.json").read_text())
    e, t = config["encoder"], config["training"]
    perfect = (
        f"first 100% val accuracy at step {m['first_perfect_step']} "
        f"({m['seconds_to_perfect']:.2f} s of fitting)"
        if m.get("first_perfect_step") is not None
        else "val accuracy never reached 100%"
    )
    lines = [
        f"run       {run}",
        f"preset    {config['preset']}   seed {config['seed']}",
        f"model     {e['n_layers']} layer(s) x {e['n_heads']} head(s), d_model {e['d_model']}, "
        f"d_mlp {e['d_mlp']}, "
        f"{e['d_vocab']} categories, length {e['n_ctx']}, {e['positional_embedding']} positions, "
        f"{e['normalization']}-LN, dropout {e['dropout']}",
        f"recipe    Adam lr {t['lr']:g}, warm-up {t['warmup']}, cosine over {m['max_iters']} steps, batch "
        f"{t['batch_size']}, epochs {t['epochs']}, clip 5, "
        f"stop at 100%: {'on' if t['stop_at_perfect'] else 'off'}",
        f"steps     {m['steps']} ({m['epochs']:g} epochs, stopped by {m['stop_reason']}); {perfect}",
        f"seconds   fit {m['fit_seconds']:.2f}, whole run {m['wall_seconds']:.2f}",
        f"accuracy  val {percent(m['val_acc'])}  test {percent(m['test_acc'])}  "
        f"train {percent(m['train_acc'])} (first {m['train_eval_sequences']} sequences)",
        f"loss      val {m['val_loss']:.4g}  test {m['test_loss']:.4g}  train {m['train_loss']:.4g}",
        f"model.pt  {run / 'model.pt'}",
    ]
    return "\n".join(lines)


def how_to_continue(argv: list[str]) -> str:
    """What rerunning does after an interruption, from the run folder's state: continue from its last
    checkpoint (the same command; without ``--overwrite``, which would start over) or start again."""
    try:
        args = parse_args(list(argv))
    except ValueError:
        return "rerun the same command to continue"
    run = Path(args.out) / args.run_name
    if not (run / "checkpoints" / "last.ckpt").is_file() or (run / "metrics.json").is_file():
        return "rerun the same command to start again (no checkpoint was written yet)"
    if args.overwrite:
        return "rerun without --overwrite to continue from the last checkpoint (with it, the run starts over)"
    return "rerun the same command to continue from the last checkpoint"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        run = train(argv)
    except KeyboardInterrupt:
        print(f"error: interrupted: {how_to_continue(argv)}", file=sys.stderr)
        return 130
    except SystemExit as exc:  # --help (0), or Lightning's sys.exit(1) after a Ctrl-C during fit
        if exc.code == 1:
            print(f"error: interrupted: {how_to_continue(argv)}", file=sys.stderr)
            return 130
        return int(exc.code or 0)
    except ValueError as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a folder made read-only during the run, ...: not the user's input
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}; once fixed, {how_to_continue(argv)}", file=sys.stderr)
        return 1
    if (run / "metrics.json").is_file():
        try:
            print(summary(run))
        except BrokenPipeError:  # e.g. piped into `head`
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (no second error when Python flushes)
    return 0
