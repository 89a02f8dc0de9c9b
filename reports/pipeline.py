"""Running the analyses of a report: which ones, with which settings, and when a previous result counts.

Each entry of :data:`ANALYSES` names an analysis module (with ``run(model, num_sequences=, seed=,
**kwargs)`` and ``write_outputs(result, folder)``), the extra arguments the report runs it with
(:data:`ANALYSES[...].kwargs`, chosen so the whole report takes seconds; see benchmarks/report_speed.py),
its relative cost (for scheduling on several processes) and when it does not apply to a model.

A folder ``DIR/<analysis>`` is **reused** when its metrics.json has the analysis' current schema
version and its provenance matches what the report would run now: checkpoint sha256, model config,
seed, number of sequences, and the extra arguments — recorded as ``provenance.run_kwargs`` by
reports, or for results of the analysis' own CLI, all present with the same values in ``settings`` —
and its figures and captions are all there. Anything else is recomputed.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analyses.frame.html import CAPTIONS_FILE
from machine.processes import die_with_parent

DEFAULT_RESAMPLES = 1000
# The proof's budget in a report build: regions bounded (the engine's max_boxes), deterministic: the same
# bounds whatever the machine's load. 5,000 boxes take ~10 s on the default model (benchmarks/
# report_speed.py); the CLI's default is 600 s. No time budget unless --certificate-budget gives one.
CERTIFICATE_BOXES = 5_000


@dataclass(frozen=True)
class AnalysisSpec:
    module: str
    kwargs: dict[str, Any]
    cost: float  # relative run time, only for scheduling the slow ones first
    title: str
    not_applicable: Callable[[Any], str | None] = field(default=lambda cfg: None)  # cfg → reason or None
    sampled: bool = True  # run() takes num_sequences= and seed= (the certificate samples nothing)


def _not_one_layer(cfg: Any) -> str | None:
    if cfg.n_layers != 1:
        return (
            f"the certificate covers 1-layer models only; this model has {cfg.n_layers} layers, and beyond "
            "the first layer a key depends on every position, not on its own (position, digit) alone"
        )
    return None


def _no_positions(cfg: Any) -> str | None:
    if cfg.positional_embedding == "none":
        return "the model has no positional encoding to ablate"
    return None


# Costs: seconds each took in one build of the tutorial model's report (2,000 sequences, load ~2.5),
# divided by flip_alignment's; the slowest start first, so the two workers finish close together.
ANALYSES: dict[str, AnalysisSpec] = {
    "flip_alignment": AnalysisSpec(
        "analyses.flip_alignment", {"bootstrap_resamples": DEFAULT_RESAMPLES}, 1.0, "Flip alignment"
    ),
    "qk_circuit": AnalysisSpec(
        "analyses.qk_circuit", {"bootstrap_resamples": DEFAULT_RESAMPLES}, 3.9, "QK circuit"
    ),
    "pe_ablation": AnalysisSpec(
        "analyses.pe_ablation",
        # The exact no-position ceiling is computed for N ≤ 32; the Monte Carlo check needs fewer draws.
        {"bootstrap_resamples": DEFAULT_RESAMPLES, "monte_carlo_sequences": 20_000, "shuffle_seeds": 5},
        2.3,
        "Positional-encoding ablation",
        _no_positions,
    ),
    "head_ablation": AnalysisSpec(
        "analyses.head_ablation",
        # 20 random row permutations show the spread of the permutation test at a fifth of the cost.
        {
            "bootstrap_resamples": DEFAULT_RESAMPLES,
            "permutations": 20,
            "reference_sequences": 1000,
            "patch_sequences": 200,
        },
        2.5,
        "Head ablation",
    ),
    "length_generalisation": AnalysisSpec(
        "analyses.length_generalisation",
        {"bootstrap_resamples": DEFAULT_RESAMPLES},
        1.4,
        "Length generalisation",
    ),
    # Costs from one CPU-time measurement each on the tutorial model at 2,000 sequences (not a build).
    "tolerance": AnalysisSpec(
        "analyses.tolerance",
        {"bootstrap_resamples": DEFAULT_RESAMPLES},
        4.0,
        "Tolerance of approximate attention",
    ),
    "interchange": AnalysisSpec(
        "analyses.interchange", {"bootstrap_resamples": DEFAULT_RESAMPLES}, 2.0, "Interchange interventions"
    ),
    # Over all C^N inputs, not a sample: the proof bounds CERTIFICATE_BOXES regions (reports.build
    # --certificate-boxes, --certificate-budget for seconds); what is undecided then stays between the
    # bounds, and the section says so. The theorem columns (~15 s more on the default model) only with
    # reports.build --certificate-theorems.
    "certificate": AnalysisSpec(
        "analyses.certificate",
        {"method": "auto", "budget_seconds": None, "max_boxes": CERTIFICATE_BOXES, "theorems": False},
        6.0,
        "Certificate over all inputs",
        _not_one_layer,
        sampled=False,
    ),
}


@dataclass
class Task:
    """One analysis to run into ``out`` (a folder that must not exist yet)."""

    name: str
    out: Path
    checkpoint: Path
    n_heads: int | None
    num_sequences: int
    seed: int
    provenance: dict[str, Any]
    svg: bool = False  # figures as SVG too
    kwargs: dict[str, Any] | None = None  # run()'s extra arguments (None: the spec's)

    @property
    def spec(self) -> AnalysisSpec:
        return ANALYSES[self.name]

    @property
    def run_kwargs(self) -> dict[str, Any]:
        return dict(self.spec.kwargs if self.kwargs is None else self.kwargs)


def parse_names(values: list[str] | None, option: str) -> list[str]:
    """``["a,b", "c"]`` → ``["a", "b", "c"]``, each a known analysis (``ValueError`` naming the option)."""
    names = [n.strip() for v in values or [] for n in v.split(",") if n.strip()]
    for name in names:
        if name not in ANALYSES:
            raise ValueError(f"{option}: unknown analysis {name!r} (choose from {', '.join(ANALYSES)})")
    return names


def read_document(folder: Path) -> dict[str, Any] | None:
    """``folder/metrics.json`` as a dict, or None when it is missing or unreadable."""
    try:
        document = json.loads((Path(folder) / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def reusable(folder: Path, name: str, expected: dict[str, Any], svg: bool = False) -> bool:
    """Whether ``folder`` holds a complete result of ``name`` made with ``expected`` provenance
    (keys ``checkpoint_sha256``, ``config``, ``seed``, ``num_sequences``, ``run_kwargs``), with every
    figure as PNG (and as SVG too, with ``svg``)."""
    document = read_document(folder)
    if document is None or document.get("analysis") != name:
        return False
    module = importlib.import_module(ANALYSES[name].module)
    if document.get("schema_version") != getattr(module, "SCHEMA_VERSION", 1):
        return False
    prov = document.get("provenance") or {}
    for key in ("checkpoint_sha256", "config", "seed", "num_sequences"):
        if prov.get(key) != expected[key]:
            return False
    kwargs = expected["run_kwargs"]
    if "run_kwargs" in prov:
        if prov["run_kwargs"] != kwargs:
            return False
    else:  # a result of the analysis' own CLI: every argument must be visible in its settings
        settings = document.get("settings") or {}
        if any(key not in settings or settings[key] != value for key, value in kwargs.items()):
            return False
    n_ctx = expected["config"]["n_ctx"]
    if (document.get("settings") or {}).get("seq_len", n_ctx) != n_ctx:
        return False
    try:
        captions = json.loads((Path(folder) / "figures" / CAPTIONS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    figures = Path(folder) / "figures"
    has_report = (Path(folder) / "report.html").is_file()
    formats = ("png", "svg") if svg else ("png",)
    return has_report and all((figures / f"{n}.{fmt}").is_file() for n in captions for fmt in formats)


_PROGRESS = re.compile(r"^\s*\d+%\|")  # tqdm progress bars (transformer_lens.patching draws them)


@contextlib.contextmanager
def _quiet_progress_bars():
    """Swallow progress bars on stderr during an analysis; pass every other line through."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stderr(buffer):
            yield
    finally:
        lines = [line for line in re.split(r"[\r\n]+", buffer.getvalue()) if not _PROGRESS.match(line)]
        text = "\n".join(line for line in lines if line)
        if text:
            sys.stderr.write(text + "\n")


# The building process's model, inherited by forked workers (set just before they are forked).
_INHERITED: dict[str, Any] = {}


def run_task(task: Task, model: Any = None) -> float:
    """Run one analysis and write its folder; returns the seconds it took.

    ``model`` is the loaded model when running in the building process; worker processes pass None
    and use the building process's model when they were forked from it, else load ``task.checkpoint``
    (one intra-op thread each: on a shared CPU, torch's thread pool makes these small batches several
    times slower).
    """
    import torch

    from analyses.frame.loading import resolve_model

    started = time.perf_counter()
    if model is None:
        torch.set_num_threads(1)
        model = _INHERITED.get("model") or resolve_model(task.checkpoint, n_heads=task.n_heads).model
    module = importlib.import_module(task.spec.module)
    with _quiet_progress_bars():
        sampling = {"num_sequences": task.num_sequences, "seed": task.seed} if task.spec.sampled else {}
        result = module.run(model, **sampling, **task.run_kwargs)
    result.provenance = task.provenance
    module.write_outputs(result, task.out, svg=task.svg)
    return time.perf_counter() - started


def run_tasks(tasks: list[Task], model: Any, jobs: int, log: Callable[[str], None]) -> None:
    """Run ``tasks``: in this process when ``jobs`` is 1, else on ``jobs`` forked worker processes
    (slowest first). A failure in any task raises after the others finished."""
    if not tasks:
        return
    if jobs <= 1 or len(tasks) == 1:
        for task in tasks:
            log(f"{task.name}: computed in {run_task(task, model):.1f} s")
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # fork shares the imported modules (seconds of import time per worker); the building process uses one
    # torch thread (reports.build sets it), so no OpenMP pool is inherited half-initialised.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ordered = sorted(tasks, key=lambda t: -t.spec.cost)
    context = multiprocessing.get_context(method)
    import os

    if method == "fork":  # workers start with this process's copy of the model: no reload per task
        _INHERITED["model"] = model
    errors = []
    try:
        with ProcessPoolExecutor(
            max_workers=min(jobs, len(tasks)),
            mp_context=context,
            initializer=die_with_parent,  # no orphans: a killed build takes its workers with it
            initargs=(os.getpid(),),
        ) as pool:
            futures = [(task, pool.submit(run_task, task)) for task in ordered]
            for task, future in futures:
                try:
                    log(f"{task.name}: computed in {future.result():.1f} s")
                except Exception as e:  # collect, so every worker finishes before the build fails
                    errors.append(e)
    finally:
        _INHERITED.clear()
    if errors:
        raise errors[0]
