"""What every analysis command shares: its flags, its body and its output folder, written once.

Each analysis is a thin use of these general routines (TransformerLens' ``patching.py`` style):

- :func:`analysis_parser` — ``python -m analyses.<name>``'s parser with the shared flags
  (``--checkpoint``, ``--n-heads``, ``--num-sequences``, ``--seq-len``, ``--seed``, ``--out``,
  ``--device``, ``--batch-size``, ``--bootstrap-resamples``, ``--quiet``, ``--svg``), the same help text
  everywhere; the analysis adds its own flags.
- :class:`Outputs` — how an analysis writes OUT: ``metrics.json`` (``result.to_dict()``),
  ``metrics.csv`` (``result.csv_rows()`` under ``result.CSV_FIELDS``), ``figures/`` (its package's
  ``figures.make_figures``) and ``report.html`` (its package's ``report.html.j2``).
  :meth:`Outputs.write` is the Python API's ``write_outputs``: all or nothing, and a result made in
  Python gets a provenance record (no command line) like a CLI result.
- :func:`main` — the CLI body: parse, check ``--device``, open OUT first (an unwritable ``--out`` fails
  before any work), compute on one CPU thread, write, print ``result.summary()`` and ``wrote OUT``; a
  user mistake becomes one ``error: ...`` line and exit code 2 (:func:`analyses.frame.cli.run_cli`);
  with a second CPU, part of the work and of the figures runs in a forked process
  (:func:`machine.processes.parallel`: the same numbers).
- :func:`model_main` — :func:`main` for an analysis of one model: resolves ``--checkpoint``, checks
  ``--seq-len`` against the positional encoding, calls ``run(model, **flags)``, records provenance.

A result is an :class:`analyses.frame.result.AnalysisResult` with ``seed``, ``num_sequences``, a
``provenance`` dict and (for one model) ``config``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analyses.frame import arguments
from analyses.frame.cli import UserError, run_cli
from analyses.frame.figures import figure_formats
from analyses.frame.files import atomic_output_dir, write_csv, write_json
from analyses.frame.loading import resolve_model
from analyses.frame.provenance import provenance
from machine.processes import parallel

CHECKPOINT_HELP = (
    "model to analyse (our model.pt or run folder, the tutorial's .ckpt or Flax msgpack); "
    "default: the cached tutorial model, trained on first use"
)
N_HEADS_HELP = "heads of a Flax checkpoint (default 1; others store it)"
SEED_HELP = "seed of the evaluation sequences and the bootstrap resamples (default 0)"
QUIET_HELP = "no progress output (ours and TransformerLens' progress bars); results are still printed"
SVG_HELP = "also write every figure as SVG (vector graphics; PNG only by default, an SVG takes as long again)"
# The flags every analysis passes on to its ``run`` under the same name (``--seq-len`` where it has it).
SAMPLING_FLAGS = ("num_sequences", "seq_len", "seed", "batch_size", "bootstrap_resamples")


# --- flags ----------------------------------------------------------------------------------------
def analysis_parser(
    analysis: str,
    description: str,
    *,
    out: Path,
    num_sequences: int,
    batch_size: int = 1000,
    model: bool = True,
    seq_len: bool = True,
    sequences_help: str = "random sequences evaluated",
) -> arguments.ArgumentParser:
    """The parser of ``python -m analyses.<analysis>`` with the shared flags and defaults.

    ``model=False`` leaves out ``--checkpoint``/``--n-heads`` (analyses of a run or a zoo folder take
    their models from it); ``seq_len=False`` leaves out ``--seq-len`` (lengths chosen otherwise).
    """
    p = arguments.ArgumentParser(prog=f"python -m analyses.{analysis}", description=description)
    if model:
        p.add_argument("--checkpoint", type=arguments.path_arg, help=CHECKPOINT_HELP)
        p.add_argument("--n-heads", type=arguments.positive_int, help=N_HEADS_HELP)
    p.add_argument(
        "--num-sequences",
        type=arguments.positive_int,
        default=num_sequences,
        help=f"{sequences_help} (default {num_sequences})",
    )
    if seq_len:
        p.add_argument("--seq-len", type=arguments.positive_int, help="default: the model's training length")
    p.add_argument("--seed", type=arguments.seed_int, default=0, help=SEED_HELP)
    p.add_argument("--out", type=arguments.path_arg, default=out, help=f"output folder (default {out})")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument(
        "--batch-size",
        type=arguments.positive_int,
        default=batch_size,
        help=f"sequences per forward pass (default {batch_size})",
    )
    p.add_argument(
        "--bootstrap-resamples",
        type=arguments.resamples_int,
        default=1000,
        help="bootstrap resamples behind every CI (default 1000)",
    )
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    p.add_argument("--svg", action="store_true", help=SVG_HELP)
    return p


def sampling_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The shared flags as keyword arguments of an analysis' ``run`` (those the parser has)."""
    return {name: getattr(args, name) for name in SAMPLING_FLAGS if hasattr(args, name)}


def cli_provenance(
    analysis: str,
    args: argparse.Namespace,
    argv: Sequence[str] | None,
    *,
    checkpoint: str | Path | None,
    checkpoint_sha256: str | None,
    config: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """:func:`analyses.frame.provenance.provenance` of a CLI result (``argv`` None: ``sys.argv[1:]``)."""
    return provenance(
        analysis=analysis,
        checkpoint=checkpoint,
        checkpoint_sha256=checkpoint_sha256,
        config=config,
        seed=args.seed,
        num_sequences=args.num_sequences,
        argv=argv,
        device=args.device,
        **extra,
    )


def stderr_log(args: argparse.Namespace) -> Callable[[str], None] | None:
    """Progress lines to stderr, or None with ``--quiet``."""
    if args.quiet:
        return None
    return lambda message: print(message, file=sys.stderr, flush=True)


# --- outputs --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outputs:
    """How one analysis writes its output folder.

    The figures come from ``analyses.<analysis>.figures.make_figures(result, directory) -> captions``
    (``figures`` names another module), imported only when writing (matplotlib takes a second to
    import). ``source`` names the result's attribute holding what it was computed from (a run or zoo
    folder), recorded as the provenance ``checkpoint`` of a result made in Python.
    """

    analysis: str
    source: str | None = None
    figures: str | None = None

    def write_into(self, result: Any, folder: Path, *, svg: bool = False) -> None:
        """metrics.json, metrics.csv, figures/ (PNG; also SVG with ``svg``) and report.html into an
        existing (temporary) folder."""
        from analyses.frame.html import write_report  # lazy: Jinja2 only when a report is written

        module = self.figures or f"analyses.{self.analysis}.figures"
        document = result.to_dict()
        write_json(folder / "metrics.json", document)
        write_csv(folder / "metrics.csv", result.csv_rows(), result.CSV_FIELDS)
        with figure_formats(svg):
            captions = importlib.import_module(module).make_figures(result, folder / "figures")
        write_report(folder / "report.html", document, folder / "figures", captions)

    def write(self, result: Any, out: Path | str, *, svg: bool = False) -> Path:
        """Write metrics.json, metrics.csv, figures/ (PNG; also SVG with ``svg``) and report.html into
        ``out``, all or nothing (an existing ``out`` is replaced only on success); returns ``out``.
        This is every analysis' ``write_outputs``. A result without provenance (made from Python) gets
        one: no command line, a checkpoint only where ``source`` names one."""
        if not result.provenance:
            result.provenance = provenance(
                analysis=self.analysis,
                checkpoint=None if self.source is None else getattr(result, self.source),
                checkpoint_sha256=None,
                config=getattr(result, "config", {}),  # a zoo summary spans many configs: none
                seed=result.seed,
                num_sequences=result.num_sequences,
                from_cli=False,
            )
        with atomic_output_dir(Path(out)) as folder:
            self.write_into(result, folder, svg=svg)
        return Path(out)


# --- the command line -----------------------------------------------------------------------------
def main(
    argv: Sequence[str] | None,
    parser: argparse.ArgumentParser,
    compute: Callable[[argparse.Namespace, Path], Any],
    *,
    outputs: Outputs,
) -> int:
    """The CLI of an analysis: 0 on success, 2 and one ``error: ...`` line for a user mistake.

    ``compute(args, folder)`` returns the result with its provenance; ``folder`` is the temporary
    output folder, for an analysis that writes more than :class:`Outputs` does (zoo_summary's index).
    """

    def body() -> int:
        import torch

        from machine.allocator import keep_freed_memory

        args = parser.parse_args(argv)
        arguments.check_device(args.device)
        keep_freed_memory()  # freed tensors' memory reused, not mapped afresh: fewer page faults
        # One intra-op thread: these small batches gain little from a second one on an idle machine and
        # lose several-fold on a shared one, and results then do not depend on the machine's core count.
        # A second core, if there is one, computes part of the work in a forked process instead.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with parallel(), atomic_output_dir(args.out) as folder:  # an unwritable --out fails early
                result = compute(args, folder)
                outputs.write_into(result, folder, svg=getattr(args, "svg", False))
        finally:
            torch.set_num_threads(threads)
        print(result.summary())
        print(f"\nwrote {Path(args.out).absolute()}")
        return 0

    return run_cli(body)


def model_main(
    argv: Sequence[str] | None,
    parser: argparse.ArgumentParser,
    run: Callable[..., Any],
    *,
    outputs: Outputs,
    flags: Sequence[str] = (),
    recorded: Sequence[str] = (),
    progress: bool = False,
) -> int:
    """:func:`main` for an analysis of one model (a parser from :func:`analysis_parser`).

    Loads ``--checkpoint`` (or the cached default model, logging to stderr unless ``--quiet``), rejects
    a ``--seq-len`` beyond the model's positional encoding, then calls ``run(model, **shared flags,
    **flags)`` — ``flags`` names the analysis' own flags, passed under their ``args`` names; with
    ``progress`` also ``progress=not --quiet`` — and records the provenance, with the flags named in
    ``recorded`` added to it.
    """

    def compute(args: argparse.Namespace, folder: Path) -> Any:
        if args.checkpoint is not None:
            # os.path.realpath, not Path.resolve: Python 3.11's raises RuntimeError on a symlink loop
            # (load_model then names the loop)
            checkpoint = Path(os.path.realpath(Path(args.checkpoint).expanduser()))
            out = Path(os.path.realpath(Path(args.out).expanduser()))
            if checkpoint == out or out in checkpoint.parents:
                raise UserError(
                    f"--checkpoint {args.checkpoint} lies inside --out {args.out}, which is replaced whole: "
                    "write the output elsewhere"
                )
        loaded = resolve_model(
            args.checkpoint,
            n_heads=args.n_heads,
            device=args.device,
            log=stderr_log(args),
            seq_len=getattr(args, "seq_len", None),  # the trained-model check at the length analysed
        )
        if getattr(args, "seq_len", None) is not None:
            arguments.check_seq_len(loaded.model.cfg, args.seq_len, "--seq-len")
        own = {name: getattr(args, name) for name in flags}
        if progress:
            own["progress"] = not args.quiet
        result = run(loaded.model, **sampling_kwargs(args), **own)
        result.provenance = cli_provenance(
            outputs.analysis,
            args,
            argv,
            checkpoint=loaded.path,
            checkpoint_sha256=loaded.sha256,
            config=result.config,
            **{name: getattr(args, name) for name in recorded},
        )
        return result

    return main(argv, parser, compute, outputs=outputs)
