"""Train a grid of encoders (a "model zoo"): ``python -m models.zoo --out DIR [flags] [-- train flags]``.

Default grid: seeds 0..4 × heads {1, 2, 4} × layers {1, 2} × positional encoding {sinusoidal, learned},
``fast`` preset, plus a control without positional encoding (``none``; 1 head, 1 layer, every seed): 65
runs. Each run is an ordinary ``models.train`` run folder ``DIR/<preset>_<pe>_L<layers>_H<heads>_seed<s>``.

Resumable: the grid runs one run after the other through :func:`models.train.train`, which leaves
finished runs alone and continues interrupted ones from their ``checkpoints/last.ckpt``, so a killed zoo
is continued by the same command. ``DIR/zoo.json`` (rewritten atomically after every run) records the
grid, the training flags and each run's status: ``new``/``partial``/``finished`` before, then
``trained``/``resumed``/``skipped``/``continued``.

Several GPUs or nodes: ``--accelerator/--devices/--strategy/--num-nodes`` go to every run's Lightning
Trainer; runs stay sequential (each uses all devices), no scheduler of our own. Flags after ``--`` go
to ``models.train`` unchanged (e.g. ``-- --train-size 5000 --max-steps 300``); the grid's own flags
(seed, heads, layers, positional encoding, out, name, preset) cannot be given there.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "zoo.json"
SCHEMA_VERSION = 1
GRID_FLAGS = ("--seed", "--n-heads", "--n-layers", "--positional-embedding", "--out", "--name", "--preset")


@dataclass(frozen=True)
class ZooRun:
    """One cell of the grid."""

    name: str
    seed: int
    n_heads: int
    n_layers: int
    positional_embedding: str
    role: str  # "grid" or "control"


@dataclass
class ZooSpec:
    """The grid. ``train_args`` are extra ``models.train`` flags applied to every run."""

    seeds: int = 5
    heads: tuple[int, ...] = (1, 2, 4)
    layers: tuple[int, ...] = (1, 2)
    positional_embeddings: tuple[str, ...] = ("sinusoidal", "learned")
    control: bool = True
    preset: str = "fast"
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    train_args: list[str] = field(default_factory=list)

    def runs(self) -> list[ZooRun]:
        """Every run, grid first (architecture-major, seeds inner), then the controls."""
        from models.config import POSITIONAL_EMBEDDINGS

        for name, values in (("seeds", [self.seeds]), ("heads", self.heads), ("layers", self.layers)):
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise ValueError(f"--{name}: expected positive integers, got {list(values)}")
        for pe in self.positional_embeddings:
            if pe not in POSITIONAL_EMBEDDINGS:
                raise ValueError(
                    f"--positional-embeddings: unknown {pe!r} (choose from {POSITIONAL_EMBEDDINGS})"
                )
        runs = [
            self._run(seed, h, n_layers, pe, "grid")
            for pe in dict.fromkeys(self.positional_embeddings)
            for n_layers in sorted(set(self.layers))
            for h in sorted(set(self.heads))
            for seed in range(self.seeds)
        ]
        if self.control and "none" not in self.positional_embeddings:
            runs += [
                self._run(s, min(self.heads), min(self.layers), "none", "control") for s in range(self.seeds)
            ]
        return runs

    def _run(self, seed: int, n_heads: int, n_layers: int, pe: str, role: str) -> ZooRun:
        name = f"{self.preset}_{pe}_L{n_layers}_H{n_heads}_seed{seed}"
        return ZooRun(name, seed, n_heads, n_layers, pe, role)

    def train_argv(self, run: ZooRun, out: Path) -> list[str]:
        """The ``models.train`` command line of one run."""
        return [
            "--preset",
            self.preset,
            "--seed",
            str(run.seed),
            "--n-heads",
            str(run.n_heads),
            "--n-layers",
            str(run.n_layers),
            "--positional-embedding",
            run.positional_embedding,
            "--out",
            str(out),
            "--name",
            run.name,
            "--accelerator",
            self.accelerator,
            "--devices",
            str(self.devices),
            "--strategy",
            self.strategy,
            "--num-nodes",
            str(self.num_nodes),
            "--no-progress-bar",
            *self.train_args,
        ]


def _check_train_args(args: Sequence[str]) -> None:
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in GRID_FLAGS:
            raise ValueError(f"{arg}: the zoo sets {flag} itself; use the zoo's own options")


def _state(run_dir: Path) -> tuple[str, int | None]:
    """("finished" | "partial" | "new", metrics.json mtime) from the files a run folder holds."""
    metrics = run_dir / "metrics.json"
    if (run_dir / "model.pt").is_file() and metrics.is_file():
        return "finished", metrics.stat().st_mtime_ns
    return ("partial" if (run_dir / "config.json").is_file() else "new"), None


def _rank_zero() -> bool:
    """True outside distributed training and on the global rank 0 process inside it."""
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def _write_manifest(out: Path, spec: ZooSpec, records: list[dict[str, Any]]) -> None:
    document = {
        "schema_version": SCHEMA_VERSION,
        "kind": "reverse-encoder-zoo",
        "spec": asdict(spec),
        "runs": records,
        "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    tmp = out / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(tmp, out / MANIFEST)


def check_plan(out: Path, spec: ZooSpec) -> list[ZooRun]:
    """The runs of ``spec``, after every check a zoo makes before its first run trains (``--list``
    makes the same): the grid, its size against the free space on ``out`` (before the plan is built:
    ``--seeds 10**9`` would otherwise fill the memory with run names), every run's ``models.train``
    flags (against this machine too) and ``out`` itself."""
    from models.limits import free_bytes, run_disk_bytes, size, trained_weights
    from models.train import parse_args

    _check_train_args(spec.train_args)
    seeds = spec.seeds
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"--seeds: expected positive integers, got [{seeds}]")
    per_seed = dataclasses.replace(spec, seeds=1).runs()  # each architecture once (and the control)
    started = {p.name for p in out.iterdir() if (p / "config.json").is_file()} if out.is_dir() else set()
    need = new = 0
    for run in per_seed:  # count the runs not started yet without listing every run
        stem = run.name.removesuffix("0")  # <preset>_<pe>_L<layers>_H<heads>_seed
        seed_of = (name[len(stem) :] for name in started if name.startswith(stem))
        done = sum(1 for seed in seed_of if seed.isdigit() and int(seed) < seeds)
        weights = trained_weights(parse_args(spec.train_argv(run, out)).resolve().encoder_config())
        need += (seeds - done) * run_disk_bytes(weights)
        new += seeds - done
    if need > (free := free_bytes(out)):
        raise ValueError(
            f"--seeds {seeds}: {new:,} new runs need at least {size(need)} for their run folders "
            f"(model.pt and two checkpoints each), more than the {size(free)} free on --out {out}"
        )
    runs = spec.runs()
    for run in runs:  # every run's flags are checked before the first one trains
        parse_args(spec.train_argv(run, out)).resolve()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    return runs


def run_zoo(
    out: str | Path, spec: ZooSpec | None = None, log: Callable[[str], None] | None = None
) -> list[dict]:
    """Train (or skip, or continue) every run of ``spec`` under ``out``; return one record per run:
    the :class:`ZooRun` fields plus ``before``, ``status``, ``seconds`` and the run's final metrics.

    Every run's arguments are checked before the first run starts (``ValueError`` on bad input)."""
    spec = ZooSpec() if spec is None else spec
    out = Path(out)
    runs = check_plan(out, spec)
    created = []  # folders made here: removed again if they are still empty when the zoo fails
    folder = out
    while not folder.exists() and folder.parent != folder:
        created.append(folder)
        folder = folder.parent
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(
            f"--out {out}: cannot create the folder ({e.strerror or type(e).__name__})"
        ) from None
    try:
        return _train_runs(out, spec, runs, log)
    except BaseException:  # e.g. Lightning rejecting --devices/--strategy before the first run
        for folder in created:  # deepest first; rmdir leaves any folder that holds something
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _train_runs(
    out: Path, spec: ZooSpec, runs: list[ZooRun], log: Callable[[str], None] | None
) -> list[dict]:
    from models.train import train

    say = log if (log is not None and _rank_zero()) else (lambda message: None)
    records = [{**asdict(run), "before": _state(out / run.name)[0], "status": "pending"} for run in runs]
    started = time.perf_counter()
    for i, (run, record) in enumerate(zip(runs, records), 1):
        run_dir = out / run.name
        before, stamp = _state(run_dir)
        t0 = time.perf_counter()
        train(spec.train_argv(run, out))  # a list, so that config.json records the command
        seconds = time.perf_counter() - t0
        after, new_stamp = _state(run_dir)
        if after != "finished":  # a --max-time window ran out, or a non-zero rank returned early
            status = "interrupted"
        elif before == "finished":
            status = "skipped" if new_stamp == stamp else "continued"
        else:
            status = "trained" if before == "new" else "resumed"
        record.update(status=status, seconds=round(seconds, 3))
        if after == "finished":
            metrics = json.loads((run_dir / "metrics.json").read_text())
            record.update({k: metrics.get(k) for k in ("val_acc", "test_acc", "steps", "first_perfect_step")})
        if _rank_zero():
            _write_manifest(out, spec, records)
        detail = f"val acc {record['val_acc']:.4f}, {record['steps']} steps" if "val_acc" in record else ""
        say(f"[{i}/{len(runs)}] {run.name}: {status} in {seconds:.1f} s {detail}".rstrip())
    say(f"zoo: {len(runs)} runs in {time.perf_counter() - started:.1f} s → {out}")
    return records


def _ints(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise ValueError(message)


def _path(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path")
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m models.zoo", description="Train a grid of reverse-task encoders (resumable).")
    p.add_argument("--out", required=True, type=_path, help="folder holding one run folder per grid cell")
    p.add_argument("--seeds", type=_ints, default=5, help="seeds 0..N-1 (default 5)")
    p.add_argument("--heads", type=_ints, nargs="+", default=[1, 2, 4])
    p.add_argument("--layers", type=_ints, nargs="+", default=[1, 2])
    p.add_argument("--positional-embeddings", nargs="+", default=["sinusoidal", "learned"])
    p.add_argument(
        "--control",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add positional encoding 'none' (smallest architecture, every seed)",
    )
    p.add_argument("--preset", default="fast", help="models.train preset (default fast)")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--devices", default="auto")
    p.add_argument("--strategy", default="auto")
    p.add_argument("--num-nodes", type=_ints, default=1)
    p.add_argument("--list", action="store_true", help="print the runs and their state; train nothing")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    try:
        args = build_parser().parse_args(own)
        spec = ZooSpec(
            seeds=args.seeds,
            heads=tuple(args.heads),
            layers=tuple(args.layers),
            positional_embeddings=tuple(args.positional_embeddings),
            control=args.control,
            preset=args.preset,
            accelerator=args.accelerator,
            devices=args.devices,
            strategy=args.strategy,
            num_nodes=args.num_nodes,
            train_args=extra,
        )
        if args.list:  # the plan is checked exactly as a real run checks it
            for run in check_plan(args.out, spec):
                print(f"{run.name:<40} {_state(args.out / run.name)[0]}")  # noqa: T201  (CLI)
            return 0
        run_zoo(args.out, spec, log=lambda message: print(message, file=sys.stderr, flush=True))  # noqa: T201
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except (ValueError, OSError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)  # noqa: T201
        return 2
    except KeyboardInterrupt:
        print("error: interrupted (run the same command to continue)", file=sys.stderr)  # noqa: T201
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
