"""What every analysis command shares: atomic output, provenance, CLI errors, models, data.

- :func:`atomic_output_dir` builds OUT in a temporary sibling folder and renames it into place only
  after success, so an analysis leaves either its complete output or nothing.
- :func:`write_json`, :func:`write_csv`, :func:`write_text`, :func:`save_figure` write single files
  atomically (temp file in the same folder + ``os.replace``).
- :func:`provenance` records what produced a result; :func:`resolve_model` is the one door through
  which analyses get a model (``--checkpoint`` or the cached default model, trained on first use).
- :class:`ArgumentParser` and :func:`run_cli` turn user mistakes into ``error: ...`` + exit code 2.
- :func:`token_batches` streams evaluation sequences deterministically in constant memory.

:mod:`analyses.command` builds the shared shape of an analysis command from these.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as _dt
import io
import json
import math
import os
import platform
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.default_model import (  # noqa: F401  (re-exported: the CLIs' model cache)
    CACHE_ENV,
    DEFAULT_MODEL_NAME,
    DefaultModelError,
    cache_dir,
    default_model_dir,
    ensure_default_model,
)

# Evaluation sequences are generated in blocks of this many, each from its own seeded stream, so the
# data do not depend on the batch size.
_DATA_BLOCK = 4096
_PATTERN_ELEMENTS = 1 << 22
_VERSIONED_PACKAGES = ("torch", "numpy", "transformer-lens", "matplotlib", "jinja2", "scipy")


class UserError(Exception):
    """A mistake in the command line or its inputs: reported as one line, exit code 2."""


# --- atomic writers -------------------------------------------------------------------------------
def _atomic_write(path: Path, write: Callable[[io.IOBase], None], mode: str) -> Path:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": ""} if "b" not in mode else {})) as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; outputs are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _json_safe(obj: Any) -> Any:
    """NaN/inf → None, numpy/torch scalars and arrays → Python, tuples → lists, Paths → str."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, torch.Tensor | np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_text(path: Path, text: str) -> Path:
    return _atomic_write(path, lambda f: f.write(text), "w")


def write_bytes(path: Path, data: bytes) -> Path:
    return _atomic_write(path, lambda f: f.write(data), "wb")


def write_json(path: Path, obj: Any) -> Path:
    """Strict JSON (NaN written as null), indented, keys in insertion order."""
    text = json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n"
    return write_text(path, text)


def write_csv(path: Path, rows: Sequence[dict[str, Any]], fieldnames: Sequence[str]) -> Path:
    """One dict per row; None and NaN become empty cells."""

    def write(f: Any) -> None:
        writer = csv.DictWriter(f, fieldnames=list(fieldnames), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in _json_safe(row).items()})

    return _atomic_write(path, write, "w")


def save_figure(
    fig: Any, directory: Path, name: str, formats: Sequence[str] = ("png", "svg"), tight: bool = True
) -> list[Path]:
    """Save a matplotlib figure as ``directory/name.<fmt>`` for each format, then close it.

    ``tight=False`` skips ``bbox_inches="tight"`` (an extra draw per file) for figures whose layout
    engine already fits everything (``layout="constrained"``)."""
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    try:
        if fig.get_layout_engine() is not None and not tight:
            # Lay the figure out once, then freeze it: otherwise every format re-runs the layout.
            fig.draw_without_rendering()
            fig.set_layout_engine("none")
        for fmt in formats:
            buffer = io.BytesIO()
            # Fixed metadata so the same numbers give the same files.
            metadata_ = {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}
            extra = {"bbox_inches": "tight"} if tight else {}
            fig.savefig(buffer, format=fmt, dpi=120, metadata=metadata_, **extra)
            paths.append(write_bytes(directory / f"{name}.{fmt}", buffer.getvalue()))
    finally:
        plt.close(fig)
    return paths


def is_output_folder(folder: Path) -> bool:
    """Whether ``folder`` is an analysis' output: it holds a ``metrics.json`` naming the analysis
    (``"analysis"`` and ``"schema_version"`` keys), as every ``write_outputs`` writes."""
    try:
        document = json.loads((Path(folder) / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and "analysis" in document and "schema_version" in document


def check_replaceable(out: Path, flag: str = "--out") -> Path:
    """``out`` made absolute, if writing an output folder there may replace what is there: nothing,
    a file-free empty folder, or an earlier output folder (:func:`is_output_folder`). Anything else —
    the current folder or one containing it, a home or project folder, a training run — raises
    :class:`UserError` before any work is done: an output folder is replaced whole, and replacing a
    folder that is not one would delete the user's files."""
    raw = str(out)
    if not raw.strip():
        raise UserError(f"{flag} is empty: name the output folder")
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {out} exists and is not a folder")
    resolved, here = out.resolve(), Path.cwd().resolve()
    if resolved == here or resolved in here.parents:
        raise UserError(f"{flag} {out} is the current folder or contains it: name a new folder")
    if out.is_dir() and any(out.iterdir()) and not is_output_folder(out):
        raise UserError(
            f"{flag} {out} exists and is not an analysis output folder (no metrics.json naming an "
            "analysis): refusing to replace it; name a new or empty folder"
        )
    return out


@contextlib.contextmanager
def atomic_output_dir(out: Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``out``; on success it replaces ``out`` atomically.

    ``out`` must pass :func:`check_replaceable` (checked first: an existing folder is replaced only
    when it is empty or an earlier output). On any exception the temporary folder (and any parent
    folder created for it) is removed and an existing ``out`` is left untouched. Raises
    :class:`UserError` if ``out`` cannot be written.
    """
    out = check_replaceable(out)
    created: list[Path] = []  # parents we create, removed again on failure
    try:
        created = make_folders(out.parent)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    except OSError as e:
        remove_empty(created)
        raise UserError(f"cannot write to --out {out}: {e.strerror or e}") from None
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_empty(created)
        raise


def make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return those it created, deepest first (for
    :func:`remove_empty` on failure). On an ``OSError`` the ones made so far are removed again."""
    missing: list[Path] = []
    probe = Path(folder)
    while not probe.exists() and probe.parent != probe:
        missing.append(probe)
        probe = probe.parent
    made: list[Path] = []
    try:
        for path in reversed(missing):
            path.mkdir()
            made.insert(0, path)
    except OSError:
        remove_empty(made)
        raise
    return made


def remove_empty(folders: Sequence[Path]) -> None:
    """Remove each folder (deepest first) that is empty; leave any that holds something."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def replace_dir(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``, replacing an existing folder: it is moved aside first and deleted
    only once ``source`` is in place. Callers check that ``target`` may be replaced
    (:func:`check_replaceable`)."""
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.replace(target, old / target.name)
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)


# --- provenance -----------------------------------------------------------------------------------
def package_versions() -> dict[str, str | None]:
    """Versions of Python and the packages that shape the numbers (read from metadata, no imports)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("reverse-encoder-interp", *_VERSIONED_PACKAGES):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance(
    *,
    analysis: str,
    checkpoint: str | Path | None,
    checkpoint_sha256: str | None,
    config: dict[str, Any],
    seed: int,
    num_sequences: int,
    argv: Sequence[str] | None = None,
    from_cli: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """What produced a result: checkpoint (path + sha256; None for an in-memory model), model config,
    seed, data size, package versions, the command line and a UTC timestamp (the only field that
    differs between reruns).

    ``argv`` is the analysis CLI's argument list (None: ``sys.argv[1:]``); pass ``from_cli=False``
    for a result made from Python, whose command is then None.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    command = (
        shlex.join([Path(sys.executable).name, "-m", f"analyses.{analysis}", *map(str, args)])
        if from_cli
        else None
    )
    return {
        "analysis": analysis,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "checkpoint_sha256": checkpoint_sha256,
        "config": config,
        "seed": seed,
        "num_sequences": num_sequences,
        **extra,
        "packages": package_versions(),
        "command": command,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


# --- command line ---------------------------------------------------------------------------------
class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a mistake as one ``error: ...`` line (no usage dump) and exits with 2."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _int_at_least(text: str, minimum: int, kind: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {value}")
    return value


def path_arg(text: str) -> Path:
    """argparse type: a non-empty path (an empty one would silently mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path")
    return Path(text)


MAX_SEED = 2**32 - 1  # numpy's seeds: every generator here accepts 0 .. 2^32 - 1


def seed_int(text: str) -> int:
    """argparse type: a seed, an integer in 0 .. 2^32 - 1."""
    value = _int_at_least(text, 0, "non-negative")
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to {MAX_SEED}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1."""
    return _int_at_least(text, 1, "positive")


def non_negative_int(text: str) -> int:
    """argparse type: an integer ≥ 0."""
    return _int_at_least(text, 0, "non-negative")


def check_device(name: str) -> str:
    """The device name if torch can use it, else :class:`UserError` (before any work is done)."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device torch knows") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name}: the analyses run on cpu, cuda[:N] or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: MPS is not available on this machine")
    return name


def run_cli(body: Callable[[], int | None]) -> int:
    """Run a CLI body and return its exit code. User mistakes (``UserError``, ``ValueError``,
    ``OSError``) become one ``error: ...`` line on stderr and code 2; argparse's exits (``--help``,
    bad arguments) return their code. Anything else is a bug and keeps its traceback."""
    import matplotlib

    # Commands only write figure files: use the file backend whatever display the machine has
    # (library modules leave the backend alone so notebooks keep their inline figures).
    matplotlib.use("Agg")
    import signal
    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    # A kill (SIGTERM, e.g. from `timeout`) unwinds like Ctrl-C, so temporary folders are removed.
    previous = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
    try:
        return int(body() or 0)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except (UserError, ValueError, OSError) as e:
        message = str(e).strip()
        print(f"error: {message.splitlines()[0] if message else type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print("error: terminated", file=sys.stderr)
        return 143
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


class _Terminated(BaseException):
    """Raised by the SIGTERM handler of :func:`run_cli`."""


def _terminated(signum: int, frame: Any) -> None:
    raise _Terminated()


# --- models ---------------------------------------------------------------------------------------
@dataclass
class ResolvedModel:
    """A model in eval mode and where it came from."""

    model: Any  # models.HookedReverseEncoder
    path: Path
    sha256: str


def resolve_model(
    checkpoint: str | Path | None,
    n_heads: int | None = None,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
) -> ResolvedModel:
    """Load ``checkpoint`` (anything ``models.load_model`` reads: our ``model.pt`` or run folder, the
    tutorial's Lightning ``.ckpt``, its Flax msgpack) or, when None, the cached default model.

    ``n_heads`` only matters for Flax files (which do not store it). A checkpoint that cannot be read
    is a :class:`UserError` naming ``--checkpoint`` and the problem.
    """
    from models.checkpoints import CheckpointError, load_model

    path = Path(checkpoint).expanduser() if checkpoint is not None else ensure_default_model(log)
    try:
        model = load_model(path, n_heads=n_heads, device=device)
    except CheckpointError as e:
        raise UserError(f"{'--checkpoint' if checkpoint is not None else 'default model:'} {e}") from None
    # The file read (a run folder's model.pt) and its sha256, as load_model noted them: the same
    # provenance whether a result is made here or in Python from load_model.
    return ResolvedModel(model=model.eval(), path=Path(model.checkpoint_path), sha256=model.checkpoint_sha256)


def check_seq_len(cfg: Any, seq_len: int, name: str = "seq_len") -> None:
    """``ValueError`` (one line naming ``name``) when the model's positional encoding has no rows for
    ``seq_len`` positions (``cfg.max_positions``; None: no limit)."""
    limit = cfg.max_positions
    if limit is not None and seq_len > limit:
        raise ValueError(
            f"{name} {seq_len} exceeds what the model's {cfg.positional_embedding} positional encoding "
            f"supports ({limit} positions)"
        )


# --- data -----------------------------------------------------------------------------------------
def token_batches(
    num_sequences: int, seq_len: int, num_categories: int, seed: int, batch_size: int
) -> Iterator[torch.Tensor]:
    """Uniform random digit sequences ``[batch, seq_len]`` (int64), ``num_sequences`` in total.

    Deterministic in ``seed`` and independent of ``batch_size``: sequences come in fixed blocks, block
    b drawn from ``numpy.random.default_rng([seed, b])``. Memory is one block plus one batch; batches of
    long sequences are made smaller than ``batch_size`` so their attention patterns fit in memory.
    """
    for name, value in (("num_sequences", num_sequences), ("seq_len", seq_len), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    # Attention patterns grow as batch × N²: long sequences come in smaller batches so one batch's
    # [batch, head, N, N] stays near 16 MB per head (no effect at N = 16; batch 1 from N ≈ 2,048).
    batch_size = max(1, min(batch_size, _PATTERN_ELEMENTS // (seq_len * seq_len)))
    pending: list[torch.Tensor] = []
    have = 0
    for block, start in enumerate(range(0, num_sequences, _DATA_BLOCK)):
        size = min(_DATA_BLOCK, num_sequences - start)
        rng = np.random.default_rng([seed, block])
        pending.append(
            torch.from_numpy(rng.integers(0, num_categories, size=(size, seq_len), dtype=np.int64))
        )
        have += size
        while have >= batch_size or (have and start + size == num_sequences):
            data = torch.cat(pending) if len(pending) > 1 else pending[0]
            yield data[:batch_size]
            rest = data[batch_size:]
            pending, have = ([rest], len(rest)) if len(rest) else ([], 0)
