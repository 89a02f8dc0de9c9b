"""``python -m analyses.tolerance``: the command line (see ``--help``)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

from analyses.frame import command
from analyses.frame.arguments import ArgumentParser, non_negative_int, positive_int
from analyses.tolerance import ANALYSIS, DEFAULT_OUT, OUTPUTS, run
from analyses.tolerance.heads import parse_heads
from analyses.tolerance.measure import MIXES
from interp.pattern_families import TEMPERATURES
from interp.tolerance_verdict import SLACK_FRACTION


def _numbers(text: str) -> tuple[float, ...]:
    """argparse type of a grid: comma-separated finite numbers."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return values


def _level(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def _offset(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-zero integer, got {text!r}") from None
    if value == 0:
        raise argparse.ArgumentTypeError("expected a non-zero integer (0 is the flipped key itself)")
    return value


def _slack(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number ≥ 0, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number ≥ 0, got {text!r}")
    return value


def _heads(text: str) -> str | list[tuple[int, int]]:
    try:
        return parse_heads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _grid(values: Sequence[float]) -> str:
    return ",".join(f"{v:.3g}" for v in values)


def build_parser() -> ArgumentParser:
    p = command.analysis_parser(
        ANALYSIS,
        "Replace the flip head's attention by sharper, blurrier and mixed patterns; find the flip mass "
        "below which accuracy drops under 99% and 50%, the model's margin above it and the verdict on "
        "the tutorial's 'approximate, noisy attention' sentence; test the plurality-vote readout rule.",
        out=DEFAULT_OUT,
        num_sequences=1000,
    )
    p.add_argument(
        "--layer",
        type=non_negative_int,
        help="layer of the head (with --head; default: the flip head)",
    )
    p.add_argument("--head", type=non_negative_int, help="head to intervene on (with --layer)")
    p.add_argument(
        "--temperatures", type=_numbers, default=TEMPERATURES, help=f"τ grid (default {_grid(TEMPERATURES)})"
    )
    p.add_argument(
        "--mixes",
        type=_numbers,
        default=MIXES,
        help=f"mixing weights s in [0, 1] (default {_grid(MIXES)})",
    )
    p.add_argument(
        "--single-offset",
        type=_offset,
        default=1,
        help="key offset of the single-key family (default 1)",
    )
    p.add_argument(
        "--level",
        type=_level,
        default=0.99,
        help="accuracy level of the threshold (default 0.99)",
    )
    p.add_argument("--breaking-level", type=_level, default=0.5, help="the lower level (default 0.5)")
    p.add_argument(
        "--slack",
        type=_slack,
        default=None,
        help=f"margin in flip mass the verdict asks for (default: {SLACK_FRACTION:g} × the own flip mass)",
    )
    p.add_argument(
        "--adversarial-sequences",
        type=positive_int,
        default=500,
        help="isolated-digit inputs for the readout test and the beam searches (default 500)",
    )
    p.add_argument("--beam-width", type=positive_int, default=8, help="beam width of the worst-case search")
    p.add_argument("--beam-steps", type=positive_int, default=20, help="most steps of the worst-case search")
    p.add_argument(
        "--heads",
        type=_heads,
        default="auto",
        help="a set of heads also degraded jointly and one at a time: auto (every head whose zero ablation "
        "changes the logits; default), all, layer:L, none, or L.H,L.H",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: 0 on success, 2 (and one ``error: ...`` line on stderr) for a user mistake."""
    return command.model_main(
        argv,
        build_parser(),
        run,
        outputs=OUTPUTS,
        flags=(
            "layer",
            "head",
            "temperatures",
            "mixes",
            "single_offset",
            "level",
            "breaking_level",
            "slack",
            "adversarial_sequences",
            "beam_width",
            "beam_steps",
            "heads",
        ),
    )


if __name__ == "__main__":
    from machine.quick_exit import exit_process

    exit_process(main())
