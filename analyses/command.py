"""What every analysis command shares: its flags, its body and its output folder, written once.

Each analysis is a thin use of these general routines (TransformerLens' ``patching.py`` style):

- :func:`analysis_parser` — ``python -m analyses.<name>``'s parser with the shared flags
  (``--checkpoint``, ``--n-heads``, ``--num-sequences``, ``--seq-len``, ``--seed``, ``--out``,
  ``--device``, ``--batch-size``, ``--bootstrap-resamples``), the same help text everywhere;
  the analysis adds its own flags.
- :class:`Outputs` — how an analysis writes OUT: ``metrics.json`` (``result.to_dict()``),
  ``metrics.csv`` (``result.csv_rows()``), ``figures/`` (its ``*_figures.make_figures``) and
  ``report.html``. :meth:`Outputs.write` is the Python API's ``write_outputs``: all or nothing, and a
  result made in Python gets a provenance record (no command line) like a CLI result.
- :func:`main` — the CLI body: parse, check ``--device``, open OUT first (an unwritable ``--out`` fails
  before any work), compute, write, print the summary and ``wrote OUT``; a user mistake becomes one
  ``error: ...`` line and exit code 2 (:func:`analyses.common.run_cli`).
- :func:`model_main` — :func:`main` for an analysis of one model: resolves ``--checkpoint``, checks
  ``--seq-len`` against the positional encoding, calls ``run(model, **flags)``, records provenance.

A result is any object with ``to_dict()``, ``csv_rows()``, ``seed``, ``num_sequences``, a
``provenance`` dict and (for one model) ``config``.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analyses import common

CHECKPOINT_HELP = (
    "model to analyse (our model.pt or run folder, the tutorial's .ckpt or Flax msgpack); "
    "default: the cached tutorial model, trained on first use"
)
N_HEADS_HELP = "heads of a Flax checkpoint (default 1; others store it)"
SEED_HELP = "seed of the evaluation sequences and the bootstrap resamples (default 0)"
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
) -> common.ArgumentParser:
    """The parser of ``python -m analyses.<analysis>`` with the shared flags and defaults.

    ``model=False`` leaves out ``--checkpoint``/``--n-heads`` (analyses of a run or a zoo folder take
    their models from it); ``seq_len=False`` leaves out ``--seq-len`` (lengths chosen otherwise).
    """
    p = common.ArgumentParser(prog=f"python -m analyses.{analysis}", description=description)
    if model:
        p.add_argument("--checkpoint", type=common.path_arg, help=CHECKPOINT_HELP)
        p.add_argument("--n-heads", type=common.positive_int, help=N_HEADS_HELP)
    p.add_argument(
        "--num-sequences",
        type=common.positive_int,
        default=num_sequences,
        help=f"{sequences_help} (default {num_sequences})",
    )
    if seq_len:
        p.add_argument("--seq-len", type=common.positive_int, help="default: the model's training length")
    p.add_argument("--seed", type=common.seed_int, default=0, help=SEED_HELP)
    p.add_argument("--out", type=common.path_arg, default=out, help=f"output folder (default {out})")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument(
        "--batch-size",
        type=common.positive_int,
        default=batch_size,
        help=f"sequences per forward pass (default {batch_size})",
    )
    p.add_argument(
        "--bootstrap-resamples",
        type=common.positive_int,
        default=1000,
        help="bootstrap resamples behind every CI (default 1000)",
    )
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
    """:func:`analyses.common.provenance` of a CLI result (``argv`` None: ``sys.argv[1:]``)."""
    return common.provenance(
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


# --- provenance of results made in Python ----------------------------------------------------------
def records_source(analysis: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate an analysis' ``run(model, ...)`` so its result carries a provenance record naming the
    checkpoint the model was loaded from (``models.load_model`` notes path and sha256 on the model) —
    a notebook user's ``write_outputs(run(load_model(p)), out)`` then says which weights it measured.
    The CLI replaces this record by its own, which adds the command line."""

    def decorate(run: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(run)
        def wrapper(model: Any, *args: Any, **kwargs: Any) -> Any:
            result = run(model, *args, **kwargs)
            result.provenance = common.provenance(
                analysis=analysis,
                checkpoint=getattr(model, "checkpoint_path", None),
                checkpoint_sha256=getattr(model, "checkpoint_sha256", None),
                config=result.config,
                seed=result.seed,
                num_sequences=result.num_sequences,
                from_cli=False,
            )
            return result

        return wrapper

    return decorate


# --- outputs --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outputs:
    """How one analysis writes its output folder.

    ``figures`` names the module whose ``make_figures(result, directory) -> captions`` draws the
    figures; it is imported only when writing (matplotlib takes a second to import). ``source`` names
    the result's attribute holding what it was computed from (a run or zoo folder), recorded as the
    provenance ``checkpoint`` of a result made in Python.
    """

    analysis: str
    csv_fields: Sequence[str]
    figures: str
    source: str | None = None

    def write_into(self, result: Any, folder: Path) -> None:
        """metrics.json, metrics.csv, figures/ and report.html into an existing (temporary) folder."""
        from reports.render import write_report  # lazy: Jinja2 only when a report is written

        make_figures = importlib.import_module(self.figures).make_figures
        document = result.to_dict()
        common.write_json(folder / "metrics.json", document)
        common.write_csv(folder / "metrics.csv", result.csv_rows(), self.csv_fields)
        captions = make_figures(result, folder / "figures")
        write_report(folder / "report.html", document, folder / "figures", captions)

    def write(self, result: Any, out: Path | str) -> Path:
        """Write metrics.json, metrics.csv, figures/ and report.html into ``out``, all or nothing
        (an existing ``out`` is replaced only on success); returns ``out``. This is every analysis'
        ``write_outputs``. A result without provenance (made from Python) gets one: no command
        line, a checkpoint only where ``source`` names one."""
        if not result.provenance:
            result.provenance = common.provenance(
                analysis=self.analysis,
                checkpoint=None if self.source is None else getattr(result, self.source),
                checkpoint_sha256=None,
                config=getattr(result, "config", {}),  # a zoo summary spans many configs: none
                seed=result.seed,
                num_sequences=result.num_sequences,
                from_cli=False,
            )
        with common.atomic_output_dir(Path(out)) as folder:
            self.write_into(result, folder)
        return Path(out)


# --- the command line -----------------------------------------------------------------------------
def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(
    argv: Sequence[str] | None,
    parser: argparse.ArgumentParser,
    compute: Callable[[argparse.Namespace, Path], Any],
    *,
    outputs: Outputs,
    summary: Callable[[Any], str],
) -> int:
    """The CLI of an analysis: 0 on success, 2 and one ``error: ...`` line for a user mistake.

    ``compute(args, folder)`` returns the result with its provenance; ``folder`` is the temporary
    output folder, for an analysis that writes more than :class:`Outputs` does (zoo_summary's index).
    """

    def body() -> int:
        args = parser.parse_args(argv)
        common.check_device(args.device)
        with common.atomic_output_dir(args.out) as folder:  # first: an unwritable --out fails early
            result = compute(args, folder)
            outputs.write_into(result, folder)
        print(summary(result))
        print(f"\nwrote {Path(args.out).absolute()}")
        return 0

    return common.run_cli(body)


def model_main(
    argv: Sequence[str] | None,
    parser: argparse.ArgumentParser,
    run: Callable[..., Any],
    *,
    outputs: Outputs,
    summary: Callable[[Any], str],
    flags: Sequence[str] = (),
    recorded: Sequence[str] = (),
) -> int:
    """:func:`main` for an analysis of one model (a parser from :func:`analysis_parser`).

    Loads ``--checkpoint`` (or the cached default model, logging to stderr), rejects a ``--seq-len``
    beyond the model's positional encoding, then calls ``run(model, **shared flags, **flags)`` —
    ``flags`` names the analysis' own flags, passed under their ``args`` names — and records the
    provenance, with the flags named in ``recorded`` added to it.
    """

    def compute(args: argparse.Namespace, folder: Path) -> Any:
        if args.checkpoint is not None:
            checkpoint = Path(args.checkpoint).expanduser().resolve()
            out = Path(args.out).expanduser().resolve()
            if checkpoint == out or out in checkpoint.parents:
                raise common.UserError(
                    f"--checkpoint {args.checkpoint} lies inside --out {args.out}, which is replaced whole: "
                    "write the output elsewhere"
                )
        loaded = common.resolve_model(args.checkpoint, n_heads=args.n_heads, device=args.device, log=_stderr)
        if getattr(args, "seq_len", None) is not None:
            common.check_seq_len(loaded.model.cfg, args.seq_len, "--seq-len")
        result = run(loaded.model, **sampling_kwargs(args), **{name: getattr(args, name) for name in flags})
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

    return main(argv, parser, compute, outputs=outputs, summary=summary)
