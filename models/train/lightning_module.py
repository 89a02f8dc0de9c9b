"""Lightning wrapper that trains :class:`models.HookedReverseEncoder` with the tutorial's recipe.

Loss: cross entropy over every position against ``tokens.flip(-1)`` (``HookedReverseEncoder.loss_fn``).
Optimiser: Adam. Schedule (the tutorial's ``CosineWarmupScheduler``), stepped after every optimizer
step with the step s counted from 0::

    factor(s) = 0.5 · (1 + cos(π · s / max_iters)) · (s / warmup if s < warmup else 1)
    lr(s)     = base_lr · factor(s)

so the very first update uses lr 0, exactly as the tutorial's does. Gradient clipping at
:data:`CLIP_NORM` (the total norm of one model's gradients) is the Trainer's ``gradient_clip_val``.
The checkpoint's ``hyper_parameters`` hold only plain types, with the encoder's config under
``"config"``, so ``models.load_model`` can rebuild the encoder from a .ckpt.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from machine.limits import iter_log_spaced_steps
from models.encoder.config import EncoderConfig
from models.encoder.hooked import HookedReverseEncoder
from models.train.lightning_import import pl

# The recipe's gradient clipping: ``models.train.cli`` passes it as ``gradient_clip_val``, and an ensemble
# (``models.train.ensemble_module``) clips each member's gradients to it; both read it here when they train.
CLIP_NORM = 5.0


def cosine_warmup_factor(step: int, warmup: int, max_iters: int) -> float:
    """The tutorial's lr multiplier at optimizer step ``step`` (counted from 0); see the module doc."""
    factor = 0.5 * (1 + math.cos(math.pi * step / max_iters))
    if step < warmup:
        factor *= step / warmup
    return factor


class CosineWarmup:
    """``cosine_warmup_factor`` as a picklable callable for ``LambdaLR`` (its state is two ints)."""

    def __init__(self, warmup: int, max_iters: int):
        self.warmup, self.max_iters = warmup, max_iters

    def __call__(self, step: int) -> float:
        return cosine_warmup_factor(step, self.warmup, self.max_iters)


def token_accuracy(logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]) -> Tensor:
    """Share of right positions, ``mean(argmax logits[b, i] == tokens[b, N-1-i])``."""
    return (logits.argmax(-1) == tokens.flip(-1)).float().mean()


class ReverseTaskModule(pl.LightningModule):
    """Owns the encoder as ``self.model``; every metric is logged as ``{train,val,test}_{loss,acc}``."""

    def __init__(
        self,
        config: dict[str, Any] | EncoderConfig | None = None,
        lr: float = 5e-4,
        warmup: int = 50,
        max_iters: int = 3900,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
    ):
        super().__init__()
        cfg = config if isinstance(config, EncoderConfig) else EncoderConfig.from_dict(dict(config or {}))
        if not float(lr) > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}")
        if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
            raise ValueError(f"max_iters must be a positive integer, got {max_iters!r}")
        if float(weight_decay) < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.save_hyperparameters(
            {
                "config": cfg.to_dict(),
                "lr": float(lr),
                "warmup": int(warmup),
                "max_iters": int(max_iters),
                "betas": [float(b) for b in betas],
                "weight_decay": float(weight_decay),
            }
        )
        self.model = HookedReverseEncoder(cfg)

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
        return self.model(tokens)

    def _step(self, batch: Any, stage: str) -> Tensor:
        tokens = batch[0] if isinstance(batch, (tuple, list)) else batch
        logits = self.model(tokens)
        loss = HookedReverseEncoder.loss_fn(logits, tokens)
        if stage == "train":
            # Each self.log call costs about 0.6 ms of Lightning bookkeeping, as much as a forward
            # pass of this model, so training metrics are logged only on the steps the logger writes.
            if (self.global_step + 1) % max(1, self.trainer.log_every_n_steps) == 0:
                self.log("train_loss", loss, on_step=True, on_epoch=False)
                self.log("train_acc", token_accuracy(logits.detach(), tokens), on_step=True, on_epoch=False)
            return loss
        # batch_size makes the epoch aggregate a size-weighted mean: exactly the split's accuracy.
        n = tokens.shape[0]
        acc = token_accuracy(logits, tokens)
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        self.log(
            f"{stage}_acc", acc, on_step=False, on_epoch=True, batch_size=n, sync_dist=True, prog_bar=True
        )
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        # fused: one kernel for all parameters instead of a Python loop over them (0.31 -> 0.08 ms per
        # step on CPU for this model, ~5% of a batch-128 step); the update is Adam's all the same.
        fused = all(p.device.type in ("cpu", "cuda") for p in self.parameters())
        optimizer = torch.optim.Adam(
            self.parameters(), lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay, fused=fused
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, CosineWarmup(hp.warmup, hp.max_iters))
        # interval "step": the tutorial steps its scheduler after every optimizer step, not per epoch.
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def log_spaced_steps(max_steps: int, per_decade: int) -> list[int]:
    """Steps 0 and round(10^(k / per_decade)) for k = 0, 1, ... up to ``max_steps`` (duplicates removed).

    ``per_decade = 4`` gives 0, 1, 2, 3, 6, 10, 18, 32, 56, 100, ...: dense early, where training
    dynamics change fastest, and sparse later.
    """
    if isinstance(per_decade, bool) or not isinstance(per_decade, int) or per_decade < 1:
        raise ValueError(f"per_decade must be a positive integer, got {per_decade!r}")
    return list(iter_log_spaced_steps(max_steps, per_decade))  # one iteration per step, any per_decade


class StopAtPerfect(pl.Callback):
    """Records the first validation with accuracy 1.0 (step and seconds since training started) and,
    when ``stop`` is set, ends training there."""

    def __init__(self, stop: bool = True, monitor: str = "val_acc"):
        self.stop, self.monitor = stop, monitor
        self.first_perfect_step: int | None = None
        self.seconds_to_perfect: float | None = None
        self.start_step = 0  # global step of the checkpoint this fit resumed from (0 for a new run)
        self.stopped = False  # whether this callback ended the training
        self._start = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()
        if self.stopped:  # restored: the interrupted run had stopped here (see state_dict)
            trainer.should_stop = True

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Read from the checkpoint, not from trainer.global_step in on_train_start: Lightning skips
        # on_train_start when the restored loops have no step left (a run killed after its last step
        # but before metrics.json), which left start_step at 0.
        self.start_step = int(checkpoint.get("global_step", 0))

    # Saved in checkpoints, so that a resumed run still knows when it first reached 100%, and whether
    # it had already decided to stop there: a run killed after that decision (last.ckpt written) but
    # before its metadata stops again at once when resumed, so it records the steps, stop reason and
    # stopped_at_perfect of an uninterrupted run instead of training on to the next validation.
    def state_dict(self) -> dict[str, Any]:
        return {
            "first_perfect_step": self.first_perfect_step,
            "seconds_to_perfect": self.seconds_to_perfect,
            "stopped": self.stopped,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.first_perfect_step = state_dict.get("first_perfect_step")
        self.seconds_to_perfect = state_dict.get("seconds_to_perfect")
        self.stopped = bool(state_dict.get("stopped", False)) and self.stop

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None or float(value) < 1.0:
            return
        if self.first_perfect_step is None:
            self.first_perfect_step = trainer.global_step
            self.seconds_to_perfect = time.perf_counter() - self._start
        if self.stop:
            trainer.should_stop = self.stopped = True


class SnapshotCallback(pl.Callback):
    """Saves the encoder (``models.save_model`` format) after the optimizer steps in ``steps``,
    as ``folder/step_XXXXXX.pt``; step 0 is the initialisation. When training ends, the weights it
    ended with are saved too (metadata ``"final": True``) unless that step already has a snapshot, so
    the last point of a training curve is always a snapshot, whatever stopped the run."""

    def __init__(self, folder: str | Path, steps: list[int], metadata: dict[str, Any] | None = None):
        self.folder, self.steps, self.metadata = Path(folder), set(steps), dict(metadata or {})

    def _save(self, trainer: pl.Trainer, pl_module: ReverseTaskModule, final: bool = False) -> None:
        step = trainer.global_step
        path = self.folder / f"step_{step:06d}.pt"
        if (final or step in self.steps) and trainer.is_global_zero and not path.exists():
            from models.storage.checkpoints import save_model

            metadata = {**self.metadata, "step": step, "epoch": trainer.current_epoch}
            save_model(pl_module.model, path, {**metadata, "final": True} if final else metadata)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._save(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer, pl_module, final=True)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning skips the training loop, on_train_end included, when a resumed run has no step
        # left (killed between its last step and the final snapshot); on_fit_end always runs.
        self._save(trainer, pl_module, final=True)


class LastCheckpoint(pl.callbacks.Checkpoint):
    """Writes ``path`` (a full Lightning checkpoint) after every validation and when training stops.

    Lightning's own ``save_last`` only follows a top-k save, i.e. only when val accuracy improved, so a
    killed run could fall back many validations. ``models.train.cli`` gives its Trainer an
    :class:`models.train.atomic_checkpoint.AtomicCheckpointIO`: the file is written beside its target and
    renamed, so a kill or a full disk during the write leaves the previous ``last.ckpt`` intact.

    A run stopped by ``max_steps`` or ``max_time`` is saved at the end of its last batch, where the
    loops' state says "mid-epoch" and a later run with a larger budget continues exactly; a save from
    ``on_train_end`` would record the epoch as finished and the continuation would skip its remainder.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.sanity_checking:
            return
        # weights_only=False: the full checkpoint (optimizer, schedule, loop state) that resuming needs;
        # it holds tensors and plain values only, so it is read back with torch.load(weights_only=True).
        trainer.save_checkpoint(self.path, weights_only=False)  # every rank calls it; only rank 0 writes

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        capped = trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps
        if capped or trainer.should_stop:  # should_stop here: set by the max_time Timer
            self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs:
            self._save(trainer)  # the final weights of a run that used its whole epoch budget


class RunCheckpoint(pl.callbacks.ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` whose restored state follows its run folder when that moves.

    Lightning records absolute paths (``best_model_path``, ``best_k_models``, ``kth_best_model_path``,
    ``last_model_path``). Resumed in another folder (a copied or moved run), it keeps only
    ``best_model_path``, which still names the *old* folder, and forgets the top-k scores, so the next
    validation would be saved as the best whatever its accuracy and the old best file would never be
    removed. Here each recorded file is mapped to the same file name in this callback's folder, files
    missing there are dropped, and the best / k-th best are recomputed from what is left: a resumed run
    reads and writes only its own ``checkpoints/``.
    """

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's own key, so that checkpoints written before this subclass still restore it.
        key = super().state_key
        return pl.callbacks.ModelCheckpoint.__qualname__ + key[len(type(self).__qualname__) :]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        recorded = state_dict.get("dirpath")
        if self.dirpath is None or recorded is None or recorded == self.dirpath:
            super().load_state_dict(state_dict)
            return

        def here(path: str) -> str:  # the same file name in this run's checkpoints/
            return os.path.join(self.dirpath, os.path.basename(path)) if path else path

        kept = {
            here(path): score
            for path, score in (state_dict.get("best_k_models") or {}).items()
            if os.path.isfile(here(path))
        }
        super().load_state_dict(
            {
                **state_dict,
                "dirpath": self.dirpath,
                "best_k_models": kept,
                "last_model_path": here(state_dict.get("last_model_path", "")),
            }
        )
        # As ModelCheckpoint's own top-k update does: the best file by score, and the worst one kept.
        best, worst = (max, min) if self.mode == "max" else (min, max)
        if kept:
            self.best_model_path = best(kept, key=kept.__getitem__)
            self.best_model_score = kept[self.best_model_path]
            self.kth_best_model_path = worst(kept, key=kept.__getitem__)
            self.kth_value = kept[self.kth_best_model_path]
        else:
            self.best_model_path, self.best_model_score, self.kth_best_model_path = "", None, ""
            self.kth_value = torch.tensor(-torch.inf if self.mode == "max" else torch.inf)
