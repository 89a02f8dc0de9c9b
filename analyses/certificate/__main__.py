"""``python -m analyses.certificate``: the command line (see ``--help``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from analyses.certificate import ANALYSIS, DEFAULT_OUT, OUTPUTS, run
from analyses.certificate.measure import parse_suspect
from analyses.certificate.result import DEFAULT_BUDGET_SECONDS, METHODS
from analyses.frame import arguments, command
from analyses.frame.cli import UserError
from analyses.frame.loading import resolve_model
from analyses.frame.provenance import provenance


def build_parser() -> arguments.ArgumentParser:
    p = arguments.ArgumentParser(
        prog=f"python -m analyses.{ANALYSIS}",
        description="Certify a 1-layer model's accuracy over all C^N inputs: lower and upper bounds, the "
        "census of inputs it gets wrong, and the tutorial's 'approximate attention' sentence as a theorem.",
    )
    p.add_argument("--checkpoint", type=arguments.path_arg, help=command.CHECKPOINT_HELP)
    p.add_argument("--n-heads", type=arguments.positive_int, help=command.N_HEADS_HELP)
    p.add_argument("--seq-len", type=arguments.positive_int, help="default: the model's training length")
    p.add_argument(
        "--out", type=arguments.path_arg, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
    p.add_argument(
        "--method",
        choices=METHODS,
        default="auto",
        help="auto: enumerate every input when that is cheaper than the proof, else prove; proof: always "
        "prove (never evaluates complete inputs wholesale) (default auto)",
    )
    p.add_argument(
        "--budget-seconds",
        type=arguments.positive_seconds,
        help=f"wall-clock budget of the proof's branching; what is undecided then stays between the bounds "
        f"(default {DEFAULT_BUDGET_SECONDS:g}, or none with --budget-boxes alone)",
    )
    p.add_argument(
        "--budget-boxes",
        type=arguments.positive_int,
        metavar="N",
        help="deterministic budget of the proof: at most N regions bounded; the same model and N give the "
        "same bounds whatever the machine's load (with --budget-seconds too, the first to run out stops it)",
    )
    p.add_argument(
        "--max-examples", type=arguments.positive_int, default=20, help="wrong inputs listed (default 20)"
    )
    p.add_argument(
        "--max-regions",
        type=arguments.positive_int,
        default=1000,
        help="census regions listed (default 1000)",
    )
    p.add_argument(
        "--no-theorems",
        action="store_true",
        help="leave out the theorem columns (a bisection over every cell after the budget: ~15 s on the "
        "default model)",
    )
    p.add_argument(
        "--tolerance",
        type=arguments.path_arg,
        help="an analyses.tolerance output folder (or its metrics.json) whose sampled thresholds are shown "
        "next to the theorem",
    )
    p.add_argument(
        "--suspect",
        action="append",
        default=[],
        metavar="DIGITS",
        help="an input suspected wrong (e.g. 7777773773777777, or digits separated by spaces; repeatable): "
        "the proof first dives to the largest region around it that it can prove wrong, so the census "
        "holds it whatever the budget (--tolerance adds the wrong inputs its adversary found)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument(
        "--batch-size",
        type=arguments.positive_int,
        default=8192,
        help="inputs per forward (enumeration) / regions per bound batch (proof) (default 8192)",
    )
    p.add_argument("--quiet", action="store_true", help=command.QUIET_HELP)
    p.add_argument("--svg", action="store_true", help=command.SVG_HELP)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: 0 on success, 2 (and one ``error: ...`` line on stderr) for a user mistake, such as a
    model the certificate does not cover (two layers)."""

    def compute(args: argparse.Namespace, folder: Path):
        if args.checkpoint is not None:
            checkpoint = Path(args.checkpoint).expanduser().resolve()
            out = Path(args.out).expanduser().resolve()
            if checkpoint == out or out in checkpoint.parents:
                raise UserError(
                    f"--checkpoint {args.checkpoint} lies inside --out {args.out}, which is replaced whole: "
                    "write the output elsewhere"
                )
        loaded = resolve_model(
            args.checkpoint, n_heads=args.n_heads, device=args.device, log=command.stderr_log(args)
        )
        if args.seq_len is not None:
            arguments.check_seq_len(loaded.model.cfg, args.seq_len, "--seq-len")
        seq_len = args.seq_len or loaded.model.cfg.n_ctx
        suspects = [parse_suspect(s, loaded.model.cfg.d_vocab, seq_len) for s in args.suspect]
        from interp.certificate import CertificateUnsupported

        budget_seconds = args.budget_seconds
        if budget_seconds is None and args.budget_boxes is None:
            budget_seconds = DEFAULT_BUDGET_SECONDS
        try:
            result = run(
                loaded.model,
                args.seq_len,
                method=args.method,
                budget_seconds=budget_seconds,
                max_boxes=args.budget_boxes,
                max_examples=args.max_examples,
                max_regions=args.max_regions,
                batch_size=args.batch_size,
                tolerance=args.tolerance,
                suspects=suspects,
                theorems=not args.no_theorems,
                progress=command.stderr_log(args),
            )
        except CertificateUnsupported as e:
            raise UserError(f"cannot certify {loaded.path}: {e}") from None
        result.provenance = provenance(
            analysis=ANALYSIS,
            checkpoint=loaded.path,
            checkpoint_sha256=loaded.sha256,
            config=result.config,
            seed=None,
            num_sequences=None,
            argv=argv,
            device=args.device,
            method=args.method,
            budget_seconds=budget_seconds,
            max_boxes=args.budget_boxes,
            theorems=not args.no_theorems,
        )
        return result

    return command.main(argv, build_parser(), compute, outputs=OUTPUTS)


if __name__ == "__main__":
    from machine.quick_exit import exit_process

    exit_process(main())
