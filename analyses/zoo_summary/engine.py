"""Where a zoo summary's per-run work runs: in this process, or as Ray tasks (``machine.cluster``).

Two kinds of per-run work, each independent of the other runs:

- the run's evaluation (:func:`analyses.zoo_summary.runs.summarise_run`), always;
- with ``--index``, the run's full report (``python -m reports.build`` in a child process: reports is
  the layer above the analyses, which never import it).

``engine="sequential"`` does them one after the other in this process, without importing Ray.
``engine="ray"`` (the CLI's default, like ``models.zoo.cli``'s) makes each one a Ray task: on an embedded
local instance sized to this machine without ``address`` (loopback only, no dashboard, stopped
afterwards), or on the running cluster at ``address`` (``auto`` or ``HOST:PORT``). Evaluations need
no shared filesystem: a task gets the run folder's top-level files (``model.pt``, ``config.json``,
``metrics.json``, ...) through Ray, evaluates a copy in a temporary folder on its worker and returns
the :class:`RunSummary`, which names no path — so both engines give the same numbers (one intra-op
thread each, as the analysis CLIs compute). A report task runs ``reports.build`` on the run folder
itself, so it needs the zoo folder at the same path on its node (the embedded instance always has
it; a cluster needs a shared filesystem) and says so when the folder is not there.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analyses.frame.cli import UserError
from analyses.zoo_summary.result import RunSummary
from machine import cluster

ENGINES = ("ray", "sequential")


@dataclass
class SummaryEngine:
    """How the per-run work runs (what it computes is set by the analysis' flags)."""

    engine: str = "sequential"
    address: str | None = None  # None: an embedded local Ray instance
    cpus_per_task: float = 1.0
    max_retries: int = 3
    num_cpus: int | None = None  # size of the embedded instance (default: every CPU)

    def check(self, device: str = "cpu") -> None:
        """``ValueError`` (one line naming the flag) for a bad combination, before anything starts."""
        if self.engine not in ENGINES:
            raise ValueError(f"--engine: unknown {self.engine!r} (choose from {', '.join(ENGINES)})")
        value = self.cpus_per_task
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e6:
            raise ValueError(f"--cpus-per-task {value!r}: must be a positive number")
        if self.engine == "sequential" and self.address is not None:
            raise ValueError(f"--address {self.address}: needs --engine ray")
        if self.engine == "ray":
            if device != "cpu":
                raise ValueError(f"--device {device}: Ray tasks evaluate on CPUs; use --engine sequential")
            if self.address is not None:
                cluster.parse_address(self.address)

    @contextlib.contextmanager
    def session(self) -> Iterator[cluster.ClusterInfo | None]:
        """The Ray cluster the tasks run on (None for the sequential engine), for a ``with`` block
        that spans several :func:`map_runs` (their blocks reuse it)."""
        if self.engine != "ray":
            yield None
            return
        with cluster.ray_cluster(self.address, num_cpus=self.num_cpus) as info:
            cluster.check_resources(info, self.cpus_per_task, 0.0)
            yield info


def map_runs(
    fn: Callable[[dict[str, Any]], dict[str, Any]],
    payloads: Sequence[dict[str, Any]],
    engine: SummaryEngine,
    log: Callable[[str], None] | None,
    what: str,
    ship_files: bool = False,
) -> list[Any]:
    """``fn(payload)["value"]`` for every payload (each names its run in ``payload["name"]``), in the
    payloads' order, on ``engine``; ``log`` gets one progress line per run as it finishes (``what``
    names the work: "evaluation", "report"; the Ray tasks are called ``zoo-summary-<what>``). ``fn``
    returns ``{"value": ...}`` or ``{"error": one line}``, a user mistake (an unreadable model), which
    becomes a :class:`UserError` here; anything else ``fn`` raises is a bug and stays an exception.
    ``ship_files``: a Ray task's payload also carries its run folder's files (:func:`shipped`), read
    when the task is submitted (a few tasks ahead of the free slots, so memory stays bounded)."""
    names = [p["name"] for p in payloads]
    progress = cluster.Progress(len(payloads), log)
    values: list[Any] = [None] * len(payloads)

    def take(i: int, answer: dict[str, Any], where: str) -> None:
        if "error" in answer:
            raise UserError(answer["error"])
        values[i] = answer["value"]
        progress.advance(1, f"{names[i]}: {what}{where}")

    if engine.engine == "sequential":
        for i, payload in enumerate(payloads):
            take(i, fn(payload), "")
        return values
    with engine.session() as info:
        slots = max(1, int(info.cpus // engine.cpus_per_task))
        outcomes = cluster.run_tasks(
            fn,
            _Shipped(payloads) if ship_files else payloads,
            names,
            cpus=engine.cpus_per_task,
            max_retries=engine.max_retries,
            name=f"zoo-summary-{what}",
            max_pending=2 * slots,  # every slot busy, one task queued behind each; files read on demand
        )
        with contextlib.closing(outcomes):  # leaving early stops the rest (machine.cluster.run_tasks)
            for outcome in outcomes:
                if outcome.error is not None:
                    raise RuntimeError(f"{what} of {outcome.label}: {outcome.error}")
                take(outcome.index, outcome.value, f" on {outcome.info.get('hostname')}")
    return values


# --- the evaluation of one run ----------------------------------------------------------------------
def run_files(folder: Path) -> dict[str, bytes]:
    """The regular files directly inside a run folder (``model.pt``, ``config.json``, ``metrics.json``,
    ``SHA256SUMS``, ...): what an evaluation reads; not ``checkpoints/``, ``logs/`` or ``report/``."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.is_symlink()}


def evaluation_payload(folder: Path, role: str, **settings: Any) -> dict[str, Any]:
    """What :func:`evaluate_run` needs: the run folder, its role and the settings (``num_sequences``,
    ``seed``, ``batch_size``, ``resamples``, ``confidence``, ``device``); a Ray task gets it
    :func:`shipped`."""
    return {"name": folder.name, "folder": str(folder), "role": role, "settings": settings}


def shipped(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with its run folder's files (:func:`run_files`), for a worker without the folder."""
    return {**payload, "files": run_files(Path(payload["folder"]))}


class _Shipped(Sequence):
    """``shipped(payloads[i])``, made when item i is read (by :func:`machine.cluster.run_tasks`, as it
    submits task i)."""

    def __init__(self, payloads: Sequence[dict[str, Any]]):
        self.payloads = payloads

    def __len__(self) -> int:
        return len(self.payloads)

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        return shipped(self.payloads[i])


def evaluate_run(payload: dict[str, Any]) -> dict[str, Any]:
    """``{"value": RunSummary}`` of one run, or ``{"error": line}`` when its model cannot be read.

    With ``files`` in the payload (a Ray task) the run is evaluated from a copy of them in a
    temporary folder, and an error names the zoo's folder, not the copy."""
    import torch

    from analyses.zoo_summary.runs import summarise_run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the analysis CLIs compute (analyses.frame.command.main)
    try:
        if "files" not in payload:
            return _summarised(Path(payload["folder"]), payload, summarise_run)
        with tempfile.TemporaryDirectory(prefix="zoo-summary-") as work:
            copy = cluster.install_folder(Path(work) / payload["name"], files=payload["files"])
            answer = _summarised(copy, payload, summarise_run)
            if "error" in answer:
                answer["error"] = answer["error"].replace(str(copy), payload["folder"])
            return answer
    finally:
        torch.set_num_threads(threads)


def _summarised(folder: Path, payload: dict[str, Any], summarise_run: Callable[..., RunSummary]) -> dict:
    s = payload["settings"]
    try:
        summary = summarise_run(
            folder,
            payload["role"],
            s["num_sequences"],
            s["seed"],
            s["batch_size"],
            s["resamples"],
            s["confidence"],
            s["device"],
            certify_budget=s.get("certify_budget"),
            certify_boxes=s.get("certify_boxes"),
        )
    except UserError as e:
        return {"error": str(e)}
    return {"value": summary}


# --- the full report of one run (--index) -----------------------------------------------------------
def report_payload(folder: Path, flags: Sequence[str]) -> dict[str, Any]:
    """What :func:`build_report` needs: the run folder (absolute), its model's sha256 (the worker checks
    it sees the same file) and the ``reports.build`` flags."""
    folder = folder.absolute()
    sha256 = _sha256(folder / "model.pt")
    return {"name": folder.name, "folder": str(folder), "sha256": sha256, "flags": list(flags)}


def _sha256(path: Path) -> str | None:  # None: no such file here
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def build_report(payload: dict[str, Any]) -> dict[str, Any]:
    """One run's full report (:func:`reports_build` with the payload's flags) where the worker sees the
    run folder: ``{"value": None}`` or ``{"error": line}``."""
    folder = Path(payload["folder"])
    if _sha256(folder / "model.pt") != payload["sha256"]:
        return {
            "error": f"{folder}: not found on {os.uname().nodename} (or another model.pt there): the full "
            "reports of --index on a Ray cluster need the zoo folder at the same path on every node "
            "(a shared filesystem); or use --engine sequential"
        }
    error = reports_build(payload["flags"])
    return {"value": None} if error is None else {"error": error}


def reports_build(flags: Sequence[str]) -> str | None:
    """``python -m reports.build FLAGS`` in a child process; None on success, else its ``error: ...``
    line (or exit code) as one line naming the command."""
    done = subprocess.run(
        [sys.executable, "-m", "reports.build", *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if done.returncode == 0:
        return None
    if done.returncode in (130, 143):  # the child was interrupted with us
        raise KeyboardInterrupt
    errors = [line[len("error: ") :] for line in done.stderr.splitlines() if line.startswith("error: ")]
    reason = errors[-1] if errors else f"failed with exit code {done.returncode}"
    return f"python -m reports.build {' '.join(flags)}: {reason}"
