"""Model files that are what was written: atomic writes, a sha256 record per folder, safe reading.

Every model file this toolkit writes (``model.pt``, ``snapshots/step_*.pt``, the Lightning checkpoints
of a run, :func:`models.save_model` and Flax exports) goes through :func:`atomic_write`: a temp file
in the target's folder, mode 0644, fsync, ``os.replace``. Its sha256 is then recorded in the folder's
``SHA256SUMS`` (``<hex>  <name>`` lines, so ``sha256sum -c SHA256SUMS`` checks a folder by hand).

The record is updated so that a ``kill -9`` at any instant leaves it true: the file's old entry is
dropped *before* the new file is renamed into place and the new entry is added after, so a killed
write leaves at worst a file without an entry (loaded unverified), never an entry that does not match.
Read-modify-writes of ``SHA256SUMS`` hold an ``flock`` on the folder; one writer per file is assumed.

Reading: :func:`readable_file_problem` names what a path is when it is not a regular file (a FIFO is
never opened for reading: it would block), :func:`verify_recorded` compares a file with its recorded
sha256, and :func:`check_zip` refuses a ``torch.save`` zip whose members declare more bytes than a
checkpoint of the largest model :mod:`models.encoder.config` builds, or that inflate far beyond the file's own
size (a decompression bomb), before ``torch.load`` allocates anything; for a zip without a recorded
sha256 it also checks every member's CRC-32. No torch import here.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import os
import re
import stat
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

SUMS_NAME = "SHA256SUMS"
FILE_MODE = 0o644  # as every other output (analyses.common writes 0644 too); mkstemp would give 0600
# A full Lightning checkpoint of the largest model models.encoder.config builds (MAX_ELEMENTS = 2**30 float32
# weights, 4 GiB) holds the weights and Adam's two moment tensors, 3 x 4 GiB; 1 GiB more for everything
# else. Written out rather than imported so that this module stays free of torch (a test checks both
# agree): 3 * 4 * MAX_ELEMENTS + 2**30.
MAX_CHECKPOINT_BYTES = 13 << 30
# torch.save stores every zip member uncompressed, so a checkpoint's members add up to at most its own
# size; float32 weights recompressed by another tool shrink by ~10%. Declared contents larger than
# MAX_INFLATION times the file (and than INFLATION_FLOOR, harmless whatever the ratio) are a bomb.
MAX_INFLATION = 8
INFLATION_FLOOR = 64 << 20
MAX_SUMS_BYTES = 16 << 20
_SUMS_LINE = re.compile(r"([0-9a-f]{64}) [ *](.+)")


class CheckpointError(ValueError):
    """A checkpoint cannot be read or written; the message names the file and the problem."""


class ChecksumMismatch(CheckpointError):
    """A file's sha256 differs from the one recorded when it was written."""

    def __init__(self, path: Path, actual: str, expected: str, sums: Path):
        self.path, self.actual, self.expected, self.sums = path, actual, expected, sums
        super().__init__(
            f"{path}: sha256 {actual[:12]}... differs from {expected[:12]}... recorded in {sums} when it "
            "was written: the file is corrupt or was changed; restore it from a copy or write it again "
            "(a run: python -m models.train with its flags and --overwrite)"
        )


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


# --------------------------------------------------------------------------------------------------
# What a path is.
def readable_file_problem(path: str | os.PathLike) -> str | None:
    """None when ``path`` is a regular file, else what it is instead, in words ("no such file",
    "is a FIFO (named pipe), not a regular file", "is a symlink loop", ...). Never opens the path."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if path.is_symlink():
            return f"is a broken symlink (to {os.readlink(path)})"
        return "no such file"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symlink loop (each link points back to another)"
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    kinds = [
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ]
    kind = next((name for test, name in kinds if test(mode)), "not a regular file")
    return f"is {kind}, not a regular file"


@contextlib.contextmanager
def open_regular(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open a regular file for reading, or raise :class:`CheckpointError` naming what it is.

    ``O_NONBLOCK`` makes opening a FIFO return at once (a plain open would wait for a writer), and
    ``fstat`` of the opened descriptor closes the window between checking the path and opening it.
    """
    problem = readable_file_problem(path)
    if problem is not None:
        raise CheckpointError(f"{path}: {problem}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CheckpointError(f"{path}: {readable_file_problem(path) or 'is not a regular file'}")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as f:
        yield f


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (``CheckpointError`` when it is not a readable regular file)."""
    digest = hashlib.sha256()
    with open_regular(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# The record: FOLDER/SHA256SUMS.
def read_sums(folder: str | os.PathLike) -> dict[str, str]:
    """{file name: hex sha256} recorded in ``folder/SHA256SUMS`` ({} when there is none)."""
    sums = Path(folder) / SUMS_NAME
    if not os.path.lexists(sums):
        return {}
    with open_regular(sums) as f:
        data = f.read(MAX_SUMS_BYTES + 1)
    fix = "repair or delete it (its files then load unverified)"
    if len(data) > MAX_SUMS_BYTES:
        raise CheckpointError(f"{sums}: larger than {_gib(MAX_SUMS_BYTES)}, not a record of sums; {fix}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{sums}: not UTF-8 text, so the record is corrupt; {fix}") from None
    entries = {}
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            match = _SUMS_LINE.fullmatch(line)
            if match is None:
                raise CheckpointError(f"{sums}: line {number} is not '<sha256>  <file name>'; {fix}")
            entries[match.group(2)] = match.group(1)
    return entries


def recorded_sha256(path: str | os.PathLike) -> str | None:
    """The sha256 recorded for ``path`` when it was written, or None (no record: e.g. a tutorial
    checkpoint, a Flax file, or a run written before records existed). Symlinks are followed, so a
    link to a run's ``model.pt`` is checked against the run's record."""
    real = Path(os.path.realpath(path))
    return read_sums(real.parent).get(real.name)


def verify_recorded(path: str | os.PathLike, digest: str | None = None) -> str | None:
    """Compare ``path`` (or its already computed ``digest``) with its recorded sha256.

    Returns the recorded sha256 (None without a record); raises :class:`ChecksumMismatch` (a
    :class:`CheckpointError`) on a mismatch, naming the file, both sums and what to do.
    """
    try:
        expected = recorded_sha256(path)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: cannot be verified: {exc}") from None
    if expected is None:
        return None
    actual = digest if digest is not None else sha256_file(path)
    if actual != expected:
        raise ChecksumMismatch(Path(path), actual, expected, Path(os.path.realpath(path)).parent / SUMS_NAME)
    return expected


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _update_sums(folder: Path, name: str, digest: str | None) -> None:
    """Set (``digest``) or drop (None) the entry of ``name`` in ``folder/SHA256SUMS``, atomically."""
    if "\n" in name or "\\" in name:
        return  # sha256sum escapes such names; ours never contain them, and they stay unrecorded
    with _locked(folder):
        try:
            entries = read_sums(folder)
        except CheckpointError:
            entries = {}  # a corrupt record is replaced; the files it covered become unverified
        if entries.get(name) == digest:
            return
        if digest is None:
            entries.pop(name, None)
        else:
            entries[name] = digest
        sums = folder / SUMS_NAME
        if not entries:
            with contextlib.suppress(FileNotFoundError):
                sums.unlink()
            return
        text = "".join(f"{entries[key]}  {key}\n" for key in sorted(entries))
        atomic_write(sums, lambda f: f.write(text.encode()), record=False)


def forget(path: str | os.PathLike) -> None:
    """Drop ``path``'s entry from its folder's record (before replacing or removing the file)."""
    path = Path(path)
    if (path.parent / SUMS_NAME).exists():
        _update_sums(path.parent, path.name, None)


def remove(path: str | os.PathLike) -> None:
    """Remove a recorded file: its entry first, then the file."""
    forget(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc`` (torch.save reports a full disk as a RuntimeError whose context
    holds the OSError), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object], record: bool = True) -> str:
    """Write ``path`` through a temp file in its folder, then ``os.replace``; return its sha256.

    Never a half-written file: on any failure the temp file is removed and ``path`` keeps its old
    content (the temp file of a writer killed with -9 is removed by the next write of ``path``). A
    write that fails for lack of space (or any other OSError, also when torch.save wraps it in a
    RuntimeError) raises that ``OSError`` with ``path`` as its file name. With ``record`` the sha256
    goes into the folder's ``SHA256SUMS`` (see the module docstring for the order).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):  # left by a writer killed with -9
        with contextlib.suppress(OSError):
            stale.unlink()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        digest = sha256_file(tmp)
        if record:
            forget(path)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        cause = _os_error(exc) if isinstance(exc, RuntimeError) else None
        if cause is not None and cause.errno is not None:
            raise OSError(cause.errno, cause.strerror, str(path)) from None
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    if record:
        _update_sums(path.parent, path.name, digest)
    return digest


# --------------------------------------------------------------------------------------------------
# torch.save zips.
def check_zip(path: str | os.PathLike, crc: bool) -> None:
    """Refuse a zip whose members declare more than :data:`MAX_CHECKPOINT_BYTES` in all (or in one),
    or more than :data:`MAX_INFLATION` times the file's size (a decompression bomb), from the central
    directory alone, before anything is inflated. With ``crc`` every member's CRC-32 is then checked
    (``torch.load`` does not), which catches bit rot in files that have no recorded sha256."""
    path = Path(path)
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            with zipfile.ZipFile(f) as archive:
                infos = archive.infolist()
                total = 0
                for info in infos:
                    if info.file_size > MAX_CHECKPOINT_BYTES:
                        raise CheckpointError(
                            f"{path}: zip member {info.filename} declares {_gib(info.file_size)}, more than "
                            f"the {_gib(MAX_CHECKPOINT_BYTES)} a checkpoint of the largest model this "
                            "toolkit builds can hold; refused before reading it"
                        )
                    total += info.file_size
                if total > MAX_CHECKPOINT_BYTES:
                    raise CheckpointError(
                        f"{path}: its {len(infos)} zip members declare {_gib(total)} in all, more than the "
                        f"{_gib(MAX_CHECKPOINT_BYTES)} a checkpoint of the largest model this toolkit "
                        "builds can hold; refused before reading it"
                    )
                if total > max(INFLATION_FLOOR, MAX_INFLATION * size):
                    raise CheckpointError(
                        f"{path}: its zip members declare {_gib(total)} but the file holds {size:,} bytes "
                        f"(more than {MAX_INFLATION}x; torch.save stores tensors uncompressed): a "
                        "decompression bomb, refused before inflating it"
                    )
                if crc and (bad := archive.testzip()) is not None:
                    raise CheckpointError(
                        f"{path}: zip member {bad} fails its CRC-32 check: the file is corrupt"
                    )
    except CheckpointError:
        raise
    except Exception as exc:  # BadZipFile, zlib.error, EOFError, NotImplementedError (odd methods), ...
        reason = f"{type(exc).__name__}: {str(exc).split('. ')[0].strip()}".rstrip(": ")
        raise CheckpointError(f"{path}: truncated or corrupt torch.save file ({reason})") from None


# --------------------------------------------------------------------------------------------------
# A finished run folder (models.train.cli): model.pt, then metrics.json, written last.
RUN_METRIC_FRACTIONS = ("val_acc", "test_acc")  # what the zoo and its summary read, besides "steps"


def run_metrics_problem(path: str | os.PathLike) -> str | None:
    """None when ``path`` (a run's ``metrics.json``) is what ``models.train.cli`` writes — a JSON object
    whose ``steps`` is a non-negative integer and whose ``val_acc`` and ``test_acc`` are numbers in
    [0, 1] — else what is wrong, in words."""
    import json
    import math

    problem = readable_file_problem(path)
    if problem is not None:
        return f"metrics.json {problem}"
    try:
        with open_regular(path) as f:
            document = json.loads(f.read(MAX_SUMS_BYTES).decode("utf-8"))
    except (CheckpointError, UnicodeDecodeError, ValueError) as exc:
        return f"metrics.json is not readable JSON ({type(exc).__name__})"
    if not isinstance(document, dict):
        return f"metrics.json holds a JSON {type(document).__name__}, not an object"
    steps = document.get("steps")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        return f"metrics.json: steps is {steps!r}, not a non-negative integer"
    for key in RUN_METRIC_FRACTIONS:
        value = document.get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or not 0 <= value <= 1:
            return f"metrics.json: {key} is {value!r}, not a number in [0, 1]"
    return None


def finished_run_problem(run: str | os.PathLike) -> str | None:
    """None when the run folder ``run`` holds a trustworthy finished run, else why not, in words:
    ``model.pt`` must match the sha256 recorded when it was written (a file without a record, from a
    version before records, must pass :func:`check_zip` with CRC-32s) and ``metrics.json`` must pass
    :func:`run_metrics_problem`. What a resumed zoo checks before it skips a run."""
    model = Path(run) / "model.pt"
    try:
        if verify_recorded(model) is None:
            check_zip(model, crc=True)
    except ChecksumMismatch as exc:
        return f"model.pt is corrupt (sha256 {exc.actual[:12]}..., {exc.expected[:12]}... when written)"
    except CheckpointError as exc:
        return f"model.pt cannot be verified ({str(exc).removeprefix(f'{model}: ')})"
    return run_metrics_problem(Path(run) / "metrics.json")
