"""``python -m analyses.zoo_summary ZOO``: the command line (see ``--help``).

The per-run work — each run's evaluation, and with ``--index`` each run's full report — runs as Ray
tasks by default, like ``models.zoo.cli``: on an embedded local Ray instance, or with ``--address`` on a
running cluster; ``--engine sequential`` does it in this process (see
:mod:`analyses.zoo_summary.engine`). The numbers are the same either way.

``--index`` also builds every run's full report and an index page comparing them. Those belong to
``reports``, the layer above the analyses, which analyses never import: they are made by
``python -m reports.build`` in child processes, exactly as a user would run it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from analyses.frame import arguments, command
from analyses.frame.arguments import ArgumentParser, path_arg
from analyses.frame.cli import UserError
from analyses.zoo_summary import ANALYSIS, DEFAULT_OUT, OUTPUTS, ZooSummaryResult, run
from analyses.zoo_summary.engine import (
    ENGINES,
    SummaryEngine,
    build_report,
    map_runs,
    report_payload,
    reports_build,
)
from analyses.zoo_summary.measure import DEFAULT_REFERENCE
from analyses.zoo_summary.runs import discover

CERTIFY_BUDGET = 60.0


def build_parser() -> ArgumentParser:
    p = command.analysis_parser(
        ANALYSIS,
        "Flip mass, neighbour mass and zero-PE accuracy across the seeds and architectures of a zoo.",
        out=DEFAULT_OUT,
        num_sequences=2000,
        model=False,
        seq_len=False,
        sequences_help="random sequences evaluated on every run",
    )
    p.add_argument("zoo", type=path_arg, help="zoo folder written by python -m models.zoo")
    p.add_argument(
        "--reference",
        default=DEFAULT_REFERENCE,
        help=f"architecture the others are compared with (default {DEFAULT_REFERENCE!r})",
    )
    p.add_argument(
        "--index",
        action="store_true",
        help="also build every run's report (every analysis, or --report-only's) into RUN/report/ "
        "(python -m reports.build; ~20 s per run, reused when up to date) and OUT/index.html comparing them",
    )
    p.add_argument(
        "--report-only",
        metavar="A,B",
        type=_analysis_names,
        help="with --index: each run's report holds only these analyses (reports.build --only; default all)",
    )
    p.add_argument(
        "--certify",
        action="store_true",
        help="also certify every 1-layer run's per-digit accuracy over all C^N inputs (interp.certify): "
        "lower and upper bounds per run and over seeds",
    )
    p.add_argument(
        "--certify-budget",
        type=arguments.positive_seconds,
        metavar="S",
        help=f"seconds of proof per run with --certify (default {CERTIFY_BUDGET:g}, or none with "
        "--certify-boxes alone)",
    )
    p.add_argument(
        "--certify-boxes",
        type=arguments.positive_int,
        metavar="N",
        help="regions the proof may bound per run with --certify (the engine's max_boxes): a budget that "
        "gives the same bounds whatever the machine's load, so runs are compared on equal work",
    )
    g = p.add_argument_group("the engine (as python -m models.zoo)")
    g.add_argument(
        "--engine", choices=ENGINES, default="ray", help="ray (default) or sequential (this process)"
    )
    g.add_argument("--address", help="join a running Ray cluster: auto or HOST:PORT (default: embedded Ray)")
    g.add_argument(
        "--cpus-per-task",
        type=_positive_number,
        default=1.0,
        help="Ray CPUs per task (default 1; a report task runs reports.build with that many --jobs)",
    )
    return p


def _analysis_names(text: str) -> str:
    """A comma-separated list of analysis names (reports.build checks that it knows each one)."""
    names = [n.strip() for n in text.split(",")]
    if not all(n.isidentifier() for n in names):
        raise argparse.ArgumentTypeError(f"expected analysis names separated by commas, got {text!r}")
    return ",".join(names)


def _positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def build_index(
    result: ZooSummaryResult, args: argparse.Namespace, folder: Path, engine: SummaryEngine
) -> str:
    """Each run's report (every analysis, or those of ``--report-only``) in ``RUN/report/`` (a task
    each on ``engine``), then ``folder/index.html`` linking them; returns the page's name."""
    zoo = Path(args.zoo).absolute()
    # The sequential engine gives reports.build its default --jobs, a Ray task as many as its CPUs.
    jobs = ["--jobs", str(max(1, int(engine.cpus_per_task)))] if engine.engine == "ray" else []
    payloads = [
        report_payload(
            zoo / r.name,
            [
                "--checkpoint",
                str(zoo / r.name),
                "--out",
                str(zoo / r.name / "report"),
                "--seed",
                str(args.seed),
                "--num-sequences",
                str(args.num_sequences),
                "--name",
                r.name,
                *jobs,
                *(["--only", args.report_only] if args.report_only else []),
            ],
        )  # fmt: skip
        for r in result.runs
    ]
    map_runs(build_report, payloads, engine, command.stderr_log(args), "report")
    page = folder / "index.html"
    reports = [str(zoo / r.name / "report") for r in result.runs]
    error = reports_build(["--index", *reports, "--out", str(page)])
    if error is not None:
        raise UserError(error)
    return page.name


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: 0 on success, 2 (and one ``error: ...`` line on stderr) for a user mistake."""

    def compute(args: argparse.Namespace, folder: Path) -> ZooSummaryResult:
        if args.report_only and not args.index:
            raise UserError("--report-only chooses the analyses of --index's reports: add --index")
        for flag in ("budget", "boxes"):
            if getattr(args, f"certify_{flag}") is not None and not args.certify:
                raise UserError(f"--certify-{flag} is the budget of --certify: add --certify")
        certify_boxes = args.certify_boxes
        certify_budget = args.certify_budget
        if args.certify and certify_budget is None and certify_boxes is None:
            certify_budget = CERTIFY_BUDGET
        engine = SummaryEngine(engine=args.engine, address=args.address, cpus_per_task=args.cpus_per_task)
        engine.check(args.device)
        discover(args.zoo)  # a wrong ZOO is said before Ray starts
        with engine.session():  # one Ray instance for the evaluations and the reports
            result = run(
                args.zoo,
                **command.sampling_kwargs(args),
                reference=args.reference,
                device=args.device,
                progress=not args.quiet,
                engine=engine,
                certify_budget=certify_budget,
                certify_boxes=certify_boxes,
            )
            result.provenance = command.cli_provenance(
                ANALYSIS,
                args,
                argv,
                checkpoint=Path(args.zoo).absolute(),
                checkpoint_sha256=None,
                config={},
                runs=[{"name": r.name, "sha256": r.sha256} for r in result.runs],
                certify_budget=certify_budget,
                certify_boxes=certify_boxes,
            )
            if args.index:
                result.index_page = build_index(result, args, folder, engine)
        return result

    return command.main(argv, build_parser(), compute, outputs=OUTPUTS)


if __name__ == "__main__":
    from machine.quick_exit import exit_process

    exit_process(main())
