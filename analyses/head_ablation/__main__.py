"""``python -m analyses.head_ablation``: the command line (see ``--help``)."""

from __future__ import annotations

from collections.abc import Sequence

from analyses.frame import command
from analyses.frame.arguments import ArgumentParser, non_negative_int, positive_int
from analyses.head_ablation import ANALYSIS, DEFAULT_OUT, OUTPUTS, run
from analyses.head_ablation.measure import PERMUTATION_SEQUENCES


def build_parser() -> ArgumentParser:
    p = command.analysis_parser(
        ANALYSIS,
        "Ablate every attention head (zero / mean / resample), intervene on its pattern and run "
        "activation patching; effects with bootstrap CIs and Holm-corrected Wilcoxon tests.",
        out=DEFAULT_OUT,
        num_sequences=10_000,
    )
    p.add_argument("--permutations", type=non_negative_int, default=100, help="random row permutations")
    p.add_argument(
        "--permutation-sequences",
        type=positive_int,
        default=PERMUTATION_SEQUENCES,
        help=f"the first sequences every permutation runs on (default {PERMUTATION_SEQUENCES}; "
        "at least --num-sequences: all, as before schema 2)",
    )
    p.add_argument(
        "--reference-sequences",
        type=positive_int,
        default=1000,
        help="other sequences that resample ablation draws from",
    )
    p.add_argument("--patch-sequences", type=positive_int, default=200)
    p.add_argument(
        "--patch-position",
        type=non_negative_int,
        help="input position the patching corruption changes (default N//4)",
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
            "permutations",
            "permutation_sequences",
            "reference_sequences",
            "patch_sequences",
            "patch_position",
        ),
        progress=True,
    )


if __name__ == "__main__":
    from machine.quick_exit import exit_process

    exit_process(main())
