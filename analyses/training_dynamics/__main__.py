"""``python -m analyses.training_dynamics --run RUN [RUN ...]``: the command line (see ``--help``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from analyses.frame import command
from analyses.frame.arguments import ArgumentParser, non_negative_int, path_arg
from analyses.frame.cli import UserError
from analyses.training_dynamics import (
    ANALYSIS,
    DEFAULT_OUT,
    OUTPUTS,
    TrainingDynamicsResult,
    find_snapshots,
    run,
)
from analyses.training_dynamics.measure import FRACTIONS
from analyses.training_dynamics.seeds import across_runs
from models.storage.checkpoints import CheckpointError, sha256_file


def _fraction(text: str) -> float:
    """argparse type of ``--fractions``: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {value}")
    return value


def build_parser() -> ArgumentParser:
    p = command.analysis_parser(
        ANALYSIS,
        "Progress measures over a run's snapshots: when does the flip alignment form?",
        out=DEFAULT_OUT,
        num_sequences=2000,
        model=False,
        seq_len=False,
    )
    p.add_argument(
        "--run",
        type=path_arg,
        required=True,
        nargs="+",
        help="run folder with snapshots/ (train with --save-every-log-steps K); several runs (e.g. seeds of "
        "one recipe): run 1's full output plus the median crossing differences over the runs",
    )
    p.add_argument(
        "--window",
        type=non_negative_int,
        default=1,
        help="restricted loss keeps keys within this distance of the flipped key (default 1)",
    )
    p.add_argument(
        "--fractions",
        type=_fraction,
        nargs="+",
        default=list(FRACTIONS),
        help="threshold fractions of the way from initial to final value (default 0.1 0.5 0.9)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: 0 on success, 2 (and one ``error: ...`` line on stderr) for a user mistake."""

    def one(folder: Path, args: argparse.Namespace) -> TrainingDynamicsResult:
        snapshots = find_snapshots(folder)
        try:
            return run(
                snapshots,
                **command.sampling_kwargs(args),
                window=args.window,
                fractions=args.fractions,
                device=args.device,
                run_dir=folder,
            )
        except CheckpointError as e:
            raise UserError(f"--run {e}") from None

    def compute(args: argparse.Namespace, folder: Path) -> TrainingDynamicsResult:
        runs = list(dict.fromkeys(args.run))  # a run named twice counts once
        for r in runs:
            find_snapshots(r)  # every folder checked before the first is evaluated
        results = [one(r, args) for r in runs]
        result = results[0]
        if len(results) > 1:
            result.seeds = across_runs(results, result.confidence)

        def files(r: Path) -> dict:
            final = r / "model.pt"
            snapshots = [{"step": s, "file": str(p), "sha256": sha256_file(p)} for s, p in find_snapshots(r)]
            return {
                "checkpoint_sha256": sha256_file(final) if final.is_file() else None,
                "snapshots": snapshots,
            }

        first = files(runs[0])
        result.provenance = command.cli_provenance(
            ANALYSIS,
            args,
            argv,
            checkpoint=runs[0].absolute(),
            checkpoint_sha256=first["checkpoint_sha256"],
            config=result.config,
            snapshots=first["snapshots"],
            **({"runs": [{"run": str(r.absolute()), **files(r)} for r in runs]} if len(runs) > 1 else {}),
        )
        return result

    return command.main(argv, build_parser(), compute, outputs=OUTPUTS)


if __name__ == "__main__":
    from machine.quick_exit import exit_process

    exit_process(main())
