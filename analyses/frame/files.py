"""Files and folders written all or nothing: a reader never sees half an output.

- :func:`write_text`, :func:`write_bytes`, :func:`write_json`, :func:`write_csv` write one file
  atomically: a temporary file in the same folder, then ``os.replace`` (a rename, atomic on POSIX).
  JSON is strict (NaN and infinities become null), numpy/torch values become plain Python.
- :func:`atomic_output_dir` builds an output folder OUT in a temporary sibling and renames it into
  place only after success; on any exception (Ctrl-C and SIGTERM included) the temporary folder and
  any parent made for it are removed and an existing OUT is untouched. OUT must pass
  :func:`check_replaceable`: new, empty, or an earlier output folder (:func:`is_output_folder`).
- :func:`make_folders`, :func:`remove_empty` and :func:`replace_dir` are the pieces, also used by
  ``reports.build`` for its staging folder.

Concurrency and kills (:mod:`machine.staging`): checking OUT and replacing it happen under a
lock on OUT's parent folder, so two processes writing the same OUT both succeed, the last one whole,
and neither sees the other's half-way state; the temporary ``.OUT.tmp-*`` and ``.OUT.old-*`` folders
carry their creator's pid, and the next write of OUT removes those whose creator is dead (``kill -9``).
An OUT that cannot be removed (a read-only folder in it) is refused before any work.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from analyses.frame.cli import UserError
from machine import staging
from machine.names import output_path_problem


# --- single files ---------------------------------------------------------------------------------
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
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    if hasattr(obj, "tolist"):  # numpy arrays and torch tensors (torch is not imported here)
        return _json_safe(obj.tolist())
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


# --- output folders -------------------------------------------------------------------------------
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
    a file-free empty folder, or an earlier output folder (:func:`is_output_folder`) that this process
    can remove. Anything else — the current folder or one containing it, a home or project folder, a
    training run, a read-only output — raises :class:`UserError` before any work is done: an output
    folder is replaced whole, and replacing a folder that is not one would delete the user's files."""
    problem = output_path_problem(out)  # empty, not UTF-8, a broken symlink or a loop: said now
    if problem is not None:
        raise UserError(f"{flag} {problem}")
    out = Path(out).expanduser().absolute()
    with _lock_parent(out):
        return _check_replaceable(out, flag)


def _check_replaceable(out: Path, flag: str) -> Path:
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {out} exists and is not a folder")
    # os.path.realpath, not Path.resolve: Python 3.11's raises RuntimeError on a symlink loop
    resolved, here = Path(os.path.realpath(out)), Path(os.path.realpath(Path.cwd()))
    if resolved == here or resolved in here.parents:
        raise UserError(f"{flag} {out} is the current folder or contains it: name a new folder")
    if out.is_dir() and any(out.iterdir()):
        if not is_output_folder(out):
            raise UserError(
                f"{flag} {out} exists and is not an analysis output folder (no metrics.json naming an "
                "analysis): refusing to replace it; name a new or empty folder"
            )
        locked = _read_only_folder(out)
        if locked is not None:
            raise UserError(
                f"{flag} {out} cannot be replaced: {locked} is read-only (make it writable, or name "
                "another folder)"
            )
    return out


def _read_only_folder(out: Path) -> Path | None:
    """The first folder in ``out`` (itself included) whose entries this process cannot remove, as
    replacing ``out`` needs (moving ``out`` aside rewrites its ``..`` entry; deleting the old copy
    unlinks every entry)."""
    for folder, _, _ in os.walk(out):
        if not os.access(folder, os.W_OK | os.X_OK):
            return Path(folder)
    return None


@contextlib.contextmanager
def _lock_parent(out: Path) -> Iterator[None]:
    """:func:`staging.folder_lock` on ``out``'s parent when it exists (nothing to race otherwise)."""
    if out.parent.is_dir():
        with staging.folder_lock(out.parent):
            yield
    else:
        yield


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
        remove_stale_staging(out)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=staging.staging_prefix(f".{out.name}.tmp-")))
    except OSError as e:
        remove_empty(created)
        raise UserError(f"cannot write to --out {out}: {e.strerror or e}") from None
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        with staging.folder_lock(out.parent):
            _check_replaceable(out, "--out")  # again: another process may have written it since
            _replace_dir(tmp, out)
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


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove the ``.OUT.tmp-*`` / ``.OUT.old-*`` folders next to ``out`` that runs killed before
    they could clean up left behind (only those whose creator is dead: :func:`staging.remove_stale`)."""
    return staging.remove_stale(out.parent, (f".{out.name}.tmp-", f".{out.name}.old-"))


def replace_dir(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``, replacing an existing folder: it is moved aside first and deleted
    only once ``source`` is in place; under a lock on the parent folder, so concurrent replacements
    of the same target take turns. Callers check that ``target`` may be replaced
    (:func:`check_replaceable`). A target that cannot be moved is a :class:`UserError` that leaves
    ``source``, ``target`` and nothing else."""
    with staging.folder_lock(target.parent):
        _replace_dir(source, target)


def _replace_dir(source: Path, target: Path) -> None:
    if not target.exists():
        os.replace(source, target)
        return
    prefix = staging.staging_prefix(f".{target.name}.old-")
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=prefix))
    try:
        os.replace(target, old / target.name)
    except OSError as e:
        old.rmdir()
        raise UserError(f"cannot replace {target}: {e.strerror or e}") from None
    try:
        os.replace(source, target)
    except BaseException:
        os.replace(old / target.name, target)  # put the earlier folder back
        old.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)
