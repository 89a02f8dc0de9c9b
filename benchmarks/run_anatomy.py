"""Where a training run's time goes: one fast-preset run and a 5-seed ensemble, split into parts and set
next to the arithmetic's floor.

Both are trained in this process on one intra-op thread (``torch.set_num_threads(1)``, the toolkit's
default), after a warm-up run, and timed from Lightning's own hooks (a callback) and by wrapping the
checkpoint writer and the final evaluation:

  setup            train() called → Lightning's on_train_start (arguments, splits, Trainer, model, Adam)
  steps            on_train_batch_start → on_train_batch_end, summed: the optimisation steps in Lightning
  validation       on_validation_start → on_validation_end, without the checkpoint writes inside it
  checkpoints      the checkpoint writer (``AtomicCheckpointIO.save_checkpoint``: last.ckpt, best)
  data + loop      the rest of the fit: between batches (the next batch, Lightning's loop bookkeeping)
  final evaluation train (first 10k) / val / test metrics of the best weights (``_evaluate``)
  writing + other  the rest: Lightning's teardown, model.pt, metrics.json, logs

The steps are then split by the same steps replayed without Lightning (the same model, batches, clipping,
Adam and schedule, timed piece by piece): forward+backward, clipping, optimizer (Adam + schedule), and
"Lightning per step" = steps in Lightning − those three. The floor of each part is its FLOPs (counted by
``torch.utils.flop_counter.FlopCounterMode``: the matrix products) divided by this machine's measured
single-thread matmul rate (a 512×512 GEMM): what the part would cost if it were only its products at
the best rate this core reaches.

    python benchmarks/run_anatomy.py [--members 5] [--n-layers 1 --n-heads 1] [--clock wall|cpu]
                                     [--json out.json] [--out DIR]   (DIR/metrics.json: scripts/figures.py)

The figures need an idle machine (wall seconds; load average printed); the shares are what to read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


NOW = time.perf_counter  # --clock cpu: time.process_time (this process's CPU seconds: less moved by load)


class _Clock:
    """Sums of seconds per label, from start/stop pairs."""

    def __init__(self):
        self.total: dict[str, float] = {}
        self.open: dict[str, float] = {}

    def start(self, label: str) -> None:
        self.open[label] = NOW()

    def stop(self, label: str) -> None:
        self.total[label] = self.total.get(label, 0.0) + NOW() - self.open.pop(label)

    def mark(self, label: str) -> None:
        self.total[label] = NOW()


def _stopwatch(clock: _Clock):
    from models.train.lightning_import import pl

    class Stopwatch(pl.Callback):
        def on_train_start(self, trainer, module):
            clock.mark("train_start")

        def on_train_end(self, trainer, module):
            clock.mark("train_end")

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            clock.start("steps")

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            clock.stop("steps")

        def on_validation_start(self, trainer, module):
            clock.start("validation")

        def on_validation_end(self, trainer, module):
            clock.stop("validation")

    return Stopwatch()


def _wrap(owner, name: str, clock: _Clock, label: str):
    """Time every call of ``owner.name`` under ``label``; returns the original to restore."""
    original = getattr(owner, name)

    def timed(*args, **kwargs):
        clock.start(label)
        try:
            return original(*args, **kwargs)
        finally:
            clock.stop(label)

    setattr(owner, name, timed)
    return original


def matmul_rate(n: int = 512, repeats: int = 20) -> float:
    """FLOP/s of an n×n by n×n float32 GEMM on this thread: 2n³ per product, the best of ``repeats``."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best


def step_flops(cfg, batch: int, members: int = 1) -> tuple[float, float]:
    """(FLOPs of one training step's forward + backward, FLOPs of one sequence's forward) of
    ``members`` models of ``cfg`` (matrix products, as FlopCounterMode counts them)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from models import HookedReverseEncoder

    model = HookedReverseEncoder(cfg)
    tokens = torch.randint(0, cfg.d_vocab, (batch, cfg.n_ctx))
    with FlopCounterMode(display=False) as counter:
        HookedReverseEncoder.loss_fn(model(tokens), tokens).backward()
    train = counter.get_total_flops()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(tokens[:1])
    return members * train, members * counter.get_total_flops()


def replay(cfg, args, member_steps: list[int], seeds: list[int]) -> dict[str, float]:
    """The steps of a run (one member) or an ensemble (several: the stacked pass, members leaving it
    after their own steps) without Lightning: wall seconds of data, forward+backward, clipping, optimizer."""
    import torch

    from models import HookedReverseEncoder
    from models.encoder.stacked import stacked_logits, stacked_loss
    from models.train import lightning_module
    from models.train.datamodule import ReverseDataModule
    from models.train.ensemble_module import clip_per_member
    from models.train.lightning_import import pl
    from models.train.lightning_module import CosineWarmup

    max_iters = args.epochs * (args.train_size // args.batch_size)
    clock = _Clock()
    loaders = []
    models = []
    for seed in seeds:
        pl.seed_everything(seed, workers=True, verbose=False)
        models.append(HookedReverseEncoder(cfg))
        dm = ReverseDataModule(
            num_categories=cfg.d_vocab, seq_len=cfg.n_ctx, train_size=args.train_size,
            val_size=args.val_size, test_size=args.test_size, batch_size=args.batch_size, seed=seed,
        )  # fmt: skip
        loaders.append(iter(dm.train_dataloader()))
    if len(seeds) == 1:
        params = list(models[0].parameters())
    else:
        names = [n for n, _ in models[0].named_parameters()]
        params = [torch.nn.Parameter(torch.stack([dict(m.named_parameters())[n] for m in models]).detach())
                  for n in names]  # fmt: skip
    optimizer = torch.optim.Adam(params, lr=args.lr, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, CosineWarmup(args.warmup, max_iters))
    table = {"pos_embed.table": models[0].pos_embed.table} if cfg.positional_embedding == "sinusoidal" else {}
    for step in range(max(member_steps)):
        active = [i for i, s in enumerate(member_steps) if s > step]
        clock.start("data")
        batches = [next(loaders[i])[0] for i in range(len(seeds))]
        clock.stop("data")
        clock.start("forward+backward")
        if len(seeds) == 1:
            loss = HookedReverseEncoder.loss_fn(models[0](batches[0]), batches[0])
            grads = params
        else:
            tokens = torch.stack([batches[i] for i in active])
            rows = [p[active] if len(active) < len(seeds) else p for p in params]
            loss = stacked_loss(
                stacked_logits(cfg, {**dict(zip(names, rows)), **table}, tokens), tokens
            ).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clock.stop("forward+backward")
        clock.start("clipping")
        if len(seeds) == 1:
            torch.nn.utils.clip_grad_norm_(grads, lightning_module.CLIP_NORM)
        else:
            clip_per_member([p.grad for p in params], lightning_module.CLIP_NORM)
        clock.stop("clipping")
        clock.start("optimizer")
        optimizer.step()
        schedule.step()
        clock.stop("optimizer")
    return clock.total


def anatomy(kind: str, argvs: list[list[str]], rate: float) -> dict:
    """Train ``argvs`` (one run, or an ensemble's members) with the clocks on; the parts and floors."""
    import torch

    from models.train import atomic_checkpoint, cli, ensemble, ensemble_module
    from models.train.args import parse_args

    clock = _Clock()
    restore = [
        (atomic_checkpoint.AtomicCheckpointIO, "save_checkpoint",
         _wrap(atomic_checkpoint.AtomicCheckpointIO, "save_checkpoint", clock, "checkpoints")),
        (cli, "_evaluate", _wrap(cli, "_evaluate", clock, "final evaluation")),
        (ensemble_module.EnsembleModule, "evaluate",
         _wrap(ensemble_module.EnsembleModule, "evaluate", clock, "final evaluation")),
    ]  # fmt: skip
    started = NOW()
    try:
        clock.mark("called")
        if kind == "run":
            folders = [cli.train(argvs[0], callbacks=[_stopwatch(clock)])]
        else:
            folders = ensemble.train_ensemble(argvs, callbacks=[_stopwatch(clock)])
    finally:
        for owner, name, original in restore:
            setattr(owner, name, original)
    wall = NOW() - started
    t = clock.total
    metrics = [json.loads((f / "metrics.json").read_text()) for f in folders]
    fit_loop = t["train_end"] - t["train_start"]
    checkpoints = t.get("checkpoints", 0.0)
    parts = {
        "setup": t["train_start"] - t["called"],  # arguments, splits, Trainer, model, optimizer
        "steps": t["steps"],
        "validation": t.get("validation", 0.0) - checkpoints,
        "checkpoints": checkpoints,
        "data + loop": fit_loop - t["steps"] - t.get("validation", 0.0),
        "final evaluation": t.get("final evaluation", 0.0),
    }
    parts["writing + other"] = wall - sum(parts.values())
    args = parse_args(argvs[0]).resolve()
    cfg = args.encoder_config()
    steps = [m["steps"] for m in metrics]
    seeds = [parse_args(a).resolve().seed for a in argvs]
    split = replay(cfg, args, steps, seeds)
    arithmetic = {k: split[k] for k in ("forward+backward", "clipping", "optimizer")}
    train_flops, seq_flops = step_flops(cfg, args.batch_size)
    validations = sum(sum(1 for row in _log(f) if row.get("val_acc")) for f in folders)
    eval_sequences = len(folders) * (min(args.train_size, cli.TRAIN_EVAL_SEQUENCES) + args.test_size)
    eval_sequences += len(folders) * args.val_size if kind == "run" else 0  # the ensemble reuses its val
    floors = {
        "steps": sum(steps) * train_flops / rate,
        "validation": validations * args.val_size * seq_flops / rate,
        "final evaluation": eval_sequences * seq_flops / rate,
    }
    return {
        "kind": kind,
        "members": len(argvs),
        "member_steps": steps,
        "wall_seconds": round(wall, 3),
        "parts": {k: round(v, 3) for k, v in parts.items()},
        "steps_split": {
            **{k: round(v, 3) for k, v in arithmetic.items()},
            "Lightning per step": round(t["steps"] - sum(arithmetic.values()), 3),
            "data (replayed)": round(split["data"], 3),
        },
        "floor_seconds": {k: round(v, 4) for k, v in floors.items()},
        "flops": {"train_step_per_member": train_flops, "forward_per_sequence": seq_flops},
        "threads": torch.get_num_threads(),
    }


def _log(folder: Path) -> list[dict[str, str]]:
    import csv

    with (folder / "logs" / "version_0" / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def show(result: dict) -> None:
    wall = result["wall_seconds"]
    label = "one run" if result["kind"] == "run" else f"ensemble of {result['members']}"
    print(f"\n{label}: {wall:.2f} s, steps {result['member_steps']}")
    print(f"{'part':<22} {'seconds':>8} {'share':>6} {'floor s':>8}")
    for part, seconds in result["parts"].items():
        floor = result["floor_seconds"].get(part)
        shown = f"{floor:8.3f}" if floor is not None else f"{'':>8}"
        print(f"{part:<22} {seconds:8.3f} {seconds / wall:6.1%} {shown}")
    print("  steps, replayed without Lightning:")
    for part, seconds in result["steps_split"].items():
        print(f"  {part:<20} {seconds:8.3f} {seconds / wall:6.1%}")
    floor = sum(result["floor_seconds"].values())
    print(f"arithmetic floor of the whole run: {floor:.3f} s ({floor / wall:.1%} of its wall time)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, default=5, help="seeds in the ensemble (5)")
    p.add_argument("--n-layers", default="1")
    p.add_argument("--n-heads", default="1")
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall seconds (an idle machine), or this process's CPU seconds (a busy one)",
    )
    p.add_argument("--json", type=Path, help="also write the numbers here")
    p.add_argument("--out", type=Path, help="also write OUT/metrics.json (scripts/figures.py reads it)")
    p.add_argument("--quiet", action="store_true", help="print nothing")
    args = p.parse_args(argv)
    global NOW
    NOW = time.perf_counter if args.clock == "wall" else time.process_time
    import torch

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="run_anatomy_"))
    arch = ["--n-layers", args.n_layers, "--n-heads", args.n_heads]

    def member(seed: int, folder: str) -> list[str]:
        return ["--preset", "fast", "--seed", str(seed), "--out", str(root / folder), "--name", f"s{seed}",
                "--no-progress-bar", *arch]  # fmt: skip

    from models.train.cli import train

    load_before = os.getloadavg()
    train(member(99, "warm"))  # imports and first calls out of the way
    rate = matmul_rate()
    result = {
        "clock": args.clock,
        "matmul_flops_per_second": rate,
        "run": anatomy("run", [member(0, "run")], rate),
        "ensemble": anatomy("ensemble", [member(s, "ensemble") for s in range(args.members)], rate),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    result["provenance"] = {
        "seed": 0,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python benchmarks/run_anatomy.py " + " ".join(argv or sys.argv[1:]),
    }
    if not args.quiet:
        print(f"clock: {args.clock} seconds")
        print(f"single-thread matmul rate: {rate / 1e9:.1f} GFLOP/s (512×512 GEMM)")
        show(result["run"])
        show(result["ensemble"])
        print(f"load average before {load_before}, after {result['loadavg_after']}")
    text = json.dumps(result, indent=2) + "\n"
    if args.json:
        args.json.write_text(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
