"""Train a grid of encoders (a "model zoo"): ``python -m models.zoo --out DIR [flags] [-- train flags]``.

Default grid: seeds 0..4 × heads {1, 2, 4} × layers {1, 2} × positional encoding {sinusoidal, learned},
``fast`` preset, plus a control without positional encoding (``none``; 1 head, 1 layer, every seed): 65
runs; ``--d-model``, ``--seq-len`` and ``--num-categories`` take lists too (``models.zoo.plan``). Each run
is an ordinary ``models.train.cli`` run folder ``DIR/<preset>_<pe>_L<layers>_H<heads>_seed<s>``.

Engines. ``--engine ray`` (default) runs the plan's tasks as Ray tasks (``machine.cluster``): without
``--address`` on an embedded local Ray instance sized to this machine (loopback only, no dashboard,
stopped afterwards); with ``--address auto|HOST:PORT`` on a running cluster. Each task trains in a
temporary folder on its worker and returns the run folders' files; the driver writes them into DIR
atomically, so DIR needs to exist on the driver only. ``--cpus-per-task`` / ``--gpus-per-task``
(fractional: 0.25 lets four tasks share a GPU) are each task's Ray resources; inside, Lightning picks the
accelerator (``--accelerator auto``), and a task given a GPU that finds no CUDA fails saying so. A
worker that dies mid-task is retried by Ray (``--max-retries``). ``--engine sequential`` trains the
tasks one after the other in this process, without importing Ray (debugging; the benchmark baseline).

Seeds train together (``--ensemble``, default): runs that differ only in seed are one task, a
vectorised ensemble (``models.train.ensemble``, at most ``--max-ensemble`` members) whose members are saved
as ordinary run folders, trained with the recipe of the seeds trained alone: equal to them to float32
rounding at each step, statistically equivalent once trained, not bit for bit (docs/reproducibility.md;
``--no-ensemble`` trains every run alone).

Resumable: finished runs (``model.pt`` matching its recorded sha256 + a well-formed ``metrics.json``) are
skipped, and a run whose files fail that check is ``corrupt`` and trained again; an interrupted run folder (a
killed ``--engine sequential --no-ensemble`` zoo trains in place) is continued from its
``checkpoints/last.ckpt``; a run that was on its way when the zoo was killed is trained again (same
seed, same weights). ``DIR/zoo.json`` (rewritten atomically after every task) records the grid, the
engine and, per run: its state before, ``status`` (trained / resumed / continued / skipped / failed /
interrupted), the task it belonged to (``ensemble_size``, and ``ensemble_members``: with whom it
trained), ``engine``, ``node_id``, ``hostname``, ``node_ip``, ``attempts``, ``seconds`` (the task's wall
time on its worker) and ``kernels`` (the worker's CPU, ATen capability and BLAS: which runs are
bit-comparable; a run skipped later keeps what the command that trained it recorded), and the
``reproducibility`` contract.

A task that fails (e.g. Lightning rejecting ``-- --devices 0``) is reported with its runs' names; the
other tasks go on, and the zoo exits with status 1. Ctrl-C stops the tasks still running (the zoo's
Ray job ends with it); finished runs stay, and no half-written folder is left. ``--list`` prints
the plan and its estimated time from the throughput this machine measured last
(``models.zoo.plan.estimate``).

Flags after ``--`` go to ``models.train.cli`` unchanged (e.g. ``-- --train-size 5000 --max-steps 300``); the
grid's own flags (seed, heads, layers, positional encoding, d-model, seq-len, num-categories, out,
name, preset) cannot be given there, in any spelling ``models.train.cli`` accepts (``--see`` for
``--seed``: they are parsed by its parser). SIGTERM ends the zoo as Ctrl-C does (``error: terminated``,
143), and every process of the embedded Ray instance ends with the zoo, even after ``kill -9``
(``machine.reaper``); see docs/reliability.md.

This module is the command line; the plan is ``models.zoo.plan``, the driver (:func:`run_zoo`,
:class:`ZooEngine`) ``models.zoo.engine``, one task on a worker ``models.zoo.task``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from machine import cluster, termination
from models.train.args import _Parser
from models.zoo.engine import ENGINES, MANIFEST, ZooEngine, ZooTaskError, check_plan, run_zoo
from models.zoo.plan import GRID_FLAGS, ZooRun, ZooSpec, check_train_args, estimate, plan_tasks, run_state

__all__ = ["GRID_FLAGS", "MANIFEST", "ZooEngine", "ZooRun", "ZooSpec", "ZooTaskError", "main", "run_zoo"]


def _integer_at_least(low: int, kind: str):
    """An argparse type: an integer ≥ ``low``, refused as "expected a <kind> integer, got ..."."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {value}")
        return value

    parse.__name__ = f"{kind.replace('-', '_')}_int"  # argparse's "invalid <name> value" fallback
    return parse


_positive_int = _integer_at_least(1, "positive")
_non_negative_int = _integer_at_least(0, "non-negative")


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value == value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _path(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path")
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m models.zoo", description="Train a grid of reverse-task encoders (resumable).")
    p.add_argument("--out", required=True, type=_path, help="folder holding one run folder per grid cell")
    g = p.add_argument_group("the grid")
    g.add_argument("--seeds", type=_positive_int, default=5, help="seeds 0..N-1 (default 5)")
    g.add_argument("--heads", type=_positive_int, nargs="+", default=[1, 2, 4])
    g.add_argument("--layers", type=_positive_int, nargs="+", default=[1, 2])
    g.add_argument("--positional-embeddings", nargs="+", default=["sinusoidal", "learned"])
    g.add_argument("--d-model", type=_positive_int, nargs="+", default=[32], help="model widths (32)")
    g.add_argument("--seq-len", type=_positive_int, nargs="+", default=[16], help="sequence lengths (16)")
    g.add_argument(
        "--num-categories", type=_positive_int, nargs="+", default=[10], help="digit categories (10)"
    )
    g.add_argument(
        "--control",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add positional encoding 'none' (smallest architecture, every seed)",
    )
    g.add_argument("--preset", default="fast", help="models.train preset (default fast)")
    g = p.add_argument_group("the engine")
    g.add_argument(
        "--engine", choices=ENGINES, default="ray", help="ray (default) or sequential (this process)"
    )
    g.add_argument("--address", help="join a running Ray cluster: auto or HOST:PORT (default: embedded Ray)")
    g.add_argument("--cpus-per-task", type=_number, default=1.0, help="Ray CPUs per task (default 1)")
    g.add_argument("--gpus-per-task", type=_number, default=0.0, help="Ray GPUs per task, fractional (0)")
    g.add_argument(
        "--ensemble",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train runs that differ only in seed together (default on)",
    )
    g.add_argument("--max-ensemble", type=_positive_int, default=8, help="members per ensemble task (8)")
    g.add_argument(
        "--max-retries", type=_non_negative_int, default=3, help="Ray retries of a dead worker (3)"
    )
    g = p.add_argument_group("Lightning inside each run")
    g.add_argument("--accelerator", default="auto")
    g.add_argument("--devices", default="auto")
    g.add_argument("--strategy", default="auto")
    g.add_argument("--num-nodes", type=_positive_int, default=1)
    p.add_argument(
        "--list", action="store_true", help="print the plan, its state and estimated time; train nothing"
    )
    return p


def _list(out: Path, spec: ZooSpec, engine: ZooEngine) -> None:
    runs = check_plan(out, spec)  # exactly as a real run checks it
    states = {run.name: run_state(out / run.name, spec.train_argv(run, out))[0] for run in runs}
    for run in runs:
        print(f"{run.name:<48} {states[run.name]}")
    todo = [run for run in runs if states[run.name] != "finished"]
    slots = 1
    if engine.engine == "ray" and engine.address is None:  # the embedded instance: every CPU here
        slots = max(1, int((engine.num_cpus or os.cpu_count() or 1) / engine.cpus_per_task))
    tasks = plan_tasks(
        spec, todo, out, ensemble=engine.ensemble, max_ensemble=engine.max_ensemble, slots=slots
    )
    print(
        f"\n{len(runs)} runs, {len(runs) - len(todo)} finished; {len(todo)} to train in {len(tasks)} tasks:"
    )
    total = sum(task.work for task in tasks) or 1.0
    for task in tasks:  # longest predicted first, the order they start in
        how = f"ensemble of {len(task.runs)}" if task.ensemble else f"alone ({task.note})"
        print(f"  {task.name:<52} {how:<24} {100 * task.work / total:5.1f}% of the predicted work")
    seconds, source = estimate(engine.engine, engine.ensemble, len(todo))
    print(f"estimated time on the {engine.engine} engine: {cluster.format_seconds(seconds)} ({source})")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    say = lambda message: print(message, file=sys.stderr, flush=True)
    with termination.handling_sigterm():  # SIGTERM unwinds like Ctrl-C (Ray's wait included)
        return _main(own, extra, say)


def _main(own: list[str], extra: list[str], say: Callable[[str], None]) -> int:
    try:
        args = build_parser().parse_args(own)
        spec = ZooSpec(
            seeds=args.seeds,
            heads=tuple(args.heads),
            layers=tuple(args.layers),
            positional_embeddings=tuple(args.positional_embeddings),
            d_models=tuple(args.d_model),
            seq_lens=tuple(args.seq_len),
            num_categories=tuple(args.num_categories),
            control=args.control,
            preset=args.preset,
            accelerator=args.accelerator,
            devices=args.devices,
            strategy=args.strategy,
            num_nodes=args.num_nodes,
            train_args=extra,
        )
        engine = ZooEngine(
            engine=args.engine,
            address=args.address,
            cpus_per_task=args.cpus_per_task,
            gpus_per_task=args.gpus_per_task,
            ensemble=args.ensemble,
            max_ensemble=args.max_ensemble,
            max_retries=args.max_retries,
        )
        engine.check()
        check_train_args(extra)
        if args.list:
            _list(args.out, spec, engine)
            return 0
        run_zoo(args.out, spec, log=say, engine=engine)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except (ValueError, OSError) as exc:
        message = cluster.first_line(exc)
        say(f"error: {message}")
        return 2
    except ZooTaskError as exc:
        say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (machine.termination)
        what, code = ("terminated", 143) if termination.received() else ("interrupted", 130)
        say(f"error: {what} (finished runs are kept; run the same command to continue)")
        return code
    return 0
