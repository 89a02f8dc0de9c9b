"""One task of the model zoo, run where Ray puts it: train its runs in a private temporary folder and
return their run folders as files, so that the driver alone writes the zoo folder.

A task (see ``models.zoo.plan.ZooTask``) is one run — new, or continued from the files of an
interrupted run that the driver sends along — or the members of one ensemble (``models.train.ensemble``).
:func:`execute` takes and returns plain data (lists, dicts, bytes): it is what ``models.zoo.cli`` hands to
``machine.cluster.run_tasks``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from machine.cluster import install_folder, pack_folder
from machine.staging import remove_stale, staging_prefix

TASK_PREFIX = "zoo-task-"  # machine.reaper.TASK_PREFIXES removes these too


def _with_out(argv: list[str], out: str) -> list[str]:
    argv = list(argv)
    argv[argv.index("--out") + 1] = out
    return argv


def _check_gpu(gpus: float, names: list[str]) -> None:
    """A task given a GPU share must find CUDA: never a silent CPU run."""
    import torch

    if gpus > 0 and not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise RuntimeError(
            f"{names[0]}{' and others' if len(names) > 1 else ''}: --gpus-per-task {gpus:g} but no CUDA "
            f"device is usable on {socket.gethostname()} (CUDA_VISIBLE_DEVICES={visible!r}, "
            f"torch {torch.__version__}, CUDA build {torch.version.cuda})"
        )


def _record_as(run_dir: Path, argv: list[str], out: str) -> None:
    """config.json of a run trained in a temporary folder records the zoo's command and folder."""
    path = run_dir / "config.json"
    config = json.loads(path.read_text())
    config["command"] = ["python", "-m", "models.train", *argv]
    config.setdefault("training", {})["out"] = out
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def execute(task: dict[str, Any]) -> dict[str, Any]:
    """Train one task; return ``{"runs": {name: {"files": {path: bytes}, "status": ...}}, "kernels":
    machine.devices.kernel_paths() of the worker}``.

    ``task``: ``names``, ``argvs`` (``models.train.cli`` command lines whose ``--out`` is the zoo folder),
    ``ensemble`` (bool), ``resume`` (``{name: files}`` of interrupted runs to continue), ``gpus``."""
    names, argvs = list(task["names"]), [list(a) for a in task["argvs"]]
    _check_gpu(float(task.get("gpus", 0.0)), names)
    # Named after this worker process (machine.staging): a worker killed mid-task (its driver killed,
    # Ctrl-C, a retry) cannot remove its folder, so the next task on this node removes those whose
    # creator is dead — and only those, never a running task's.
    remove_stale(Path(tempfile.gettempdir()), (TASK_PREFIX,))
    work = Path(tempfile.mkdtemp(prefix=staging_prefix(TASK_PREFIX)))
    try:
        statuses = {}
        if task["ensemble"]:
            from models.train.ensemble import train_ensemble

            train_ensemble(argvs, workdir=work)
            statuses = dict.fromkeys(names, "trained")
        else:
            from models.train.cli import train

            for name, argv in zip(names, argvs):
                files = task.get("resume", {}).get(name)
                if files:
                    install_folder(work / name, files=files)
                out = argv[argv.index("--out") + 1]
                train(_with_out(argv, str(work)))
                if (work / name / "config.json").is_file():
                    _record_as(work / name, argv, out)
                statuses[name] = "resumed" if files else "trained"
        runs = {}
        for name in names:
            if not (work / name / "metrics.json").is_file():  # e.g. --max-time ran out
                statuses[name] = "interrupted"
            runs[name] = {"files": pack_folder(work / name), "status": statuses[name]}
        from machine.devices import kernel_paths

        return {"runs": runs, "kernels": kernel_paths()}
    finally:
        shutil.rmtree(work, ignore_errors=True)
