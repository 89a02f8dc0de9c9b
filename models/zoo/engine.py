"""The zoo's driver: train a plan of runs (``models.zoo.plan``) on an engine and keep the zoo folder true.

:func:`run_zoo` checks everything a run would check before anything is written (:func:`check_plan`),
then trains the runs that are not finished as the plan's tasks — on Ray (``machine.cluster``: each
task trains on a worker in a temporary folder, ``models.zoo.task``, and its files are installed here
atomically) or one after the other in this process — and rewrites ``zoo.json`` after every task.
:class:`ZooEngine` says how (engine, cluster address, resources per task, ensembles, retries); the
command line and the user's account of all this are in ``models.zoo.cli``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from machine import cluster
from machine.names import path_component, relative_file
from machine.staging import remove_stale
from models.storage.integrity import finished_run_problem
from models.train.args import check_out
from models.zoo.plan import (
    ZooRun,
    ZooSpec,
    ZooTask,
    check_train_args,
    manifest_document,
    plan_tasks,
    record_throughput,
    run_state,
)

__all__ = ["ENGINES", "MANIFEST", "ZooEngine", "ZooTaskError", "check_plan", "run_zoo"]

MANIFEST = "zoo.json"
SCHEMA_VERSION = 2
ENGINES = ("ray", "sequential")


@dataclass
class ZooEngine:
    """How the zoo runs (what it computes is the :class:`ZooSpec`)."""

    engine: str = "ray"
    address: str | None = None  # None: an embedded local Ray instance
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    ensemble: bool = True
    max_ensemble: int = 8
    max_retries: int = 3
    num_cpus: int | None = None  # size of the embedded instance (default: every CPU)

    def check(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"--engine: unknown {self.engine!r} (choose from {', '.join(ENGINES)})")
        for flag, value, low in (
            ("--cpus-per-task", self.cpus_per_task, 0.0),
            ("--gpus-per-task", self.gpus_per_task, -1e-300),
        ):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not low < value < 1e6:
                kind = "positive" if low == 0 else "non-negative"
                raise ValueError(f"{flag} {value!r}: must be a {kind} number")
        if self.gpus_per_task > 1 and self.gpus_per_task != int(self.gpus_per_task):
            raise ValueError(f"--gpus-per-task {self.gpus_per_task:g}: above 1 it must be a whole number")
        for flag, value in (("--max-ensemble", self.max_ensemble), ("--max-retries", self.max_retries + 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{flag} {value!r}: must be a positive integer")
        if self.engine == "sequential":
            if self.address is not None:
                raise ValueError(f"--address {self.address}: needs --engine ray")
            if self.gpus_per_task:
                raise ValueError(
                    "--gpus-per-task: needs --engine ray (the sequential engine uses --accelerator)"
                )
        if self.address is not None:
            cluster.parse_address(self.address)


class ZooTaskError(RuntimeError):
    """Some tasks failed (the others finished); ``records`` holds every run's record."""

    def __init__(self, message: str, records: list[dict[str, Any]]):
        super().__init__(message)
        self.records = records


# --------------------------------------------------------------------------------------------------
def _write_manifest(out: Path, spec: ZooSpec, engine: dict[str, Any], records: list[dict[str, Any]]) -> None:
    document = manifest_document(spec, engine, records)
    tmp = out / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(tmp, out / MANIFEST)


def check_plan(out: Path, spec: ZooSpec) -> list[ZooRun]:
    """The runs of ``spec``, after every check a zoo makes before anything is written (``--list``
    makes the same): the size of the grid against the free space on ``out`` — before the plan is
    built, so that ``--seeds 10**9`` is one line instead of filling the memory with run names —
    then every run's ``models.train.cli`` flags (against this machine too), and no foreign folder in the
    way of a run."""
    from machine.limits import free_bytes, run_disk_bytes, size, trained_weights
    from models.train.args import parse_args

    seeds = spec.seeds
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"--seeds: expected positive integers, got [{seeds}]")
    per_seed = dataclasses.replace(spec, seeds=1).runs()  # each architecture once (and the controls)
    started = {p.name for p in out.iterdir() if (p / "config.json").is_file()} if out.is_dir() else set()
    need = new = 0
    for run in per_seed:  # count the runs not started yet without listing every run
        stem = run.name.rsplit("_seed", 1)[0] + "_seed"
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
    for run in runs:
        parse_args(spec.train_argv(run, out)).resolve()
        folder = out / run.name
        if folder.exists() and not (folder / "config.json").is_file():
            if not folder.is_dir() or any(folder.iterdir()):
                raise ValueError(f"--out {out}: {folder.name} exists, is not empty and is not a run folder")
    return runs


def _make_out(out: Path) -> list[Path]:
    """Create ``out``; return the folders made (removed again if the zoo fails before training)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    created = []
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
    return created


def run_zoo(
    out: str | Path,
    spec: ZooSpec | None = None,
    log: Callable[[str], None] | None = None,
    engine: ZooEngine | None = None,
) -> list[dict]:
    """Train (or skip, or continue) every run of ``spec`` under ``out``; return one record per run: the
    :class:`ZooRun` fields plus ``before``, ``status`` and, for the runs trained now, where and how
    (see the module docstring) and their final metrics.

    Bad input raises ``ValueError`` (``cluster.ClusterError`` for the cluster) before anything is
    written; failed tasks raise :class:`ZooTaskError` after the others finished."""
    spec = ZooSpec() if spec is None else spec
    engine = ZooEngine() if engine is None else engine
    out = Path(out)
    engine.check()
    check_train_args(spec.train_args)
    runs = check_plan(out, spec)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    check_out(out)  # a folder under a file, or an unwritable parent: said before Ray starts
    with contextlib.ExitStack() as stack:
        info = None
        if engine.engine == "ray":
            info = stack.enter_context(cluster.ray_cluster(engine.address, num_cpus=engine.num_cpus))
            cluster.check_resources(info, engine.cpus_per_task, engine.gpus_per_task)
        created = _make_out(out)
        try:
            return _train(out, spec, engine, runs, info, log)
        except BaseException:
            for folder in created:  # deepest first; rmdir leaves any folder that holds something
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise


# What a zoo.json record says about how its run was trained; a run skipped later keeps them.
TRAINED_FIELDS = (
    "engine",
    "task",
    "ensemble_size",
    "ensemble_members",
    "node_id",
    "hostname",
    "node_ip",
    "attempts",
    "seconds",
    "kernels",
    "val_acc",
    "test_acc",
    "steps",
    "first_perfect_step",
)


def _previous_records(out: Path) -> dict[str, dict[str, Any]]:
    """The records of the zoo.json in ``out`` by run name, of runs that finished ({} without one)."""
    try:
        runs = json.loads((out / MANIFEST).read_text())["runs"]
        return {
            r["name"]: r for r in runs if r.get("status") in ("trained", "resumed", "continued", "skipped")
        }
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _engine_record(engine: ZooEngine, info: cluster.ClusterInfo | None) -> dict[str, Any]:
    return {**asdict(engine), "cluster": info.to_dict() if info is not None else None}


def _train(
    out: Path,
    spec: ZooSpec,
    engine: ZooEngine,
    runs: list[ZooRun],
    info: cluster.ClusterInfo | None,
    log: Callable[[str], None] | None,
) -> list[dict]:
    say = log or (lambda message: None)
    cluster.remove_leftovers(out)
    remove_stale(Path(tempfile.gettempdir()), ("zoo-task-",))  # of tasks killed on this machine
    previous = _previous_records(out)
    records = []
    for run in runs:
        before = run_state(out / run.name, spec.train_argv(run, out))[0]
        status = "skipped" if before == "finished" else "pending"
        if before == "corrupt":  # never skipped as finished: trained again from scratch
            say(f"zoo: {run.name}: {finished_run_problem(out / run.name)}; training it again")
        record = {**asdict(run), "before": "finished" if before == "extendable" else before, "status": status}
        if status == "skipped":  # how it was trained, as the command that trained it recorded it
            record.update({k: v for k, v in previous.get(run.name, {}).items() if k in TRAINED_FIELDS})
        records.append(record)
    by_name = {r["name"]: r for r in records}
    todo = [run for run, record in zip(runs, records) if record["status"] == "pending"]
    slots = max(1, int(info.cpus / engine.cpus_per_task)) if info is not None else 1
    tasks = plan_tasks(
        spec, todo, out, ensemble=engine.ensemble, max_ensemble=engine.max_ensemble, slots=slots
    )
    engine_doc = _engine_record(engine, info)
    _write_manifest(out, spec, engine_doc, records)
    where = info.describe() if info is not None else "sequential engine, this process"
    say(f"zoo: {len(runs)} runs, {len(todo)} to train in {len(tasks)} tasks on the {where} → {out}")
    progress = cluster.Progress(len(todo), say)
    started = time.perf_counter()
    failed: list[str] = []

    def finish(task: ZooTask, statuses: dict[str, str], trace: dict[str, Any], error: str | None) -> None:
        for run in task.runs:
            record = by_name[run.name]
            record.update(
                status="failed" if error else statuses.get(run.name, "failed"),
                engine=engine.engine,
                task=task.name,
                ensemble_size=len(task.runs) if task.ensemble else 1,
                # with whom it trained (itself included), [] alone: a member's weights equal its seed's
                # trained alone to rounding only, not in every bit (docs/reproducibility.md)
                ensemble_members=[r.name for r in task.runs] if task.ensemble else [],
                **{k: trace.get(k) for k in ("node_id", "hostname", "node_ip", "attempts", "seconds")},
                kernels=trace.get("kernels"),  # the worker's CPU, ATen capability and BLAS
            )
            if error:
                record["error"] = error
            elif (out / run.name / "metrics.json").is_file():
                metrics = json.loads((out / run.name / "metrics.json").read_text())
                record.update(
                    {k: metrics.get(k) for k in ("val_acc", "test_acc", "steps", "first_perfect_step")}
                )
        _write_manifest(out, spec, engine_doc, records)
        kind = f"ensemble of {len(task.runs)}" if task.ensemble else "1 run"
        place = f"{trace.get('hostname')}" + (f" {trace['node_ip']}" if trace.get("node_ip") else "")
        if trace.get("node_id"):
            place += f" node {trace['node_id'][:8]}"
        attempt = f", attempt {trace['attempts']}" if trace.get("attempts") else ""
        if error:
            failed.append(f"{task.name} ({error})")
            progress.advance(len(task.runs), f"{task.name} ({kind}): FAILED{attempt}: {error}")
        else:
            status = ", ".join(sorted(set(statuses.values())))
            seconds = trace.get("seconds") or 0.0
            progress.advance(
                len(task.runs), f"{task.name} ({kind}): {status} on {place}{attempt} in {seconds:.1f} s"
            )

    if engine.engine == "ray":
        _run_on_ray(out, engine, tasks, finish, slots)
    else:
        _run_here(out, tasks, finish)
    seconds = time.perf_counter() - started
    trained = sum(len(t.runs) for t in tasks)
    if trained and not failed:
        slots = info.cpus / engine.cpus_per_task if info is not None else 1.0
        record_throughput(engine.engine, engine.ensemble, slots, trained, seconds)
    say(f"zoo: {trained} runs trained in {seconds:.1f} s, {len(runs) - trained} already finished → {out}")
    if failed:
        raise ZooTaskError(f"{len(failed)} of {len(tasks)} tasks failed: " + "; ".join(failed), records)
    return records


def _payload(out: Path, task: ZooTask, gpus: float) -> dict[str, Any]:
    resume = {run.name: cluster.pack_folder(out / run.name) for run in task.runs} if task.resume else {}
    return {
        "names": [run.name for run in task.runs],
        "argvs": task.argvs,
        "ensemble": task.ensemble,
        "resume": resume,
        "gpus": gpus,
    }


def _run_on_ray(out: Path, engine: ZooEngine, tasks: list[ZooTask], finish: Callable, slots: int) -> None:
    from models.zoo import task as zoo_task

    payloads = [_payload(out, task, engine.gpus_per_task) for task in tasks]
    outcomes = cluster.run_tasks(
        zoo_task.execute,
        payloads,
        [task.name for task in tasks],
        cpus=engine.cpus_per_task,
        gpus=engine.gpus_per_task,
        max_retries=engine.max_retries,
        name="zoo-task",
        # one more submitted than can run: Ray starts them in the plan's order (longest first), and the
        # next one is queued while the driver installs a finished task's files
        max_pending=slots + 1,
    )
    with contextlib.closing(outcomes):
        for outcome in outcomes:
            task = tasks[outcome.index]
            payloads[outcome.index] = None  # the resume files are not needed any more
            statuses = {}
            info = dict(outcome.info or {})
            error = outcome.error
            if error is None:
                try:
                    returned = _returned_runs(task, outcome.value)
                except ValueError as exc:  # a worker that answers with other folders than asked for
                    error = f"{type(exc).__name__}: {cluster.first_line(exc)}"
                    returned = {}
                else:
                    info["kernels"] = outcome.value.get("kernels")
                for name, result in returned.items():
                    cluster.install_folder(out / name, files=result["files"])
                    statuses[name] = result["status"]
                    if task.resume and result["status"] == "resumed":
                        statuses[name] = "continued" if task.note == "continues a finished run" else "resumed"
            finish(task, statuses, info, error)


def _returned_runs(task: ZooTask, value: Any) -> dict[str, dict[str, Any]]:
    """A worker's answer ``{"runs": {name: {"files", "status"}}}``, checked before anything is written
    here: exactly the task's run names (each one path component), each file a relative path inside
    its run folder — a worker (any node of a cluster) cannot make the driver write elsewhere."""
    runs = value.get("runs") if isinstance(value, dict) else None
    if not isinstance(runs, dict):
        raise ValueError(f"task {task.name}: the worker's answer is not a set of run folders")
    asked = [run.name for run in task.runs]
    for name in runs:
        path_component(name, f"task {task.name}: run folder returned by the worker")
    if sorted(runs) != sorted(asked):
        raise ValueError(f"task {task.name}: the worker returned {sorted(runs)}, not the runs asked {asked}")
    for name, result in runs.items():
        if not isinstance(result, dict) or not isinstance(result.get("files"), dict):
            raise ValueError(f"task {task.name}: no files for {name} in the worker's answer")
        for rel, data in result["files"].items():
            relative_file(rel, f"task {task.name}: file of {name} returned by the worker")
            if not isinstance(data, bytes):
                raise ValueError(f"task {task.name}: {name}/{rel} is not bytes in the worker's answer")
    return runs


def _run_here(out: Path, tasks: list[ZooTask], finish: Callable) -> None:
    """The sequential engine: single runs train in place (``models.train.cli``), ensembles in a hidden
    staging folder whose member folders are then renamed into place."""
    import shutil

    from machine.devices import kernel_paths

    for task in tasks:
        trace = {"hostname": socket.gethostname(), "attempts": 1, "kernels": kernel_paths()}
        started = time.perf_counter()
        statuses: dict[str, str] = {}
        error = None
        try:
            if task.ensemble:
                from models.train.ensemble import train_ensemble

                staging = out / f".incoming-{task.name}-{os.getpid()}"
                try:
                    train_ensemble(task.argvs, workdir=staging)
                    for run in task.runs:
                        cluster.install_folder(out / run.name, source=staging / run.name)
                        statuses[run.name] = "trained"
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
            else:
                from models.train.cli import train

                for run, argv in zip(task.runs, task.argvs):
                    before = run_state(out / run.name, argv)[0]
                    if before == "corrupt":  # models.train.cli would take it as finished
                        argv = [*argv, "--overwrite"]
                    train(argv)  # a list, so that config.json records the command
                    after = run_state(out / run.name, argv)[0]
                    if after not in ("finished", "extendable"):  # a --max-time window ran out
                        statuses[run.name] = "interrupted"
                    else:
                        fresh = {"new": "trained", "corrupt": "trained", "partial": "resumed"}
                        statuses[run.name] = fresh.get(before, "continued")
        except SystemExit as exc:  # Lightning's answer to Ctrl-C during fit
            if exc.code == 1:
                raise KeyboardInterrupt from None
            raise
        except Exception as exc:  # reported with the task's runs; the other tasks go on
            error = f"{type(exc).__name__}: {cluster.first_line(exc)}"
        trace["seconds"] = round(time.perf_counter() - started, 3)
        finish(task, statuses, trace, error)
