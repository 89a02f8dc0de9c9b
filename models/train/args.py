"""The arguments of ``python -m models.train``: presets, the :class:`TrainArgs` dataclass and its checks,
the command-line parser, and what a run folder's config.json records of them.

No Lightning or torch import here: ``--help`` and bad input answer at once, and other code (the zoo)
checks every run's flags before the first one trains. The presets' rationale is in ``models.train.cli``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from machine.limits import check_training
from machine.names import output_path_problem, path_component
from models.encoder.config import NORMALIZATIONS, POSITIONAL_EMBEDDINGS, EncoderConfig

__all__ = [
    "ENCODER_FIELDS",
    "PRESETS",
    "RUNTIME_FIELDS",
    "TrainArgs",
    "build_parser",
    "changed_fields",
    "check_out",
    "parse_args",
    "parse_max_time",
    "recorded_config",
]

PRESETS: dict[str, dict[str, Any]] = {
    "tutorial": dict(
        lr=5e-4, warmup=50, batch_size=128, epochs=10, val_check_interval=1.0, stop_at_perfect=False
    ),
    # Tuned on a 2-core CPU (see models.train.cli's docstring): reaches 100% val accuracy in ~120-160 steps.
    "fast": dict(lr=7e-3, warmup=10, batch_size=32, epochs=1, val_check_interval=20, stop_at_perfect=True),
}
ENCODER_FIELDS = (
    "n_layers", "n_heads", "d_model", "d_mlp", "d_vocab", "n_ctx",
    "positional_embedding", "normalization", "dropout", "input_dropout",
)  # fmt: skip
# Fields that say where, how and how long a run executes, not what it computes: they may change when
# a run is continued (a larger --max-steps, another --max-time window, other devices).
RUNTIME_FIELDS = (
    "accelerator", "devices", "strategy", "num_nodes", "max_time", "max_steps", "threads", "progress_bar",
    "out", "name", "overwrite",
)  # fmt: skip


@dataclass
class TrainArgs:
    """Everything a run needs. ``None`` means "the preset's value" (or EncoderConfig's default)."""

    preset: str = "tutorial"
    seed: int = 0
    # encoder (models.EncoderConfig)
    n_layers: int | None = None
    n_heads: int | None = None
    d_model: int | None = None
    d_mlp: int | None = None
    d_vocab: int | None = None  # number of digit categories
    n_ctx: int | None = None  # sequence length
    positional_embedding: str | None = None
    normalization: str | None = None
    dropout: float | None = None
    input_dropout: float | None = None
    # recipe
    lr: float | None = None
    warmup: int | None = None
    batch_size: int | None = None
    epochs: int | None = None
    max_steps: int | None = None
    train_size: int = 50_000
    val_size: int = 1_000
    test_size: int = 10_000
    val_check_interval: int | float | None = None  # int: every N steps; float: fraction of an epoch
    stop_at_perfect: bool | None = None
    threads: int = 1  # intra-op CPU threads; 0 = torch's default (see benchmarks/train_speed.py)
    save_every_log_steps: int | None = None  # snapshots per decade of steps
    # where and how
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    max_time: str | None = None
    progress_bar: bool = True
    out: str = "runs"
    name: str | None = None
    overwrite: bool = False

    def resolve(self) -> TrainArgs:
        """A copy with every preset value filled in and every field checked (``ValueError`` otherwise)."""
        if self.preset not in PRESETS:
            raise ValueError(f"--preset: unknown preset {self.preset!r} (choose from {', '.join(PRESETS)})")
        values = dataclasses.asdict(self)
        for key, value in PRESETS[self.preset].items():
            if values[key] is None:
                values[key] = value
        args = TrainArgs(**values)
        _check_encoder(args)
        try:
            args.encoder_config()  # EncoderConfig checks the rest of the architecture
        except ValueError as exc:  # e.g. more weights than it builds: name the flags that asked for them
            given = [f"{_flag(f)} {getattr(args, f)}" for f in ENCODER_FIELDS if getattr(self, f) is not None]
            raise ValueError(f"{' '.join(given) or '--preset ' + args.preset}: {exc}") from None
        _check(args)
        check_training(args)  # counts against this machine's memory, cores and free disk
        return args

    def encoder_config(self) -> EncoderConfig:
        fields = {k: getattr(self, k) for k in ENCODER_FIELDS if getattr(self, k) is not None}
        return EncoderConfig(**fields)

    @property
    def run_name(self) -> str:
        return self.name or f"{self.preset}-seed{self.seed}"


# Encoder fields whose command-line flag is not "--" + the field name with dashes.
_FLAGS = {"d_vocab": "--num-categories", "n_ctx": "--seq-len"}


def _flag(field: str) -> str:
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


def _check_encoder(a: TrainArgs) -> None:
    """The EncoderConfig checks, phrased with the flags the user typed (``--seq-len 0: ...``)."""
    for field in ("n_layers", "n_heads", "d_model", "d_mlp", "d_vocab", "n_ctx"):
        value = getattr(a, field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{_flag(field)} {value}: must be a positive integer")
    for field in ("dropout", "input_dropout"):
        value = getattr(a, field)
        if value is not None and not 0.0 <= float(value) < 1.0:
            raise ValueError(f"{_flag(field)} {value}: must be in [0, 1)")
    defaults = {f.name: f.default for f in dataclasses.fields(EncoderConfig)}
    d_model = a.d_model if a.d_model is not None else defaults["d_model"]
    n_heads = a.n_heads if a.n_heads is not None else defaults["n_heads"]
    if d_model % n_heads:
        raise ValueError(f"--d-model {d_model}: not divisible by --n-heads {n_heads}")
    table = defaults["pe_max_len"]  # rows of the sinusoidal table: positions past it have no encoding
    sinusoidal = (a.positional_embedding or defaults["positional_embedding"]) == "sinusoidal"
    if sinusoidal and a.n_ctx is not None and a.n_ctx > table:
        raise ValueError(f"--seq-len {a.n_ctx}: longer than the sinusoidal encoding's {table} positions")


def _check(a: TrainArgs) -> None:
    def positive(field: str, allow_zero: bool = False, allow_none: bool = False) -> None:
        value = getattr(a, field)
        if value is None and allow_none:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
            kind = "a non-negative" if allow_zero else "a positive"
            raise ValueError(f"{_flag(field)}: must be {kind} integer, got {value!r}")

    for field in ("batch_size", "epochs", "train_size", "val_size", "test_size", "num_nodes"):
        positive(field)
    for field in ("seed", "warmup", "threads"):
        positive(field, allow_zero=True)
    if a.seed > 2**32 - 1:
        raise ValueError(f"--seed: must be at most {2**32 - 1} (numpy's seed range), got {a.seed}")
    positive("max_steps", allow_none=True)
    positive("save_every_log_steps", allow_none=True)
    if not (isinstance(a.lr, (int, float)) and a.lr > 0 and a.lr == a.lr and a.lr != float("inf")):
        raise ValueError(f"--lr: must be a positive number, got {a.lr!r}")
    if a.batch_size > a.train_size:
        raise ValueError(f"--batch-size: {a.batch_size} is larger than --train-size {a.train_size}")
    vci = a.val_check_interval
    if isinstance(vci, bool) or not isinstance(vci, (int, float)):
        raise ValueError(f"--val-check-interval: must be a number, got {vci!r}")
    if isinstance(vci, int) and vci < 1 or isinstance(vci, float) and not 0 < vci <= 1:
        raise ValueError(
            f"--val-check-interval: {vci!r} is neither a step count >= 1 nor an epoch fraction in (0, 1]"
        )
    if a.max_time is not None:
        parse_max_time(a.max_time)
    devices = str(a.devices)
    if not (
        devices == "auto" or devices.lstrip("-").isdigit() or all(p.isdigit() for p in devices.split(","))
    ):
        raise ValueError(f"--devices: expected 'auto', a count or a list like 0,1; got {devices!r}")
    if not str(a.out).strip():
        raise ValueError("--out: empty path (name the parent folder of the run folder)")
    path_component(a.name if a.name is not None else a.run_name, "--name")  # "" is refused, not the default


def parse_max_time(text: str) -> timedelta:
    """'DD:HH:MM:SS' or a number of seconds → timedelta (``ValueError`` naming --max-time)."""
    try:
        if ":" in str(text):
            days, hours, minutes, seconds = (int(p) for p in str(text).split(":"))
            value = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        else:
            value = timedelta(seconds=float(text))
    except (ValueError, OverflowError):
        raise ValueError(f"--max-time: expected DD:HH:MM:SS or seconds, got {text!r}") from None
    if value.total_seconds() <= 0:
        raise ValueError(f"--max-time: must be positive, got {text!r}")
    return value


# --------------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse that raises ``ValueError`` (one line) instead of printing usage and exiting."""

    def error(self, message: str):
        raise ValueError(message)


def _count(text: str) -> int:
    """An integer, also written 1e12 or 1_000_000 (how people type large counts)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"invalid count {text!r}")
    return int(value)


def _interval(text: str) -> int | float:
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m models.train", description="Train the reverse-task encoder.")
    p.add_argument("--preset", default="tutorial", help="tutorial | fast (default tutorial)")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("encoder (default: the tutorial's, d_model 32, 1 head, 1 layer)")
    g.add_argument("--n-layers", type=int)
    g.add_argument("--n-heads", type=int)
    g.add_argument("--d-model", type=int)
    g.add_argument("--d-mlp", type=int, help="default 2 * d_model")
    g.add_argument("--num-categories", "--d-vocab", dest="d_vocab", type=int, help="digit categories (10)")
    g.add_argument("--seq-len", "--n-ctx", dest="n_ctx", type=int, help="sequence length (16)")
    g.add_argument("--positional-embedding", choices=POSITIONAL_EMBEDDINGS)
    g.add_argument("--normalization", choices=NORMALIZATIONS)
    g.add_argument("--dropout", type=float)
    g.add_argument("--input-dropout", type=float)
    g = p.add_argument_group("recipe (default: the preset's)")
    g.add_argument("--lr", type=float)
    g.add_argument("--warmup", type=_count, help="linear warm-up steps of the cosine schedule")
    g.add_argument("--batch-size", type=_count)
    g.add_argument("--epochs", type=_count, help="epoch budget; max_iters = epochs * steps per epoch")
    g.add_argument("--max-steps", type=_count, help="stop after this many optimizer steps")
    g.add_argument("--train-size", type=_count, default=50_000)
    g.add_argument("--val-size", type=_count, default=1_000)
    g.add_argument("--test-size", type=_count, default=10_000)
    g.add_argument("--val-check-interval", type=_interval, help="N steps (int) or fraction of an epoch")
    g.add_argument(
        "--stop-at-perfect",
        action=argparse.BooleanOptionalAction,
        help="stop at the first 100%% val accuracy (default: on for fast, off for tutorial)",
    )
    g.add_argument(
        "--threads",
        type=_count,
        default=1,
        help="CPU intra-op threads (default 1: weights independent of the core count); 0 = torch default",
    )
    g.add_argument("--save-every-log-steps", type=_count, metavar="K", help="encoder snapshots, K per decade")
    g = p.add_argument_group("where and how")
    g.add_argument("--accelerator", default="auto")
    g.add_argument("--devices", default="auto")
    g.add_argument("--strategy", default="auto")
    g.add_argument("--num-nodes", type=_count, default=1)
    g.add_argument("--max-time", help="wall-clock budget, DD:HH:MM:SS or seconds")
    g.add_argument("--progress-bar", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument("--out", default="runs", help="parent folder of the run folder (runs/)")
    g.add_argument("--name", help="run folder name (default <preset>-seed<seed>)")
    g.add_argument("--overwrite", action="store_true", help="retrain even if the run has finished")
    return p


def parse_args(argv: list[str] | None = None) -> TrainArgs:
    return TrainArgs(**vars(build_parser().parse_args(argv)))


# --------------------------------------------------------------------------------------------------
def recorded_config(args: TrainArgs) -> dict[str, Any]:
    """What config.json records of a resolved run: preset, seed, encoder config and the recipe."""
    training = {k: v for k, v in dataclasses.asdict(args).items() if k not in ENCODER_FIELDS}
    return {
        "preset": args.preset,
        "seed": args.seed,
        "encoder": args.encoder_config().to_dict(),
        "training": training,
    }


def changed_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Names of the fields (outside RUNTIME_FIELDS) whose values differ between two config.json."""
    a = {**old.get("encoder", {}), **old.get("training", {})}
    b = {**new.get("encoder", {}), **new.get("training", {})}
    ignored = (*RUNTIME_FIELDS, "device")
    return sorted(k for k in set(a) | set(b) if k not in ignored and a.get(k) != b.get(k))


def check_out(out: Path) -> None:
    """Fail before writing anything if ``out`` cannot hold a run folder."""
    problem = output_path_problem(out)
    if problem is not None:
        raise ValueError(f"--out {problem}")
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"--out {out}: {probe} exists and is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: {probe} is not writable")
