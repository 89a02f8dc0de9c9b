"""The LightningModule of a seed ensemble (``models.train.ensemble``): M encoders of one architecture, one
per seed, trained in one stacked forward and backward (``models.encoder.stacked``).

Manual optimisation: one Adam whose parameter groups are the members (its moments and step counts
are per member), gradient clipping at ``CLIP_NORM`` per member, the cosine schedule; after every validation
a member at 100% is frozen (it leaves the stacked pass, so Adam leaves it and its state untouched), and
each member keeps the weights of its first best validation. See ``models.train.ensemble`` for why a member
stays the run it would be alone.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from models.encoder.config import EncoderConfig
from models.encoder.hooked import HookedReverseEncoder
from models.encoder.stacked import stacked_logits, stacked_loss
from models.train import lightning_module
from models.train.lightning_import import pl
from models.train.lightning_module import CosineWarmup

__all__ = ["EnsembleModule"]


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
        for seed in self.seeds:  # the initialisation models.train.cli gives this seed
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
        for m in active:  # each member's own norm, as models.train.cli clips one model's gradients
            torch.nn.utils.clip_grad_norm_(self.members[m].parameters(), lightning_module.CLIP_NORM)
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
            record[0] += float(per_token[i].sum())  # as models.train.cli._evaluate sums one model's batch
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
        ``models.train.cli._evaluate`` for all members at once, with the same sums over the same batches of
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
