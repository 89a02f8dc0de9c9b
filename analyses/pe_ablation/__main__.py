"""``python -m analyses.pe_ablation``: the command line (see ``--help``)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

from analyses.frame import command
from analyses.frame.arguments import ArgumentParser, non_negative_int, positive_int
from analyses.pe_ablation import ANALYSIS, DEFAULT_OUT, OUTPUTS, run
from analyses.pe_ablation.measure import ALPHAS


def _alphas(text: str) -> tuple[float, ...]:
    """argparse type of ``--alphas``: comma-separated finite numbers, each once."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"each scale once, got {text!r}")
    return values


def build_parser() -> ArgumentParser:
    p = command.analysis_parser(
        ANALYSIS,
        "Ablate the positional encoding in many ways and measure accuracy, loss and flip mass with "
        "bootstrap CIs, against chance and the no-position ceiling.",
        out=DEFAULT_OUT,
        num_sequences=10_000,
    )
    p.add_argument("--shuffle-seeds", type=non_negative_int, default=5, help="random permutations")
    p.add_argument("--alphas", type=_alphas, default=ALPHAS, help="PE scales, comma-separated")
    p.add_argument("--monte-carlo-sequences", type=positive_int, default=100_000)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: 0 on success, 2 (and one ``error: ...`` line on stderr) for a user mistake."""
    return command.model_main(
        argv,
        build_parser(),
        run,
        outputs=OUTPUTS,
        flags=("alphas", "shuffle_seeds", "monte_carlo_sequences"),
    )


if __name__ == "__main__":
    from machine.quick_exit import exit_process

    exit_process(main())
