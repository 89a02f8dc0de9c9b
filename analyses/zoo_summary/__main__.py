"""``python -m analyses.zoo_summary ZOO``: the command line (see ``--help``).

``--index`` also builds every run's full report and an index page comparing them. Those belong to
``reports``, the layer above the analyses, which analyses never import: they are made by
``python -m reports.build`` in child processes, exactly as a user would run it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from analyses.frame import command
from analyses.frame.arguments import ArgumentParser, path_arg
from analyses.frame.cli import UserError
from analyses.zoo_summary import ANALYSIS, DEFAULT_OUT, OUTPUTS, ZooSummaryResult, run
from analyses.zoo_summary.measure import DEFAULT_REFERENCE


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
        help="also build every run's full report into RUN/report/ (python -m reports.build; ~20 s per run, "
        "reused when up to date) and OUT/index.html comparing them",
    )
    return p


def reports_build(flags: Sequence[str]) -> None:
    """``python -m reports.build FLAGS`` in a child process; its ``error: ...`` line becomes ours."""
    done = subprocess.run(
        [sys.executable, "-m", "reports.build", *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if done.returncode != 0:
        errors = [line[len("error: ") :] for line in done.stderr.splitlines() if line.startswith("error: ")]
        raise UserError(
            f"python -m reports.build {' '.join(flags)}: "
            + (errors[-1] if errors else f"failed with exit code {done.returncode}")
        )


def build_index(result: ZooSummaryResult, args: argparse.Namespace, folder: Path) -> str:
    """Each run's full report in ``RUN/report/``, then ``folder/index.html`` linking them; returns the
    page's name."""
    zoo = Path(args.zoo)
    dirs = []
    for i, r in enumerate(result.runs, 1):
        if not args.quiet:
            print(f"report {i}/{len(result.runs)}: {r.name}", file=sys.stderr, flush=True)
        dirs.append(zoo / r.name / "report")
        reports_build(
            ["--checkpoint", str(zoo / r.name), "--out", str(dirs[-1]), "--seed", str(args.seed),
             "--num-sequences", str(args.num_sequences), "--name", r.name]
        )  # fmt: skip
    page = folder / "index.html"
    reports_build(["--index", *map(str, dirs), "--out", str(page)])
    return page.name


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: 0 on success, 2 (and one ``error: ...`` line on stderr) for a user mistake."""

    def compute(args: argparse.Namespace, folder: Path) -> ZooSummaryResult:
        result = run(
            args.zoo,
            **command.sampling_kwargs(args),
            reference=args.reference,
            device=args.device,
            progress=not args.quiet,
        )
        result.provenance = command.cli_provenance(
            ANALYSIS,
            args,
            argv,
            checkpoint=Path(args.zoo).absolute(),
            checkpoint_sha256=None,
            config={},
            runs=[{"name": r.name, "sha256": r.sha256} for r in result.runs],
        )
        if args.index:
            result.index_page = build_index(result, args, folder)
        return result

    return command.main(argv, build_parser(), compute, outputs=OUTPUTS)


if __name__ == "__main__":
    sys.exit(main())
