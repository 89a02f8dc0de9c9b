"""``python -m analyses.flip_alignment``: the command line (see ``--help``)."""

from __future__ import annotations

from collections.abc import Sequence

from analyses.flip_alignment import ANALYSIS, DEFAULT_OUT, OUTPUTS, run
from analyses.frame import command
from analyses.frame.arguments import ArgumentParser


def build_parser() -> ArgumentParser:
    return command.analysis_parser(
        ANALYSIS,
        "Measure how every attention head aligns with the flip i → N−1−i, with bootstrap CIs.",
        out=DEFAULT_OUT,
        num_sequences=10_000,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: 0 on success, 2 (and one ``error: ...`` line on stderr) for a user mistake."""
    return command.model_main(argv, build_parser(), run, outputs=OUTPUTS)


if __name__ == "__main__":
    from machine.quick_exit import exit_process

    exit_process(main())
