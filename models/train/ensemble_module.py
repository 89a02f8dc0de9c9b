"""The LightningModule of a seed ensemble (``models.train.ensemble``): M encoders of one architecture, one
per seed, trained in one stacked forward and backward (``models.encoder.stacked``).

The trained parameters are the members' parameters stacked on a leading model axis, one leaf tensor
``[M_active, *shape]`` per parameter name (``stack``); each member's own ``nn.Parameter`` is a view of its
row, so ``members[m]`` always holds member m's live weights and nothing is stacked or split per step.
Manual optimisation: one fused Adam over the stacked tensors (Adam is per element and every active member
has taken the same number of steps, so this is each member's own Adam), gradient clipping at
``CLIP_NORM`` per member (each member's own gradient norm, over its rows), the cosine schedule; after
every validation a member at 100% is frozen: the stacks and Adam's moments shrink to the members still
training (the frozen member's parameters keep viewing the old rows, which nothing updates any more), and
each member keeps the weights of its first best validation. See ``models.train.ensemble`` for why a
member stays the run it would be alone.

Snapshots (``snapshot_steps``): the members' weights after the optimizer steps listed, and each member's
weights when it stops (metadata ``"final": True`` unless that step is already listed), kept in memory
and written by ``models.train.ensemble`` into each member's ``snapshots/`` as ``models.train.cli`` writes
a run's.
"""

from __future__ import annotations

import copy
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from models.encoder.config import EncoderConfig
from models.encoder.hooked import HookedReverseEncoder
from models.encoder.stacked import Layer0, eval_logits, layer0_tables, stacked_logits, stacked_loss
from models.train import lightning_module
from models.train.lightning_import import pl
from models.train.lightning_module import CosineWarmup

__all__ = ["EVAL_CHUNK", "EnsembleModule", "clip_per_member"]

# Sequences (over all models) per stacked evaluation forward. Measured on this project's 2-core AMD EPYC,
# one thread, 5 fast-preset members (µs per sequence and member, L1 H1 / L2 H4): 256 per model (1,280)
# 9.4 / 28.6, 128 (640) 8.7 / 25.0, 96 (480) 8.1 / 22.2, 64 (320) 8.2 / 22.7, 32 (160) 9.0 / 23.7.
EVAL_CHUNK = 400


@torch.no_grad()
def _scored(
    cfg: EncoderConfig,
    params: dict[str, Tensor],
    batch: Tensor,
    chunk: int | None = None,
    tables: Layer0 | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-token losses ``[M, b, pos]`` and correct tokens ``[M]`` of the stacked models on ``batch
    [M, b, pos]``, computed in chunks of ``chunk`` sequences per model (default: ``EVAL_CHUNK`` // M, so
    that a chunk's activations stay in the CPU's cache whatever M; every number is the one the whole
    batch would give) by :func:`models.encoder.stacked.eval_logits`
    (layer 0 looked up in ``tables``, built here when not given)."""
    m = batch.shape[0]
    chunk = chunk or max(1, EVAL_CHUNK // m)
    if tables is None:
        tables = layer0_tables(cfg, params, batch.shape[-1])
    losses, hits = [], torch.zeros(m, dtype=torch.long, device=batch.device)
    for first in range(0, batch.shape[1], chunk):
        part = batch[:, first : first + chunk]
        logits = eval_logits(cfg, params, part, tables)
        targets = part.flip(-1)
        per_token = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1).transpose(1, 2), targets.flatten(0, 1), reduction="none"
        )
        losses.append(per_token.view(m, -1, part.shape[-1]))
        hits += (logits.argmax(-1) == targets).flatten(1).sum(1)
    return torch.cat(losses, 1), hits


@torch.no_grad()
def clip_per_member(grads: Sequence[Tensor], max_norm: float) -> Tensor:
    """Scale each member's gradients (row m of every ``grads[i] [M, ...]``) as
    ``torch.nn.utils.clip_grad_norm_(member_m.parameters(), max_norm)`` scales one model's:

        n_m = ‖(‖grads[i][m]‖₂)_i‖₂,   grads[i][m] ← grads[i][m] · min(1, max_norm / (n_m + 1e-6))

    in place; returns the norms ``n [M]``."""
    per_tensor = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])  # [T, M]
    norms = torch.linalg.vector_norm(per_tensor, dim=0)
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))
    return norms


class EnsembleModule(pl.LightningModule):
    """M encoders of one architecture and recipe, one per seed, trained in one stacked pass.

    ``members[m]`` is an ordinary ``HookedReverseEncoder`` holding member m's live weights; ``active``
    lists the members still training, in the order of the rows of ``stack``. ``adam_steps[m]``: the
    Adam steps member m took. Manual optimisation: one fused Adam over the stacked tensors."""

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
        snapshot_steps: Sequence[int] = (),
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
        m = len(self.seeds)
        self.active = list(range(m))
        self.stack: list[torch.nn.Parameter] = []  # built in configure_optimizers, on the fit's device
        self.steps = [0] * m  # optimizer steps each member took
        self.adam_steps = [0] * m  # Adam's own step count of each member's rows
        self.best_acc: list[float] = [-math.inf] * m
        self.best_state: list[dict[str, Tensor] | None] = [None] * m
        self.best_step: list[int | None] = [None] * m
        self.best_val: list[dict[str, float] | None] = [None] * m  # its validation: the final val metrics
        self.first_perfect_step: list[int | None] = [None] * m
        self.seconds_to_perfect: list[float | None] = [None] * m
        self.stopped = [False] * m
        self.history: list[list[dict[str, Any]]] = [[] for _ in range(m)]  # logs/.../metrics.csv rows
        self.snapshot_steps = set(snapshot_steps)
        self.snapshots: list[dict[int, tuple[dict[str, Tensor], dict[str, Any]]]] = [{} for _ in range(m)]
        self._val: dict[int, list[float]] = {}
        self._start = 0.0

    # --- the stacked parameters ------------------------------------------------------------------
    def _member_params(self, m: int) -> dict[str, torch.nn.Parameter]:
        return dict(self.members[m].named_parameters())

    def _restack(self, members: Sequence[int]) -> list[torch.nn.Parameter]:
        """New leaf tensors stacking ``members``' current weights; each member's parameters become views
        of its row."""
        stack = []
        for name in self.names:
            rows = torch.stack([self._member_params(m)[name].detach() for m in members])
            stack.append(torch.nn.Parameter(rows))
        for i, m in enumerate(members):
            params = self._member_params(m)
            for name, tensor in zip(self.names, stack):
                params[name].data = tensor.data[i]
        return stack

    def stacked_params(self, members: Sequence[int] | None = None) -> dict[str, Tensor]:
        """The parameters of ``members`` (default: the active ones, i.e. the trained stack) stacked on a
        leading axis, as ``stacked_logits`` takes them."""
        members = self.active if members is None else list(members)
        if self.stack and members == self.active:
            params = dict(zip(self.names, self.stack))
        else:
            params = {n: torch.stack([self._member_params(m)[n] for m in members]) for n in self.names}
        if self.cfg.positional_embedding == "sinusoidal":
            params["pos_embed.table"] = self.members[0].pos_embed.table
        return params

    def forward(self, tokens: Tensor, members: Sequence[int] | None = None) -> Tensor:
        """Logits ``[len(members), batch, pos, d_vocab]`` of ``members`` (default: all) on
        ``tokens[len(members), batch, pos]``."""
        members = range(len(self.seeds)) if members is None else members
        return stacked_logits(self.cfg, self.stacked_params(list(members)), tokens)

    def configure_optimizers(self) -> dict[str, Any]:
        self.stack = self._restack(self.active)
        fused = all(p.device.type in ("cpu", "cuda") for p in self.stack)
        optimizer = torch.optim.Adam(self.stack, lr=self.lr, betas=self.betas, weight_decay=0.0, fused=fused)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, CosineWarmup(self.warmup, self.max_iters))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _shrink(self, keep: Sequence[int]) -> None:
        """Train only the members ``keep`` (a subsequence of ``active``) from now on: their rows of the
        stacks and of Adam's moments, the same step count."""
        rows = [self.active.index(m) for m in keep]
        optimizer = self.optimizers().optimizer
        old, state = self.stack, optimizer.state
        self.stack = self._restack(keep) if keep else []
        index = torch.tensor(rows, dtype=torch.long, device=old[0].device)
        new_state: dict = defaultdict(dict)
        for before, after in zip(old, self.stack):
            if before in state:
                new_state[after] = {
                    k: v.index_select(0, index) if k in ("exp_avg", "exp_avg_sq") else v.clone()
                    for k, v in state[before].items()
                }
        optimizer.state = new_state
        optimizer.param_groups[0]["params"] = list(self.stack)
        self.active = list(keep)

    # --- training ----------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        self._start = time.perf_counter()
        self._snapshot(self.active, 0)

    def _snapshot(self, members: Sequence[int], step: int, final: bool = False) -> None:
        if not (self.snapshot_steps and (final or step in self.snapshot_steps)):
            return
        epoch = self.current_epoch
        for m in members:
            if step not in self.snapshots[m]:
                state = {k: v.detach().clone() for k, v in self.members[m].state_dict().items()}
                meta = {"step": step, "epoch": epoch, **({"final": True} if final else {})}
                self.snapshots[m][step] = (state, meta)

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        active = self.active
        tokens = batch[active] if len(active) < batch.shape[0] else batch
        logits = stacked_logits(self.cfg, self.stacked_params(), tokens)
        losses = stacked_loss(logits, tokens)
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(losses.sum())  # d(sum)/d(member m's row) = member m's own gradient
        clip_per_member([p.grad for p in self.stack], lightning_module.CLIP_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.lr_schedulers().step()
        step = self.global_step
        adam_steps = int(optimizer.optimizer.state[self.stack[0]]["step"])
        for m in active:
            self.steps[m], self.adam_steps[m] = step, adam_steps
        self._snapshot(active, step)
        if step % max(1, self.log_every) == 0:
            acc = (logits.detach().argmax(-1) == tokens.flip(-1)).float().mean((1, 2)).tolist()
            loss = losses.detach().tolist()
            for i, m in enumerate(active):
                self.history[m].append({"step": step, "train_loss": loss[i], "train_acc": acc[i]})

    def on_train_end(self) -> None:
        self._snapshot(self.active, self.global_step, final=True)

    def on_validation_epoch_start(self) -> None:
        self._val = {m: [0.0, 0, 0] for m in self.active}  # loss sum, correct, tokens

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        active = list(self._val)
        tokens = batch[active] if len(active) < batch.shape[0] else batch
        per_token, correct = _scored(self.cfg, self.stacked_params(active), tokens)
        hits = correct.tolist()
        for i, m in enumerate(active):
            record = self._val[m]
            record[0] += float(per_token[i].sum())  # as models.train.cli._evaluate sums one model's batch
            record[1] += hits[i]
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
        done = [m for m in self.active if self.stopped[m]]
        if done:  # their training ends here: the weights they stop with, and out of the stacks
            self._snapshot(done, step, final=True)
            self._shrink([m for m in self.active if not self.stopped[m]])
        if not self.active:
            self.trainer.should_stop = True

    # --- the results -------------------------------------------------------------------------------
    def best_states(self) -> list[dict[str, Tensor]]:
        """Every member's best validation weights (its last weights if it was never validated)."""
        return [
            best if best is not None else member.state_dict()
            for best, member in zip(self.best_state, self.members)
        ]

    @torch.no_grad()
    def evaluate(
        self, tokens: Tensor, batch_size: int = 1024, chunk: int | None = None
    ) -> list[dict[str, float]]:
        """Each member's mean loss and token accuracy with its best weights on ``tokens[M, n, pos]``:
        ``models.train.cli._evaluate`` for all members at once, with the same sums over the same batches of
        ``batch_size``; the logits are :func:`models.encoder.stacked.eval_logits`' (layer 0 looked up per
        token and position), equal to one model's forward to float32 rounding, not bit for bit; each
        batch is computed in chunks (``_scored``)."""
        states = self.best_states()
        params = {name: torch.stack([state[name] for state in states]) for name in self.names}
        if self.cfg.positional_embedding == "sinusoidal":
            params["pos_embed.table"] = self.members[0].pos_embed.table
        device = params[self.names[0]].device
        m = len(states)
        loss_sums, correct = [0.0] * m, [0] * m
        tables = layer0_tables(self.cfg, params, tokens.shape[-1])
        for start in range(0, tokens.shape[1], batch_size):
            batch = tokens[:, start : start + batch_size].to(device)
            per_token, hits = _scored(self.cfg, params, batch, chunk, tables)
            hits = hits.tolist()
            for i in range(m):  # one member's rows are the tensor _evaluate sums
                loss_sums[i] += float(per_token[i].sum())
                correct[i] += hits[i]
        n = tokens[0].numel()
        return [{"loss": loss_sums[i] / n, "acc": correct[i] / n} for i in range(m)]

    def best_model(self, m: int) -> HookedReverseEncoder:
        """Member m with its best validation weights (its last weights if it was never validated)."""
        model = HookedReverseEncoder(copy.deepcopy(self.cfg))
        state = self.best_state[m] if self.best_state[m] is not None else self.members[m].state_dict()
        model.load_state_dict(state)
        return model.eval()
