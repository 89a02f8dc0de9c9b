"""``python -m analyses.qk_circuit``: the command line (see ``--help``)."""

from __future__ import annotations

from collections.abc import Sequence

from analyses.frame import command
from analyses.frame.arguments import ArgumentParser
from analyses.qk_circuit import ANALYSIS, DEFAULT_OUT, OUTPUTS, run


def build_parser() -> ArgumentParser:
    return command.analysis_parser(
        ANALYSIS,
        "Split layer 0's attention scores into position and token terms and test the tutorial's "
        "'similar positional encodings' explanation, with bootstrap CIs.",
        out=DEFAULT_OUT,
        num_sequences=2000,
        batch_size=500,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: 0 on success, 2 (and one ``error: ...`` line on stderr) for a user mistake."""
    return command.model_main(argv, build_parser(), run, outputs=OUTPUTS)


if __name__ == "__main__":
    from machine.quick_exit import exit_process

    exit_process(main())
