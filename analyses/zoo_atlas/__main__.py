"""``python -m analyses.zoo_atlas ZOO [ZOO ...]``: the command line (see ``--help``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from analyses.frame import command
from analyses.frame.arguments import ArgumentParser, path_arg, positive_int
from analyses.zoo_atlas import ANALYSIS, DEFAULT_OUT, OUTPUTS, ZooAtlasResult, run
from analyses.zoo_atlas.runs import find_runs
from interp.populations import SHARE_INTERVALS


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def build_parser() -> ArgumentParser:
    p = command.analysis_parser(
        ANALYSIS,
        "Mechanism atlas of a model zoo: per-run mechanism scalars and classes, a phase diagram over "
        "architecture × recipe with intervals, circuits compared across seeds after alignment.",
        out=DEFAULT_OUT,
        num_sequences=1000,
        model=False,
        seq_len=False,
        sequences_help="random sequences evaluated on every run",
    )
    p.add_argument(
        "zoos", nargs="+", type=path_arg, metavar="ZOO", help="zoo folders written by python -m models.zoo"
    )
    p.add_argument("--reference", help="run whose attention is the template (default: first tutorial-recipe "
                   "sinusoidal L1 H1 seed, else the first run)")  # fmt: skip
    p.add_argument("--iia-pairs", type=_non_negative, default=256,
                   help="(base, source) pairs for each head's IIA of z (default 256; 0: no IIA)")  # fmt: skip
    p.add_argument("--share-interval", choices=tuple(SHARE_INTERVALS), default="wilson",
                   help="interval of a class share (default wilson)")  # fmt: skip
    p.add_argument(
        "--confidence", type=float, default=0.95, help="confidence of every interval (default 0.95)"
    )
    p.add_argument("--dynamics", action="store_true",
                   help="run analyses.training_dynamics on every run with snapshots (zoo trained with "
                   "--save-every-log-steps K) and report the crossing order over seeds")  # fmt: skip
    p.add_argument("--dynamics-sequences", type=positive_int, default=500,
                   help="sequences per snapshot for --dynamics (default 500)")  # fmt: skip
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: 0 on success, 2 (and one ``error: ...`` line on stderr) for a user mistake."""

    def compute(args: argparse.Namespace, folder: Path) -> ZooAtlasResult:
        find_runs([Path(z) for z in args.zoos])  # a wrong ZOO is said before any model is loaded
        result = run(
            args.zoos,
            num_sequences=args.num_sequences,
            seed=args.seed,
            batch_size=args.batch_size,
            iia_pairs=args.iia_pairs,
            confidence=args.confidence,
            share_interval=args.share_interval,
            reference=args.reference,
            dynamics=args.dynamics,
            dynamics_sequences=args.dynamics_sequences,
            workdir=folder / "dynamics" if args.dynamics else None,
            device=args.device,
            progress=not args.quiet,
        )
        result.provenance = command.cli_provenance(
            ANALYSIS,
            args,
            argv,
            checkpoint=", ".join(result.zoos),
            checkpoint_sha256=None,
            config={},
            zoos=result.zoos,
            runs=[{"name": r.info.name, "sha256": r.sha256} for r in result.runs],
        )
        return result

    return command.main(argv, build_parser(), compute, outputs=OUTPUTS)


if __name__ == "__main__":
    from machine.quick_exit import exit_process

    exit_process(main())
