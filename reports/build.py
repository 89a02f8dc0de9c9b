"""Build one self-contained HTML report per model, or an index page across several reports.

    python -m reports.build [--checkpoint PATH] [--out DIR] [--only A,B] [--skip A] [--seed S]
                            [--num-sequences N] [--n-heads H] [--name NAME] [--jobs J] [--svg]
                            [--certificate-boxes N] [--certificate-budget S] [--certificate-theorems]
    python -m reports.build --index DIR [DIR ...] [--out DIR]

The first form runs every analysis of :data:`reports.pipeline.ANALYSES` on the model (the default
model of ``analyses.frame.loading.resolve_model`` when no checkpoint is given), reusing ``DIR/<analysis>``
folders whose inputs match, and writes::

    DIR/<analysis>/     each analysis' own outputs (metrics.json, metrics.csv, figures/, report.html)
    DIR/report.html     the report: one offline file (figures, styles, script and data inline)
    DIR/summary.json    the key numbers with CIs and the provenance, read by ``reports.index``

All or nothing: new analysis folders, report.html and summary.json are made in a staging folder inside
DIR and moved into place only when everything succeeded. The second form writes ``OUT/index.html``
comparing the runs (see :mod:`reports.index`).

Python: ``build_report(checkpoint, out, ...)`` returns the path of report.html.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from analyses.frame import arguments, files
from analyses.frame import provenance as provenance_record
from analyses.frame.cli import UserError, run_cli
from analyses.frame.loading import ResolvedModel, resolve_model
from machine import staging as staging_names
from reports import pipeline
from reports.full_report import AnalysisSection, render_full_report
from reports.summary import SUMMARY_FILE, SUMMARY_SCHEMA_VERSION, key_metrics

DEFAULT_OUT = Path("out") / "report"
DEFAULT_NUM_SEQUENCES = 2000  # the whole build in ~20 s on two cores (benchmarks/report_speed.py)
EXPLORER_SEQUENCES = 8
REPORT_FILE = "report.html"
PAGE_BUDGET_BYTES = 5_000_000  # above this, the build says so (figures grow with layers × heads)
STAGING_PREFIX = ".report-build-"


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove what builds killed before they could clean up left in ``out`` (their staging folders and
    analysis folders moved aside): only folders whose creating process is gone
    (:func:`machine.staging.remove_stale`)."""
    prefixes = (STAGING_PREFIX, *(f".{name}.old-" for name in pipeline.ANALYSES))
    return staging_names.remove_stale(out, prefixes)


def default_name(checkpoint: Path) -> str:
    """A run's name from its checkpoint: the run folder for ``.../NAME/model.pt`` or ``.../NAME/``."""
    if checkpoint.is_dir() or checkpoint.name == "model.pt":
        return (checkpoint if checkpoint.is_dir() else checkpoint.parent).name
    return checkpoint.stem


def training_metadata(checkpoint: Path) -> dict[str, Any]:
    """Seed and preset of a model trained by ``models.train.cli`` (from model.pt's metadata), else {}."""
    import torch

    path = checkpoint / "model.pt" if checkpoint.is_dir() else checkpoint
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # other formats (tutorial .ckpt, Flax msgpack) carry no such metadata
        return {}
    metadata = data.get("metadata") if isinstance(data, dict) else None
    if not isinstance(metadata, dict):
        return {}
    return {k: metadata[k] for k in ("preset", "seed") if isinstance(metadata.get(k), str | int)}


def is_report_folder(folder: Path) -> bool:
    """Whether a report may be written into ``folder``: it is empty, holds a report (its summary.json
    is one of :func:`build_report`'s), or holds nothing but analysis output folders."""
    try:
        summary = json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
        if isinstance(summary, dict) and summary.get("kind") == "report_summary":
            return True
    except (OSError, ValueError):
        pass
    entries = [p for p in folder.iterdir() if not p.name.startswith(STAGING_PREFIX)]
    return all(p.name in pipeline.ANALYSES and files.is_output_folder(p) for p in entries)


def _prepare_out(out: Path) -> tuple[Path, list[Path]]:
    """Create ``out`` (and missing parents) and a staging folder inside it; return both, and the
    folders created (to remove on failure). :class:`UserError` when it cannot be written."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    created: list[Path] = []
    try:
        created = files.make_folders(out)
        staging = Path(tempfile.mkdtemp(dir=out, prefix=staging_names.staging_prefix(STAGING_PREFIX)))
    except OSError as e:
        files.remove_empty(created)
        raise UserError(f"cannot write to --out {out}: {e.strerror or e}") from None
    return staging, created


def build_report(
    checkpoint: str | Path | None,
    out: str | Path = DEFAULT_OUT,
    *,
    only: Sequence[str] | None = None,
    skip: Sequence[str] = (),
    seed: int = 0,
    num_sequences: int = DEFAULT_NUM_SEQUENCES,
    n_heads: int | None = None,
    name: str | None = None,
    jobs: int = 1,
    svg: bool = False,
    certificate_budget: float | None = None,
    certificate_theorems: bool = False,
    certificate_boxes: int | None = pipeline.CERTIFICATE_BOXES,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Run (or reuse) the analyses and write ``out/report.html`` and ``out/summary.json``.

    ``only`` / ``skip`` choose analyses by name; ``jobs`` > 1 runs analyses in that many forked worker
    processes (set ``torch.set_num_threads(1)`` before, as the CLI does); ``svg`` also writes every
    analysis' figures as SVG (the page inlines the PNGs). ``certificate_boxes`` is the number of
    regions the certificate's proof may bound (deterministic; None: no limit) and ``certificate_budget``
    the seconds it may branch (None: no limit); the first to run out stops it, and the section names both;
    ``certificate_theorems`` adds its theorem columns (~15 s more on the default model). ``command`` is
    recorded as the command line (None: built from Python). Raises ``ValueError`` / ``UserError`` for bad
    input before anything is written.
    """
    started = time.perf_counter()
    say = log or (lambda message: None)
    selected = _select(only, skip)
    for label, value, low in (
        ("--seed", seed, 0),
        ("--num-sequences", num_sequences, 1),
        ("--jobs", jobs, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{label} must be an integer ≥ {low}, got {value!r}")
    if certificate_budget is not None and (
        isinstance(certificate_budget, bool)
        or not (isinstance(certificate_budget, int | float) and 0 < certificate_budget < float("inf"))
    ):
        raise ValueError(
            f"--certificate-budget must be a positive number of seconds, got {certificate_budget!r}"
        )
    if certificate_boxes is not None and (
        isinstance(certificate_boxes, bool) or not isinstance(certificate_boxes, int) or certificate_boxes < 1
    ):
        raise ValueError(f"--certificate-boxes must be an integer ≥ 1, got {certificate_boxes!r}")
    if certificate_budget is None and certificate_boxes is None:
        raise ValueError("the certificate needs a budget: give --certificate-boxes or --certificate-budget")
    if not str(out).strip():
        raise UserError("--out is empty: name the report folder")
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    for stale in remove_stale_staging(out):
        say(f"removed {stale}, left by a build that was killed")
    if out.is_dir() and not is_report_folder(out):  # report.html and summary.json are overwritten
        raise UserError(
            f"--out {out} exists and is not a report folder (no summary.json of reports.build, and not "
            "only analysis outputs): refusing to write into it; name a new or empty folder"
        )
    for analysis in selected:  # each OUT/<analysis> is replaced whole: it must be an earlier output
        files.check_replaceable(out / analysis)
    loaded = resolve_model(checkpoint, n_heads=n_heads, log=log)
    model = loaded.model
    name = default_name(loaded.path) if name is None else str(name)
    staging, created = _prepare_out(out)
    try:
        sections, tasks = _plan(
            out,
            staging,
            loaded,
            selected,
            seed,
            num_sequences,
            n_heads,
            svg,
            command,
            say,
            {
                "certificate": {
                    "budget_seconds": None if certificate_budget is None else float(certificate_budget),
                    "max_boxes": certificate_boxes,
                    "theorems": bool(certificate_theorems),
                }
            },
        )
        pipeline.run_tasks(tasks, model, jobs, say)

        from analyses.frame.html import read_captions
        from reports.explorer import explorer_data
        from reports.lab import lab_data

        documents = {}
        for section in sections:
            if section.figures_dir is None:
                continue
            section.document = pipeline.read_document(section.figures_dir.parent)
            if section.document is None:
                raise RuntimeError(f"{section.figures_dir.parent} has no readable metrics.json")
            section.captions = read_captions(section.figures_dir)
            documents[section.name] = section.document
        metrics = key_metrics(documents)
        provenance = _provenance(name, loaded, seed, num_sequences, command, sections)
        html = render_full_report(
            name=name,
            sections=sections,
            metrics=metrics,
            explorer=explorer_data(model, seed, EXPLORER_SEQUENCES, name=name),
            provenance=provenance,
            lab=lab_data(model, seed, checkpoint=loaded.path),
        )
        files.write_text(staging / REPORT_FILE, html)
        page_bytes = len(html.encode("utf-8"))
        if page_bytes > PAGE_BUDGET_BYTES:
            say(
                f"note: the page is {page_bytes / 1e6:.1f} MB, above the {PAGE_BUDGET_BYTES / 1e6:.0f} MB aim"
            )
        summary = {
            "schema_version": SUMMARY_SCHEMA_VERSION,
            "kind": "report_summary",
            **provenance,
            "metrics": metrics,
            "report": REPORT_FILE,
            "report_bytes": page_bytes,
            "build_seconds": round(time.perf_counter() - started, 2),
        }
        files.write_json(staging / SUMMARY_FILE, summary)
        for task in tasks:  # everything exists: move it into place
            files.replace_dir(task.out, out / task.name)
        os.replace(staging / SUMMARY_FILE, out / SUMMARY_FILE)
        os.replace(staging / REPORT_FILE, out / REPORT_FILE)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        files.remove_empty(created)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return out / REPORT_FILE


def _config(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(cfg.to_dict()))  # as metrics.json stores it (tuples → lists)


def _plan(
    out: Path,
    staging: Path,
    loaded: ResolvedModel,
    selected: list[str],
    seed: int,
    num_sequences: int,
    n_heads: int | None,
    svg: bool,
    command: str | None,
    say: Callable[[str], None],
    overrides: dict[str, dict[str, Any]] | None = None,
) -> tuple[list[AnalysisSection], list[pipeline.Task]]:
    """A section per analysis (skipped, not applicable, reused from ``out``, or to be computed) and
    the tasks that compute the last kind into ``staging``; ``overrides`` replaces some of an analysis'
    run arguments (analysis → {argument: value})."""
    cfg, config = loaded.model.cfg, _config(loaded.model.cfg)
    sections, tasks = [], []
    for analysis, spec in pipeline.ANALYSES.items():
        section = AnalysisSection(analysis, spec.title, "skipped (--only / --skip)")
        sections.append(section)
        if analysis not in selected:
            continue
        reason = spec.not_applicable(cfg)
        if reason:
            section.status = f"not applicable: {reason}"
            continue
        run_kwargs = {**spec.kwargs, **(overrides or {}).get(analysis, {})}
        expected = {
            "checkpoint_sha256": loaded.sha256,
            "config": config,
            "seed": seed,
            "num_sequences": num_sequences,
            "run_kwargs": run_kwargs,
        }
        if pipeline.reusable(out / analysis, analysis, expected, svg=svg):
            section.status, section.figures_dir = "reused", out / analysis / "figures"
            say(f"{analysis}: reusing {out / analysis}")
            continue
        section.status, section.figures_dir = "computed", staging / analysis / "figures"
        provenance = provenance_record.provenance(
            analysis=analysis,
            checkpoint=loaded.path,
            checkpoint_sha256=loaded.sha256,
            config=config,
            seed=seed,
            num_sequences=num_sequences,
            from_cli=False,
            run_kwargs=dict(run_kwargs),
            built_by="reports.build",
        )
        provenance["command"] = command
        tasks.append(
            pipeline.Task(
                analysis,
                staging / analysis,
                loaded.path,
                n_heads,
                num_sequences,
                seed,
                provenance,
                svg,
                kwargs=dict(run_kwargs),
            )
        )
    return sections, tasks


def _provenance(
    name: str,
    loaded: ResolvedModel,
    seed: int,
    num_sequences: int,
    command: str | None,
    sections: list[AnalysisSection],
) -> dict[str, Any]:
    """What the report was made from; also the body of summary.json."""
    return {
        "name": name,
        "checkpoint": str(loaded.path),
        "checkpoint_sha256": loaded.sha256,
        "config": _config(loaded.model.cfg),
        "training": training_metadata(loaded.path),
        "seed": seed,
        "num_sequences": num_sequences,
        "command": command,
        "packages": provenance_record.package_versions(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "analyses": [
            {
                "name": s.name,
                "status": s.status,
                "created": (s.document or {}).get("provenance", {}).get("timestamp"),
            }
            for s in sections
        ],
    }


def _select(only: Sequence[str] | None, skip: Sequence[str]) -> list[str]:
    only_names = pipeline.parse_names(list(only), "--only") if only else list(pipeline.ANALYSES)
    skip_names = pipeline.parse_names(list(skip), "--skip")
    selected = [n for n in pipeline.ANALYSES if n in only_names and n not in skip_names]
    if not selected:
        raise ValueError("--only / --skip leave no analysis to run")
    return selected


# --- command line ---------------------------------------------------------------------------------
def build_parser() -> arguments.ArgumentParser:
    names = ", ".join(pipeline.ANALYSES)
    p = arguments.ArgumentParser(
        prog="python -m reports.build",
        description="Run every analysis on a model and write one offline HTML report (or, with --index, "
        "a page comparing several reports).",
    )
    p.add_argument(
        "--checkpoint",
        type=arguments.path_arg,
        help="model (our model.pt or run folder, the tutorial's .ckpt or Flax msgpack); "
        "default: the cached tutorial model, trained on first use",
    )
    p.add_argument(
        "--out",
        type=arguments.path_arg,
        help=f"report folder (default {DEFAULT_OUT}); with --index: folder for index.html "
        "(default: the runs' common parent)",
    )
    p.add_argument("--only", action="append", metavar="A[,B]", help=f"run only these analyses ({names})")
    p.add_argument("--skip", action="append", metavar="A[,B]", help="leave these analyses out")
    p.add_argument("--seed", type=arguments.seed_int, default=0, help="data and bootstrap seed")
    p.add_argument(
        "--num-sequences",
        type=arguments.positive_int,
        default=DEFAULT_NUM_SEQUENCES,
        help=f"random sequences per analysis (default {DEFAULT_NUM_SEQUENCES:,})",
    )
    p.add_argument(
        "--n-heads", type=arguments.positive_int, help="heads of a Flax checkpoint (others store it)"
    )
    p.add_argument("--name", help="run name shown in the report (default: the checkpoint's run folder)")
    p.add_argument(
        "--jobs",
        type=arguments.positive_int,
        default=min(2, os.cpu_count() or 1),
        help="analyses run in parallel processes (default: 2, or 1 on a one-core machine)",
    )
    p.add_argument("--svg", action="store_true", help="also write every analysis' figures as SVG")
    p.add_argument(
        "--certificate-boxes",
        type=arguments.positive_int,
        metavar="N",
        help=f"regions the certificate's proof may bound (default {pipeline.CERTIFICATE_BOXES:,}, about 10 s "
        "on the tutorial's model; the same bounds whatever the machine's load)",
    )
    p.add_argument(
        "--certificate-budget",
        type=arguments.positive_seconds,
        metavar="S",
        help="seconds the certificate's proof may branch (default: no time limit); alone, it replaces the "
        "box budget; with --certificate-boxes, the first to run out stops the proof",
    )
    p.add_argument(
        "--certificate-theorems",
        action="store_true",
        help="also compute the certificate's theorem columns (a bisection over every cell: ~15 s more on "
        "the default model)",
    )
    p.add_argument(
        "--index", nargs="+", type=arguments.path_arg, metavar="DIR", help="report folders to compare"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: 0 on success, 2 (and one ``error: ...`` line on stderr) for a user mistake."""

    def body() -> int:
        args = build_parser().parse_args(argv)
        if args.index:
            given = [f for f in ("checkpoint", "only", "skip", "name", "n_heads", "svg") if getattr(args, f)]
            if given:
                option = "--" + given[0].replace("_", "-")
                raise UserError(f"--index takes report folders only, not {option}")
            from reports.index import build_index, default_index_dir

            page = build_index(args.index, args.out or default_index_dir(args.index))
            print(f"wrote {page}")  # noqa: T201  (CLI output)
            return 0
        pipeline.parse_names(args.only, "--only")
        pipeline.parse_names(args.skip, "--skip")
        import torch

        from machine.allocator import keep_freed_memory

        torch.set_num_threads(1)  # small batches: one thread per process is fastest on a shared CPU
        keep_freed_memory()  # freed tensors' memory reused, not mapped afresh (workers inherit it)
        started = time.perf_counter()
        words = [Path(sys.executable).name, "-m", "reports.build", *(sys.argv[1:] if argv is None else argv)]
        page = build_report(
            args.checkpoint,
            args.out or DEFAULT_OUT,
            only=args.only,
            skip=args.skip or (),
            seed=args.seed,
            num_sequences=args.num_sequences,
            n_heads=args.n_heads,
            name=args.name,
            jobs=args.jobs,
            svg=args.svg,
            certificate_budget=args.certificate_budget,
            certificate_boxes=(
                args.certificate_boxes
                if args.certificate_boxes is not None or args.certificate_budget is not None
                else pipeline.CERTIFICATE_BOXES
            ),
            certificate_theorems=args.certificate_theorems,
            command=shlex.join(map(str, words)),
            log=lambda message: print(message, file=sys.stderr),  # noqa: T201
        )
        size = page.stat().st_size
        print(f"wrote {page} ({size / 1e6:.2f} MB) in {time.perf_counter() - started:.1f} s")  # noqa: T201
        return 0

    return run_cli(body)


if __name__ == "__main__":
    from machine.quick_exit import exit_process

    exit_process(main())
