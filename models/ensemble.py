"""Seeds trained together: runs that differ only in their seed, trained as one vectorised ensemble.

``train_ensemble([argv_seed0, argv_seed1, ...])`` takes ``models.train`` command lines that resolve to
the same run except ``--seed`` and ``--name``, trains them in one Lightning ``Trainer`` and writes one
ordinary run folder per member (``model.pt``, ``config.json``, ``versions.json``, ``metrics.json``,
``logs/version_0/metrics.csv``) that ``models.load_model`` reads like any other.

How a member stays the run it would be alone:

- initialisation: ``pl.seed_everything(seed)`` and then the encoder is built, as ``models.train`` does;
- data: each member has its own ``ReverseDataModule(seed)`` splits and shuffling order; a step's batch
  is ``[M, batch, pos]``, row m being exactly member m's batch of that step;
- forward/backward: :func:`models.stacked.stacked_logits` on the members' parameters stacked on a
  leading model axis (``torch.stack`` of each member's own ``nn.Parameter``s, so gradients land on
  them); each member's loss is its own batch mean, and the summed loss gives each member exactly its
  own gradient;
- optimiser: one Adam whose parameter groups are the members (Adam is per element, so each member has
  its own moments and step count), gradient clipping at norm 5 per member
  (``clip_grad_norm_(member.parameters(), 5)``), the cosine schedule per group;
- stop at 100%: after every validation a member whose val accuracy is 1.0 is frozen (it leaves the
  stacked forward, its parameters get no gradient, so Adam leaves it and its state untouched); the fit
  ends when every member is frozen or the step budget is spent. Each member keeps the weights of its
  best validation (the first one with the highest accuracy, as ``ModelCheckpoint(mode="max")`` does),
  and those are what its ``model.pt`` holds.

On a CPU with one thread the batched operators give the same bits as one model's (``baddbmm`` is the
per-model GEMM; the embedding's scatter-add visits each member's tokens in the same order), so a
member's weights equal those of the same seed trained alone *exactly* (measured: every weight of every
member of the default zoo's 13 ensembles, ``benchmarks/zoo_time.py``; tested in
``tests/test_ensemble.py``). Other devices or thread counts may differ in the last bits.

What an ensemble does not do (the zoo trains such runs alone): dropout, ``--save-every-log-steps``,
``--max-time``, several devices or nodes, resuming (a member folder holds no ``checkpoints/``: an
interrupted ensemble is trained again from the start, with the same result).
"""

from __future__ import annotations

import copy
import csv
import json
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from models.config import EncoderConfig
from models.data import ReverseSplits, make_splits
from models.datamodule import EVAL_BATCH_SIZE, SliceBatchSampler
from models.encoder import HookedReverseEncoder
from models.ensemble_args import ensemble_blocker, ensemble_key
from models.lightning_module import CosineWarmup
from models.stacked import stacked_logits, stacked_loss
from models.train_args import TrainArgs, parse_args, recorded_config

__all__ = ["EnsembleData", "EnsembleModule", "ensemble_blocker", "ensemble_key", "train_ensemble"]

CLIP_NORM = 5.0  # models.train's gradient_clip_val


# --- data -----------------------------------------------------------------------------------------
class _StackedSampler(Sampler):
    """One ``SliceBatchSampler`` per member, advanced together: yields ``[M, batch]`` index tensors."""

    def __init__(self, samplers: list[SliceBatchSampler]):
        self.samplers = samplers

    def set_epoch(self, epoch: int) -> None:
        for sampler in self.samplers:
            sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.samplers[0])

    def __iter__(self) -> Iterator[Tensor]:
        for indices in zip(*self.samplers):
            yield torch.stack(indices)


class _StackedTokens(Dataset):
    """``dataset[idx [M, b]] = tokens[m, idx[m]]`` for every member m: ``[M, b, pos]``."""

    def __init__(self, tokens: Tensor):
        self.tokens = tokens  # [M, n, pos]

    def __len__(self) -> int:
        return self.tokens.shape[1]

    def __getitem__(self, indices: Tensor | slice) -> Tensor:
        if isinstance(indices, slice):
            return self.tokens[:, indices]
        return self.tokens[torch.arange(len(self.tokens)).unsqueeze(1), indices]


def _as_is(batch):
    return batch


class _EvalSampler(Sampler):
    def __init__(self, n: int, batch_size: int):
        self.n, self.batch_size = n, batch_size

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[slice]:
        for start in range(0, self.n, self.batch_size):
            yield slice(start, min(start + self.batch_size, self.n))


class EnsembleData(pl.LightningDataModule):
    """The members' splits stacked: ``[M, n, pos]`` per split; training batches ``[M, batch, pos]``
    where row m is the batch ``ReverseDataModule(seed_m)`` would give at that step (same permutation
    per epoch, last incomplete batch dropped)."""

    def __init__(self, seeds: Sequence[int], args: TrainArgs, eval_batch_size: int = EVAL_BATCH_SIZE):
        super().__init__()
        cfg = args.encoder_config()
        self.seeds, self.batch_size, self.eval_batch_size = list(seeds), args.batch_size, eval_batch_size
        self.members: list[ReverseSplits] = [
            make_splits(seed, cfg.n_ctx, cfg.d_vocab, args.train_size, args.val_size, args.test_size)
            for seed in self.seeds
        ]
        self.train_tokens = torch.stack([s.train for s in self.members])
        self.val_tokens = torch.stack([s.val for s in self.members])

    @property
    def steps_per_epoch(self) -> int:
        return self.train_tokens.shape[1] // self.batch_size

    def train_dataloader(self) -> DataLoader:
        n = self.train_tokens.shape[1]
        samplers = [SliceBatchSampler(n, self.batch_size, True, seed, drop_last=True) for seed in self.seeds]
        return DataLoader(
            _StackedTokens(self.train_tokens),
            sampler=_StackedSampler(samplers),
            batch_size=None,
            collate_fn=_as_is,
        )

    def val_dataloader(self) -> DataLoader:
        sampler = _EvalSampler(self.val_tokens.shape[1], self.eval_batch_size)
        return DataLoader(
            _StackedTokens(self.val_tokens), sampler=sampler, batch_size=None, collate_fn=_as_is
        )


# --- the module -----------------------------------------------------------------------------------
def _scored(
    cfg: EncoderConfig, params: dict[str, Tensor], batch: Tensor, chunk: int = 256
) -> tuple[Tensor, Tensor]:
    """Per-token losses ``[M, b, pos]`` and correct tokens ``[M]`` of the stacked models on ``batch
    [M, b, pos]``, computed in chunks of ``chunk`` sequences (their activations stay in the CPU's cache;
    every number is the one the whole batch would give)."""
    m = batch.shape[0]
    losses, hits = [], torch.zeros(m, dtype=torch.long, device=batch.device)
    for first in range(0, batch.shape[1], chunk):
        part = batch[:, first : first + chunk]
        logits = stacked_logits(cfg, params, part)
        targets = part.flip(-1)
        per_token = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1).transpose(1, 2), targets.flatten(0, 1), reduction="none"
        )
        losses.append(per_token.view(m, -1, part.shape[-1]))
        hits += (logits.argmax(-1) == targets).flatten(1).sum(1)
    return torch.cat(losses, 1), hits


class EnsembleModule(pl.LightningModule):
    """M encoders of one architecture and recipe, one per seed, trained in one stacked pass.

    ``members[m]`` is an ordinary ``HookedReverseEncoder``; ``active`` lists the members still
    training. Manual optimisation: one Adam (a parameter group per member), clipping per member."""

    def __init__(
        self,
        config: EncoderConfig,
        seeds: Sequence[int],
        lr: float,
        warmup: int,
        max_iters: int,
        stop_at_perfect: bool,
        betas: tuple[float, float] = (0.9, 0.999),
        log_every_n_steps: int = 10,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.cfg, self.seeds = config, list(seeds)
        self.lr, self.warmup, self.max_iters, self.betas = lr, warmup, max_iters, betas
        self.stop_at_perfect, self.log_every = stop_at_perfect, log_every_n_steps
        members = []
        for seed in self.seeds:  # the initialisation models.train gives this seed
            pl.seed_everything(seed, workers=True, verbose=False)
            members.append(HookedReverseEncoder(copy.deepcopy(config)))
        self.members = torch.nn.ModuleList(members)
        self.names = [name for name, _ in members[0].named_parameters()]
        self._params = [dict(member.named_parameters()) for member in members]
        m = len(self.seeds)
        self.active = list(range(m))
        self.steps = [0] * m  # optimizer steps each member took
        self.best_acc: list[float] = [-math.inf] * m
        self.best_state: list[dict[str, Tensor] | None] = [None] * m
        self.best_step: list[int | None] = [None] * m
        self.best_val: list[dict[str, float] | None] = [None] * m  # its validation: the final val metrics
        self.first_perfect_step: list[int | None] = [None] * m
        self.seconds_to_perfect: list[float | None] = [None] * m
        self.stopped = [False] * m
        self.history: list[list[dict[str, Any]]] = [[] for _ in range(m)]  # logs/.../metrics.csv rows
        self._val: dict[int, list[float]] = {}
        self._start = 0.0

    def stacked_params(self, members: Sequence[int]) -> dict[str, Tensor]:
        params = {name: torch.stack([self._params[m][name] for m in members]) for name in self.names}
        if self.cfg.positional_embedding == "sinusoidal":
            params["pos_embed.table"] = self.members[0].pos_embed.table
        return params

    def forward(self, tokens: Tensor, members: Sequence[int] | None = None) -> Tensor:
        """Logits ``[len(members), batch, pos, d_vocab]`` of ``members`` (default: all) on
        ``tokens[len(members), batch, pos]``."""
        members = range(len(self.seeds)) if members is None else members
        return stacked_logits(self.cfg, self.stacked_params(members), tokens)

    def configure_optimizers(self) -> dict[str, Any]:
        fused = all(p.device.type in ("cpu", "cuda") for p in self.parameters())
        groups = [{"params": list(member.parameters())} for member in self.members]
        optimizer = torch.optim.Adam(groups, lr=self.lr, betas=self.betas, weight_decay=0.0, fused=fused)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, CosineWarmup(self.warmup, self.max_iters))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_start(self) -> None:
        self._start = time.perf_counter()

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        active = list(self.active)
        tokens = batch[active]
        logits = self(tokens, active)
        losses = stacked_loss(logits, tokens)
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(losses.sum())  # d(sum)/d(member m) = member m's own gradient
        for m in active:
            torch.nn.utils.clip_grad_norm_(self.members[m].parameters(), CLIP_NORM)
        optimizer.step()  # frozen members have no gradient: Adam skips them and their state
        optimizer.zero_grad(set_to_none=True)
        self.lr_schedulers().step()
        step = self.global_step
        for m in active:
            self.steps[m] = step
        if step % max(1, self.log_every) == 0:
            acc = (logits.detach().argmax(-1) == tokens.flip(-1)).float().mean((1, 2))
            for i, m in enumerate(active):
                self.history[m].append(
                    {"step": step, "train_loss": float(losses[i].detach()), "train_acc": float(acc[i])}
                )

    def on_validation_epoch_start(self) -> None:
        self._val = {m: [0.0, 0, 0] for m in self.active}  # loss sum, correct, tokens

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        active = list(self._val)
        per_token, correct = _scored(self.cfg, self.stacked_params(active), batch[active])
        for i, m in enumerate(active):
            record = self._val[m]
            record[0] += float(per_token[i].sum())  # as models.train._evaluate sums one model's batch
            record[1] += int(correct[i])
            record[2] += per_token[i].numel()

    def on_validation_epoch_end(self) -> None:
        step = self.global_step
        for m, (loss_sum, correct, count) in self._val.items():
            acc = correct / count
            self.history[m].append(
                {"step": step, "epoch": self.current_epoch, "val_loss": loss_sum / count, "val_acc": acc}
            )
            if acc > self.best_acc[m]:  # the first of equal bests, as ModelCheckpoint(mode="max")
                self.best_acc[m], self.best_step[m] = acc, step
                self.best_val[m] = {"loss": loss_sum / count, "acc": acc}
                self.best_state[m] = {k: v.detach().clone() for k, v in self.members[m].state_dict().items()}
            if correct == count:
                if self.first_perfect_step[m] is None:
                    self.first_perfect_step[m] = step
                    self.seconds_to_perfect[m] = time.perf_counter() - self._start
                if self.stop_at_perfect:
                    self.stopped[m] = True
        self.active = [m for m in self.active if not self.stopped[m]]
        if not self.active:
            self.trainer.should_stop = True

    def best_states(self) -> list[dict[str, Tensor]]:
        """Every member's best validation weights (its last weights if it was never validated)."""
        return [
            best if best is not None else member.state_dict()
            for best, member in zip(self.best_state, self.members)
        ]

    @torch.no_grad()
    def evaluate(self, tokens: Tensor, batch_size: int = 1024, chunk: int = 256) -> list[dict[str, float]]:
        """Each member's mean loss and token accuracy with its best weights on ``tokens[M, n, pos]``:
        ``models.train._evaluate`` for all members at once, with the same sums over the same batches of
        ``batch_size`` (so the same numbers); each batch is computed in chunks of ``chunk`` sequences,
        whose activations stay in the CPU's cache."""
        states = self.best_states()
        params = {name: torch.stack([state[name] for state in states]) for name in self.names}
        if self.cfg.positional_embedding == "sinusoidal":
            params["pos_embed.table"] = self.members[0].pos_embed.table
        device = params[self.names[0]].device
        m = len(states)
        loss_sums, correct = [0.0] * m, [0] * m
        for start in range(0, tokens.shape[1], batch_size):
            per_token, hits = _scored(
                self.cfg, params, tokens[:, start : start + batch_size].to(device), chunk
            )
            for i in range(m):  # one member's rows are the tensor _evaluate sums
                loss_sums[i] += float(per_token[i].sum())
                correct[i] += int(hits[i])
        n = tokens[0].numel()
        return [{"loss": loss_sums[i] / n, "acc": correct[i] / n} for i in range(m)]

    def best_model(self, m: int) -> HookedReverseEncoder:
        """Member m with its best validation weights (its last weights if it was never validated)."""
        model = HookedReverseEncoder(copy.deepcopy(self.cfg))
        state = self.best_state[m] if self.best_state[m] is not None else self.members[m].state_dict()
        model.load_state_dict(state)
        return model.eval()


# --- training -------------------------------------------------------------------------------------
def _member_args(argvs: Sequence[Sequence[str]]) -> list[TrainArgs]:
    from models.train_args import check_out

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


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ["epoch", "step", "train_acc", "train_loss", "val_acc", "val_loss"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def train_ensemble(
    argvs: Sequence[Sequence[str]], workdir: str | Path | None = None, callbacks: list | None = None
) -> list[Path]:
    """Train the members described by the ``models.train`` command lines ``argvs`` together; return
    their run folders, in the order of ``argvs``.

    Each member is written to ``workdir/<name>`` (default: its own ``--out``), which must not exist
    yet or be empty; its config.json records the member's command line as ``models.train`` would
    (``--out`` as given), which trains the same weights alone. ``ValueError`` on bad input, before any
    training; a failure later leaves the member folders unfinished (no metrics.json). ``callbacks``
    are extra Lightning callbacks (they see the :class:`EnsembleModule`).
    """
    import logging
    import warnings

    from models.train import QUIET_WARNINGS, _trainer_kwargs

    started = time.perf_counter()
    members = _member_args(argvs)
    first = members[0]
    folders = [Path(workdir if workdir is not None else a.out) / a.run_name for a in members]
    for folder in folders:
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise ValueError(f"{folder}: exists and is not empty (an ensemble trains new runs only)")

    quieted = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning_fabric")]
    levels = [logger.level for logger in quieted]
    previous_threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():
            for noise in QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=noise)
            for logger in quieted:
                logger.setLevel(logging.WARNING)
            if first.threads:
                torch.set_num_threads(first.threads)
            data = EnsembleData([a.seed for a in members], first)
            kwargs = _trainer_kwargs(first)
            kwargs.pop("gradient_clip_val")  # manual optimisation: clipped per member in training_step
            kwargs.update(logger=False, enable_checkpointing=False, enable_progress_bar=False)
            kwargs["callbacks"] = list(callbacks or [])
            try:
                trainer = pl.Trainer(**kwargs)
            except Exception as exc:  # Lightning rejecting --accelerator/--devices, as models.train says
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ValueError(f"--accelerator/--devices/--strategy/--num-nodes: {first_line}") from None
            max_iters = first.epochs * data.steps_per_epoch
            module = EnsembleModule(
                first.encoder_config(),
                [a.seed for a in members],
                lr=first.lr,
                warmup=first.warmup,
                max_iters=max_iters,
                stop_at_perfect=bool(first.stop_at_perfect),
                log_every_n_steps=trainer.log_every_n_steps,
            )
            fit_start = time.perf_counter()
            trainer.fit(module, datamodule=data)
            fit_seconds = time.perf_counter() - fit_start
            if trainer.interrupted:
                raise KeyboardInterrupt
            from models.train import TRAIN_EVAL_SEQUENCES

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
                    {
                        f"{split}_{k}": v
                        for split, results in evaluations.items()
                        for k, v in results[m].items()
                    },
                    a,
                    list(argv),
                    folder,
                    max_iters,
                    fit_seconds,
                    started,
                )
                for m, (a, argv, folder) in enumerate(zip(members, argvs, folders))
            ]
    finally:
        torch.set_num_threads(previous_threads)
        for logger, level in zip(quieted, levels):
            logger.setLevel(level)


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
    from models.checkpoints import save_model
    from models.train import TRAIN_EVAL_SEQUENCES, versions

    folder.mkdir(parents=True, exist_ok=True)
    command = ["python", "-m", "models.train", *map(str, argv)]
    _write_json(folder / "config.json", {**recorded_config(args), "command": command, "max_iters": max_iters})
    _write_json(folder / "versions.json", versions())
    model = module.best_model(m)
    metrics: dict[str, Any] = {}
    for split in ("train", "val", "test"):  # the key order of models.train's metrics.json
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
    best_step = module.best_step[m]
    metadata = {
        "seed": args.seed,
        "preset": args.preset,
        "training": recorded_config(args)["training"],
        "versions": versions(),
        "source_checkpoint": None,
        "step": steps if best_step is None else int(best_step),
        "metrics": metrics,
        "ensemble": ensemble,
    }
    save_model(model, folder / "model.pt", metadata)
    _write_log(folder / "logs" / "version_0" / "metrics.csv", module.history[m])
    metrics["wall_seconds"] = time.perf_counter() - started
    _write_json(folder / "metrics.json", metrics)  # last: its presence marks the run as finished
    return folder
