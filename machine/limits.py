"""What this machine can do, so that a count flag beyond it is refused before any work, in one line.

Today's failures this prevents: ``--train-size 10**12`` allocating tokens until the process dies,
``--threads 100000`` crashing torch, ``--devices 100000`` on a CPU spawning a process per device,
``--num-nodes 2`` without a cluster waiting forever for other nodes, ``--save-every-log-steps 10**9``
looping over a billion exponents, ``models.zoo.cli --seeds 10**9`` building a plan of 13 billion runs.

Each check compares a *lower bound* of what the request needs with what the machine has, so a request
that could run is never refused:

- memory (physical RAM, or the cgroup's limit when lower): the run's token tensors (int64), the
  model's weights with their gradients and Adam's two moments (4 x 4 bytes per trained weight), and
  one attention pattern per layer of a training batch, which backpropagation keeps;
- CPU cores available to this process (``sched_getaffinity``): ``--threads``, CPU ``--devices``;
- free space where a new run folder goes: ``model.pt`` and two Lightning checkpoints (the weights, then
  the weights and Adam's moments twice) and one snapshot per ``--save-every-log-steps`` step (a run
  being continued was checked when it began; a zoo counts only the runs it has not started).

Time budgets (``--epochs``, ``--max-steps``, ``--warmup``, ``--val-check-interval``) are not
resources: a large one runs long, and ``--max-time`` bounds it. No torch import here (only when a
request asks for more devices than cores, to count GPUs).
"""

from __future__ import annotations

import functools
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Environment variables of the launchers Lightning can run on several nodes with (its own, torchrun,
# SLURM, LSF, MPI): without one of them, every node waits for the others forever.
MULTI_NODE_ENV = ("MASTER_ADDR", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "LSB_JOBID", "OMPI_COMM_WORLD_SIZE")
EVAL_BATCH = 1024  # models.train.datamodule.EVAL_BATCH_SIZE (not imported: that module imports Lightning)


def size(n: float) -> str:
    """Bytes in words: 512 B, 3.2 MiB, 119.2 TiB."""
    for unit, scale in (
        ("PiB", 1 << 50),
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


@functools.lru_cache(maxsize=1)
def memory_bytes() -> int:
    """Physical memory, or the cgroup (v2 or v1) limit of this process when that is lower."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


@functools.lru_cache(maxsize=1)
def cpu_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def free_bytes(folder: str | os.PathLike) -> int:
    """Free space of the file system that holds (or will hold) ``folder``."""
    probe = Path(folder).absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return 1 << 62  # cannot tell: the write itself will say so


def iter_log_spaced_steps(max_steps: int, per_decade: int) -> Iterator[int]:
    """The distinct steps ``round(10 ** (k / per_decade)) <= max_steps`` for k = 0, 1, ... in
    increasing order, after step 0. Jumps over the exponents that round to a step already given, so it
    takes one iteration per step, not ``per_decade`` per decade (10**9 per decade used to loop for
    hours)."""
    yield 0
    k = 0
    while (step := round(10 ** (k / per_decade))) <= max_steps:
        yield step
        # The first exponent whose value reaches step + 0.5 (one less, against rounding in log10).
        k = max(k + 1, math.ceil(per_decade * math.log10(step + 0.5)) - 1)
        while round(10 ** (k / per_decade)) <= step:
            k += 1


def trained_weights(cfg: Any) -> int:
    """Weights that get gradients and Adam moments: everything but the sinusoidal table (a buffer)."""
    table = cfg.pe_max_len * cfg.d_model if cfg.positional_embedding == "sinusoidal" else 0
    return cfg.num_elements() - table


def check_training(args: Any) -> None:
    """``ValueError`` naming the flag when a resolved :class:`models.train.args.TrainArgs` asks for
    more than this machine has (see the module docstring)."""
    cores = cpu_cores()
    if args.threads > cores:
        raise ValueError(
            f"--threads {args.threads}: this machine has {cores} CPU core(s) for this process; use at "
            f"most {cores} (or 0 for torch's default)"
        )
    _check_devices(args, cores)
    if args.num_nodes > 1 and not any(os.environ.get(name) for name in MULTI_NODE_ENV):
        raise ValueError(
            f"--num-nodes {args.num_nodes}: no multi-node launcher found (set MASTER_ADDR, MASTER_PORT and "
            "NODE_RANK on every node, or start with SLURM or torchrun); without one every node waits for "
            "the others forever"
        )
    cfg = args.encoder_config()
    weights = trained_weights(cfg)
    eval_batch = min(EVAL_BATCH, max(args.val_size, args.test_size, args.train_size))
    parts = {  # lower bounds, in bytes, of what the run keeps in memory at once
        "tokens": 8 * cfg.n_ctx * (args.train_size + args.val_size + args.test_size) + 8 * args.train_size,
        "model": 4 * (4 * weights + (cfg.num_elements() - weights)),
        # Backpropagation keeps each layer's pattern of a training batch; evaluation holds one layer's.
        "attention": 4 * cfg.n_heads * cfg.n_ctx**2 * max(cfg.n_layers * args.batch_size, eval_batch),
    }
    need, have = sum(parts.values()), memory_bytes()
    if need > have:
        flags = {
            "tokens": max(
                (
                    ("--train-size", args.train_size),
                    ("--val-size", args.val_size),
                    ("--test-size", args.test_size),
                ),
                key=lambda item: item[1],
            ),
            "model": ("--d-model", cfg.d_model),
            "attention": ("--seq-len", cfg.n_ctx),
        }
        flag, value = flags[max(parts, key=parts.__getitem__)]
        detail = ", ".join(f"{name} {size(n)}" for name, n in parts.items())
        raise ValueError(
            f"{flag} {value}: this run needs at least {size(need)} of memory ({detail}), more than this "
            f"machine's {size(have)}"
        )
    run = Path(args.out) / args.run_name
    if not (run / "config.json").exists():  # a new run (one being continued was checked when it began)
        _check_disk(args, weights)


def _check_devices(args: Any, cores: int) -> None:
    devices = str(args.devices)
    if not devices.isdigit() or int(devices) <= cores or args.accelerator not in ("cpu", "auto"):
        return  # 'auto', -1, index lists and GPU counts: Lightning checks those against the hardware
    count = int(devices)
    if args.accelerator == "auto":
        import torch  # only here: is there a GPU per requested device?

        if torch.cuda.is_available() and torch.cuda.device_count() >= count:
            return
    raise ValueError(
        f"--devices {count}: this machine has {cores} CPU core(s) for this process and not {count} GPUs; a "
        f"CPU run starts one process per device, so use at most {cores}"
    )


def run_disk_bytes(weights: int) -> int:
    """Lower bound of a finished run folder: model.pt (the weights) and two full Lightning checkpoints
    (the weights and Adam's two moments), 7 x 4 bytes per trained weight."""
    return 7 * 4 * weights


def _check_disk(args: Any, weights: int) -> None:
    free = free_bytes(Path(args.out))
    need = run_disk_bytes(weights)
    if need > free:
        raise ValueError(
            f"--out {args.out}: the run folder needs at least {size(need)} (model.pt and two checkpoints) "
            f"but only {size(free)} are free there"
        )
    if not args.save_every_log_steps:
        return
    snapshot = 4 * weights
    budget = args.max_steps or args.epochs * max(1, args.train_size // args.batch_size)
    count = log_spaced_count_lower_bound(budget, args.save_every_log_steps)
    if need + count * snapshot > free:
        raise ValueError(
            f"--save-every-log-steps {args.save_every_log_steps}: at least {count:,} snapshots of "
            f"{size(snapshot)} over {budget:,} steps, more than the {size(free)} free on --out {args.out}"
        )


def log_spaced_count_lower_bound(max_steps: int, per_decade: int) -> int:
    """At least how many steps :func:`iter_log_spaced_steps` gives, in closed form (no iteration).

    Consecutive values 10^(k/K) differ by v (10^(1/K) - 1), at most 1 up to v0 = 1 / (10^(1/K) - 1):
    every integer step up to v0 is hit; past v0 each exponent gives a new step, K log10(max / v0) more.
    """
    v0 = 1 / math.expm1(math.log(10) / per_decade)
    dense = max(0, min(max_steps, math.floor(v0) - 1))
    sparse = max(0, math.floor(per_decade * math.log10(max_steps / v0)) - 2) if max_steps > v0 else 0
    return 1 + dense + sparse
