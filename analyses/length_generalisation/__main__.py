"""``python -m analyses.length_generalisation``: the command line (see ``--help``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from analyses.frame import command
from analyses.frame.arguments import ArgumentParser
from analyses.frame.cli import UserError
from analyses.length_generalisation import ANALYSIS, DEFAULT_OUT, OUTPUTS, LengthGeneralisationResult, run
from analyses.length_generalisation.lengths import (
    check_lengths,
    nothing_to_run_message,
    plan_lengths,
    skipped_message,
)
from analyses.length_generalisation.result import DEFAULT_LENGTHS


def _lengths(text: str) -> list[int]:
    """argparse type of ``--lengths``: comma-separated positive integers, each once."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers, got {text!r}"
        ) from None
    try:
        return check_lengths(values)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> ArgumentParser:
    p = command.analysis_parser(
        ANALYSIS,
        "Evaluate a model at other sequence lengths N′: accuracy, and whether query i attends to N′−1−i "
        "(the task) or to N_train−1−i (the position it learned), with bootstrap CIs.",
        out=DEFAULT_OUT,
        num_sequences=10_000,
        seq_len=False,
        sequences_help="random sequences evaluated at each length",
    )
    p.add_argument(
        "--lengths",
        type=_lengths,
        default=list(DEFAULT_LENGTHS),
        help=f"evaluation lengths N′, comma-separated (default {','.join(map(str, DEFAULT_LENGTHS))})",
    )
    return p


def _run_from_cli(model: Any, lengths: Sequence[int], **kwargs: Any) -> LengthGeneralisationResult:
    """:func:`run`, after failing on ``--lengths`` of which none can run, or saying once on stderr
    which ones will be skipped."""
    usable, skipped = plan_lengths(model.cfg, lengths)
    if not usable:
        raise UserError(f"--{nothing_to_run_message(model.cfg, lengths)}")
    if skipped:
        print(skipped_message(model.cfg, skipped), file=sys.stderr)
    return run(model, lengths=lengths, **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: 0 on success, 2 (and one ``error: ...`` line on stderr) for a user mistake."""
    return command.model_main(
        argv,
        build_parser(),
        _run_from_cli,
        outputs=OUTPUTS,
        flags=("lengths",),
        recorded=("lengths",),
    )


if __name__ == "__main__":
    from machine.quick_exit import exit_process

    exit_process(main())
