"""``python -m analyses.interchange``: the command line (see ``--help``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from analyses.frame import command
from analyses.frame.arguments import ArgumentParser
from analyses.interchange import ANALYSIS, DEFAULT_OUT, OUTPUTS, run
from interp.interchange import SITES


def _sites(text: str) -> tuple[str, ...]:
    """argparse type of ``--sites``: comma-separated site names, each once."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in SITES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected sites among {','.join(SITES)}, got {text!r}")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"each site once, got {text!r}")
    return names


def build_parser() -> ArgumentParser:
    p = command.analysis_parser(
        ANALYSIS,
        "Patch head outputs, attention outputs and residuals from a source run into a base run and "
        "measure how often the model follows the reverse program (IIA), with bootstrap CIs over pairs.",
        out=DEFAULT_OUT,
        num_sequences=1000,
        sequences_help="(base, source) pairs of random sequences",
    )
    p.add_argument(
        "--sites",
        type=_sites,
        default=SITES,
        help=f"sites to patch, comma-separated (default {','.join(SITES)})",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: 0 on success, 2 (and one ``error: ...`` line on stderr) for a user mistake."""
    return command.model_main(argv, build_parser(), run, outputs=OUTPUTS, flags=("sites",))


if __name__ == "__main__":
    from machine.quick_exit import exit_process

    exit_process(main())
