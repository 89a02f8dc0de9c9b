"""Seeds trained together: runs that differ only in their seed, trained as one vectorised ensemble.

``train_ensemble([argv_seed0, argv_seed1, ...])`` takes ``models.train.cli`` command lines that resolve to
the same run except ``--seed`` and ``--name``, trains them in one Lightning ``Trainer`` and writes one
ordinary run folder per member (``model.pt``, ``config.json``, ``versions.json``, ``metrics.json``,
``logs/version_0/metrics.csv``) that ``models.load_model`` reads like any other. The pieces, as for one
run (``datamodule``, ``lightning_module``, ``train``): :mod:`models.train.ensemble_data` (the members' data
stacked), :mod:`models.train.ensemble_module` (the stacked LightningModule) and this module (the members'
command lines checked, the fit, the final evaluation and the member folders).

How a member stays the run it would be alone:

- initialisation: ``pl.seed_everything(seed)`` and then the encoder is built, as ``models.train.cli`` does;
- data: each member has its own ``ReverseDataModule(seed)`` splits and shuffling order; a step's batch
  is ``[M, batch, pos]``, row m being exactly member m's batch of that step;
- forward/backward: :func:`models.encoder.stacked.stacked_logits` on the members' parameters stacked on a
  leading model axis (one leaf tensor per parameter name, each member's ``nn.Parameter`` a view of its
  row); each member's loss is its own batch mean, and the summed loss gives each member exactly its
  own gradient;
- optimiser: one fused Adam over the stacked tensors (Adam is per element and every member still
  training has taken the same number of steps, so each member has its own moments and step count),
  gradient clipping at norm 5 per member (:func:`models.train.ensemble_module.clip_per_member`: the
  formula of ``clip_grad_norm_(member.parameters(), 5)`` on each member's rows), the cosine schedule;
- evaluation: validation and the final metrics use :func:`models.encoder.stacked.eval_logits` (layer 0's
  embedding and qkv looked up per token and position), the same sums per batch of 1,024 as
  ``models.train.cli._evaluate``; its logits equal the stacked forward's to float32 rounding;
- stop at 100%: after every validation a member whose val accuracy is 1.0 is frozen (the stacks and
  Adam's moments shrink to the members still training, so it leaves the stacked forward and nothing
  updates its weights or its Adam state any more); the fit ends when every member is frozen or the
  step budget is spent. Each member keeps the weights of its
  best validation (the first one with the highest accuracy, as ``ModelCheckpoint(mode="max")`` does),
  and those are what its ``model.pt`` holds.

The reproducibility contract (docs/reproducibility.md), what is and is not bit-for-bit:

- same command, same versions, same machine (same CPU capability and BLAS, ``zoo.json``'s ``kernels``),
  same members: the same bits (tested: ``tests/test_ensemble.py``, the same ensemble trained twice);
- a member against its seed trained alone: one step's forward and gradients are equal to float32
  rounding — within γ_N·‖y‖∞ of the exact (float64) values, N the summation length of the encoder's path
  (``tests/rounding.py``) — but not bit for bit: the batched products (``baddbmm``, one MKL batched
  GEMM) sum in another order than one model's ``addmm``, and on which CPUs that shows in the last bit
  depends on the kernels (it did not on the machine this was written on; it does on an AMD EPYC, with
  or without AVX-512). Over hundreds of Adam steps and stop-at-100% decisions that difference grows:
  a trained member is the run its seed gives alone *statistically* — the same recipe per member (its
  own clipping norm, learning rate and schedule, data order, stop on its own accuracy), tested by the
  divergence of its first steps from the solo run's (rounding gives 1e-4, any recipe error 0.09 and
  more) — not a copy of it. For bit-comparable runs train them alone (``models.zoo.cli --no-ensemble``, or
  ``models.train.cli``); ``zoo.json`` records with whom each run trained (``ensemble_members``).

Bit-identical members cost speed: one GEMM per member instead of the batched one (the same shapes as
a run alone) made one step's gradients bit-identical to the solo run's on all four kernel paths this
machine can take, but made the stacked forward and backward 1.2-1.8× slower (5 and 8 members,
measured at load 13-16, docs/reproducibility.md): most of the ensemble's advantage. And the
attention's batched products would still differ in shape from one model's. The batched form is kept.

Snapshots (``--save-every-log-steps K``): each member's ``snapshots/step_XXXXXX.pt`` at the steps, with the
metadata, that ``models.train.cli`` writes for a run alone (``analyses.training_dynamics`` and the atlas's
``--dynamics`` read them); they are kept in memory during the fit and written with the member's folder.

What an ensemble does not do (the zoo trains such runs alone): dropout, ``--max-time``, several devices
or nodes, resuming (a member folder holds no ``checkpoints/``: an interrupted ensemble is trained again
from the start, with the same result).
"""

from __future__ import annotations

import copy
import csv
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from models.encoder.hooked import HookedReverseEncoder
from models.train.args import TrainArgs, parse_args, recorded_config
from models.train.ensemble_args import ensemble_blocker, ensemble_key
from models.train.ensemble_data import EnsembleData
from models.train.ensemble_module import EnsembleModule

__all__ = ["EnsembleData", "EnsembleModule", "ensemble_blocker", "ensemble_key", "train_ensemble"]


def _member_args(argvs: Sequence[Sequence[str]]) -> list[TrainArgs]:
    from models.train.args import check_out

    if not argvs:
        raise ValueError("train_ensemble: no members")
    members = [parse_args(list(argv)).resolve() for argv in argvs]
    keys = {ensemble_key(a) for a in members}
    if len(keys) != 1:
        raise ValueError("train_ensemble: the members differ in more than --seed and --name")
    blocker = ensemble_blocker(members[0])
    if blocker:
        raise ValueError(f"train_ensemble: {blocker} is not supported in an ensemble; train such runs alone")
    names = [a.run_name for a in members]
    if len(set(names)) != len(names):
        raise ValueError(f"train_ensemble: two members share a run name ({names})")
    for a in members:
        check_out(Path(a.out))
    return members


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ["epoch", "step", "train_acc", "train_loss", "val_acc", "val_loss"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _write_snapshots(module: EnsembleModule, m: int, args: TrainArgs, folder: Path) -> None:
    """Member m's snapshots as ``models.train.lightning_module.SnapshotCallback`` writes a run's:
    ``folder/step_XXXXXX.pt`` (``models.save_model``, sha256 recorded in ``folder/SHA256SUMS``) with
    metadata seed, preset, run, step, epoch (and ``"final": True`` for the weights it stopped with)."""
    from models.storage.checkpoints import save_model

    if not module.snapshots[m]:
        return
    model = HookedReverseEncoder(copy.deepcopy(module.cfg))
    base = {"seed": args.seed, "preset": args.preset, "run": args.run_name}
    for step, (state, meta) in sorted(module.snapshots[m].items()):
        model.load_state_dict(state)
        save_model(model.eval(), folder / f"step_{step:06d}.pt", {**base, **meta})


def train_ensemble(
    argvs: Sequence[Sequence[str]], workdir: str | Path | None = None, callbacks: list | None = None
) -> list[Path]:
    """Train the members described by the ``models.train.cli`` command lines ``argvs`` together; return
    their run folders, in the order of ``argvs``.

    Each member is written to ``workdir/<name>`` (default: its own ``--out``), which must not exist
    yet or be empty; its config.json records the member's command line as ``models.train.cli`` would
    (``--out`` as given), which trains the same weights alone. ``ValueError`` on bad input, before any
    training; a failure later leaves the member folders unfinished (no metrics.json). ``callbacks``
    are extra Lightning callbacks (they see the :class:`EnsembleModule`).
    """
    from models.train.cli import _trainer_kwargs, make_trainer, quiet_fit

    started = time.perf_counter()
    members = _member_args(argvs)
    first = members[0]
    folders = [Path(workdir if workdir is not None else a.out) / a.run_name for a in members]
    for folder in folders:
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise ValueError(f"{folder}: exists and is not empty (an ensemble trains new runs only)")

    with quiet_fit(first.threads):
        data = EnsembleData([a.seed for a in members], first)
        kwargs = _trainer_kwargs(first)
        kwargs.pop("gradient_clip_val")  # manual optimisation: clipped per member in training_step
        kwargs.update(logger=False, enable_checkpointing=False, enable_progress_bar=False)
        kwargs["callbacks"] = list(callbacks or [])
        trainer = make_trainer(**kwargs)
        max_iters = first.epochs * data.steps_per_epoch
        snapshot_steps: list[int] = []
        if first.save_every_log_steps:  # the steps models.train.cli snapshots a run at
            from models.train.lightning_module import log_spaced_steps

            snapshot_steps = log_spaced_steps(first.max_steps or max_iters, first.save_every_log_steps)
        module = EnsembleModule(
            first.encoder_config(),
            [a.seed for a in members],
            lr=first.lr,
            warmup=first.warmup,
            max_iters=max_iters,
            stop_at_perfect=bool(first.stop_at_perfect),
            log_every_n_steps=trainer.log_every_n_steps,
            snapshot_steps=snapshot_steps,
        )
        fit_start = time.perf_counter()
        trainer.fit(module, datamodule=data)
        fit_seconds = time.perf_counter() - fit_start
        if trainer.interrupted:
            raise KeyboardInterrupt
        from models.train.cli import TRAIN_EVAL_SEQUENCES

        module.eval()
        # A member's best validation is the evaluation of its best weights on the val split.
        validated = all(v is not None for v in module.best_val)
        evaluations = {
            "train": module.evaluate(data.train_tokens[:, :TRAIN_EVAL_SEQUENCES]),
            "val": list(module.best_val) if validated else module.evaluate(data.val_tokens),
            "test": module.evaluate(torch.stack([s.test for s in data.members])),
        }
        return [
            _write_member(
                module,
                data,
                m,
                {f"{split}_{k}": v for split, results in evaluations.items() for k, v in results[m].items()},
                a,
                list(argv),
                folder,
                max_iters,
                fit_seconds,
                started,
            )
            for m, (a, argv, folder) in enumerate(zip(members, argvs, folders))
        ]


def _write_member(
    module: EnsembleModule,
    data: EnsembleData,
    m: int,
    evaluation: dict[str, float],
    args: TrainArgs,
    argv: list[str],
    folder: Path,
    max_iters: int,
    fit_seconds: float,
    started: float,
) -> Path:
    from models.train.cli import TRAIN_EVAL_SEQUENCES, _write_json, save_run, versions

    folder.mkdir(parents=True, exist_ok=True)
    command = ["python", "-m", "models.train", *map(str, argv)]
    _write_json(folder / "config.json", {**recorded_config(args), "command": command, "max_iters": max_iters})
    _write_json(folder / "versions.json", versions())
    model = module.best_model(m)
    metrics: dict[str, Any] = {}
    for split in ("train", "val", "test"):  # the key order of models.train.cli's metrics.json
        metrics[f"{split}_loss"], metrics[f"{split}_acc"] = (
            evaluation[f"{split}_loss"],
            evaluation[f"{split}_acc"],
        )
    steps = module.steps[m]
    if module.stopped[m]:
        reason = "perfect"
    elif args.max_steps is not None and steps >= args.max_steps:
        reason = "max_steps"
    else:
        reason = "epochs"
    ensemble = {"seeds": module.seeds, "member": m, "size": len(module.seeds)}
    metrics.update(
        train_eval_sequences=min(args.train_size, TRAIN_EVAL_SEQUENCES),
        steps=steps,
        epochs=round(steps / data.steps_per_epoch, 4),
        max_iters=max_iters,
        best_checkpoint=None,
        first_perfect_step=module.first_perfect_step[m],
        seconds_to_perfect=module.seconds_to_perfect[m],
        stopped_at_perfect=module.stopped[m],
        stop_reason=reason,
        resumed_from_step=None,
        fit_seconds=fit_seconds,  # the whole ensemble's fit
        ensemble=ensemble,
    )
    _write_log(folder / "logs" / "version_0" / "metrics.csv", module.history[m])
    _write_snapshots(module, m, args, folder / "snapshots")
    best_step = module.best_step[m]
    step = steps if best_step is None else int(best_step)
    return save_run(folder, model, args, metrics, step, started, ensemble=ensemble)
