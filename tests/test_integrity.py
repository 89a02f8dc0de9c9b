"""Model files are what was written (issue 16, items 2, 3 and 9): recorded sha256 sums checked on load,
CRC-32 of unrecorded zips, decompression bombs refused before inflating, hostile paths named, and the
cached default model retrained when its bytes rot. Real files, real processes, real tools."""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import stat
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from pathlib import Path

import pytest
import torch

from models import CheckpointError, load_model, save_model
from models.encoder.config import MAX_ELEMENTS
from models.storage import integrity
from models.storage.checkpoints import to_flax_tree, write_flax_msgpack
from models.train.default_model import CACHE_ENV, default_model_dir, ensure_default_model
from tests.conftest import make_model

ROOT = Path(__file__).resolve().parents[1]
# The default recipe shrunk to a second: appended flags win over ensure_default_model's own (argparse).
TINY = [
    "--d-model", "16", "--train-size", "512", "--batch-size", "32", "--epochs", "1", "--val-size", "64",
    "--test-size", "64", "--lr", "1e-2", "--warmup", "4", "--max-steps", "6",
]  # fmt: skip


def tensor_member(path: Path) -> tuple[int, int]:
    """(offset, size) of the largest tensor record's bytes inside a torch.save zip."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with path.open("rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def flip_two_bytes(path: Path) -> None:
    """Flip two bytes in the middle of the largest tensor, as bit rot on a disk would."""
    offset, size = tensor_member(path)
    data = bytearray(path.read_bytes())
    for i in (offset + size // 2, offset + size // 2 + 5):
        data[i] ^= 0x40
    path.write_bytes(bytes(data))


def one_line_error(path: Path, **kwargs) -> str:
    with pytest.raises(CheckpointError) as info:
        load_model(path, check_accuracy=False, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)), message
    return message


# --- item 2: recorded sha256 ----------------------------------------------------------------------------
def test_flipped_bytes_in_a_saved_model_are_one_line_naming_the_file_and_what_to_do(tmp_path):
    path = save_model(make_model(), tmp_path / "model.pt")
    # The record is sha256sum's format: the standard tool agrees with it.
    check = ["sha256sum", "--check", "--status", "SHA256SUMS"]
    assert subprocess.run(check, cwd=tmp_path, timeout=30).returncode == 0
    flip_two_bytes(path)
    assert subprocess.run(check, cwd=tmp_path, timeout=30).returncode == 1
    message = one_line_error(path)
    for fragment in ("sha256", "differs from", "recorded in", "SHA256SUMS", "restore it", "--overwrite"):
        assert fragment in message, message
    # A run folder is checked through its model.pt; a symlink to the file through the file's folder.
    assert one_line_error(tmp_path).startswith(str(path))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "link.pt").symlink_to(path)
    assert "differs from" in one_line_error(tmp_path / "elsewhere" / "link.pt")


def test_unrecorded_zip_checkpoints_are_checked_by_their_crc(tmp_path):
    """A tutorial checkpoint or an older run has no record; its zip members' CRC-32s still catch rot."""
    model = make_model()
    raw = torch.load(save_model(model, tmp_path / "a" / "model.pt"), weights_only=True)
    torch.save(raw, tmp_path / "old.pt")  # a run written before records existed: no SHA256SUMS here
    assert not (tmp_path / "SHA256SUMS").exists()
    loaded = load_model(tmp_path / "old.pt", check_accuracy=False)  # still loads, unverified by sha256
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    flip_two_bytes(tmp_path / "old.pt")
    assert "fails its CRC-32 check: the file is corrupt" in one_line_error(tmp_path / "old.pt")


def test_files_without_a_record_keep_loading(tmp_path):
    model = make_model(layer_norm_eps=1e-6)
    flax = write_flax_msgpack(to_flax_tree(model), tmp_path / "flax" / "params")
    (tmp_path / "flax" / "SHA256SUMS").unlink()  # a Flax file from elsewhere: no record
    raw = torch.load(save_model(model, tmp_path / "m.pt"), weights_only=True)
    torch.save(raw, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for path in (flax, tmp_path / "legacy.pt"):
        loaded = load_model(path, check_accuracy=False)
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_a_corrupt_record_is_named(tmp_path):
    save_model(make_model(), tmp_path / "model.pt")
    (tmp_path / "SHA256SUMS").write_text("not a sum\n")
    message = one_line_error(tmp_path / "model.pt")
    assert "cannot be verified: " in message and "delete it" in message
    assert "SHA256SUMS: line 1 is not '<sha256>  <file name>'" in message


WRITER = """
import itertools, sys
from models.storage.integrity import atomic_write
path = sys.argv[1]
for i in itertools.count():
    data = bytes([i % 251]) * 300_000
    atomic_write(path, lambda f: f.write(data), record=True)
    if i == 0:
        print("written", flush=True)
"""


def test_kill_9_of_a_writer_never_leaves_a_file_that_differs_from_its_record(tmp_path):
    """Real processes rewrite a recorded file in a loop and are killed with SIGKILL at different
    moments: the file is always whole, and its recorded sha256 (when there is one) always matches."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    delays = (0.0, 0.003, 0.007, 0.011, 0.02, 0.03, 0.05, 0.08)
    paths = [tmp_path / str(i) / "model.pt" for i in range(len(delays))]  # one writer per folder
    for path, delay in zip(paths, delays):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, env=env)
        try:
            assert proc.stdout.readline() == b"written\n"
            time.sleep(delay)
        finally:
            proc.kill()
            proc.wait(timeout=30)
            proc.stdout.close()
    for path in paths:
        data = path.read_bytes()
        assert len(data) == 300_000 and len(set(data)) == 1  # one whole version, never a mix
        integrity.verify_recorded(path)  # raises on a mismatch
        integrity.atomic_write(path, lambda f: f.write(b"x"), record=True)
        assert sorted(p.name for p in path.parent.iterdir()) == ["SHA256SUMS", "model.pt"]  # no temp file


# --- the cached default model ---------------------------------------------------------------------------
@pytest.fixture
def small_default_training(tmp_path, monkeypatch):
    """The cache in tmp_path, and ensure_default_model's training shrunk to a second (real Lightning)."""
    import models.train.cli

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    real_train, calls = models.train.cli.train, []

    def small(argv):
        calls.append(list(argv))
        return real_train([*argv, *TINY])

    monkeypatch.setattr(models.train.cli, "train", small)
    return calls


def test_a_corrupt_cached_default_model_is_retrained_and_the_log_says_so(small_default_training, capsys):
    calls, logs = small_default_training, []
    path = ensure_default_model(log=logs.append)
    assert path == default_model_dir() / "model.pt" and len(calls) == 1 and "--overwrite" not in calls[0]
    weights = load_model(path, check_accuracy=False).state_dict()
    assert ensure_default_model(log=logs.append) == path and len(calls) == 1  # verified: reused

    flip_two_bytes(path)
    logs.clear()
    assert ensure_default_model(log=logs.append) == path
    assert len(calls) == 2 and "--overwrite" in calls[1]
    assert len(logs) == 1 and f"the cached default model {path} is corrupt (sha256 " in logs[0]
    assert "retraining it" in logs[0]
    again = load_model(path, check_accuracy=False).state_dict()  # verified against the new record
    assert all(torch.equal(again[k], v) for k, v in weights.items())  # the same seed: the same model

    # load_model() with no path takes the same road, and says so on stderr.
    flip_two_bytes(path)
    capsys.readouterr()
    model = load_model(check_accuracy=False)
    assert "is corrupt" in capsys.readouterr().err and len(calls) == 3
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())


def test_a_cached_default_model_without_a_record_is_retrained(small_default_training):
    calls, logs = small_default_training, []
    path = ensure_default_model()
    (path.parent / "SHA256SUMS").unlink()  # a cache written before records existed
    ensure_default_model(log=logs.append)
    assert len(calls) == 2 and "has no recorded sha256" in logs[0]
    assert integrity.verify_recorded(path) is not None


def test_a_cache_that_cannot_be_read_does_not_blame_a_checkpoint_flag(tmp_path, monkeypatch, capsys):
    """No --checkpoint given: the error names the default model, not a flag the user never typed."""
    from analyses.flip_alignment import __main__ as flip_alignment

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    run = default_model_dir()
    run.mkdir(parents=True)
    integrity.atomic_write(run / "model.pt", lambda f: f.write(b"PK\x03\x04 not a zip"), record=True)
    (run / "metrics.json").write_text("{}")  # recorded and finished, but not a model
    out = tmp_path / "out"
    assert flip_alignment.main(["--out", str(out), "--num-sequences", "8", "--bootstrap-resamples", "5"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: default model: {run / 'model.pt'}: truncated or corrupt")
        and "--checkpoint" not in err
    )
    assert err.count("\n") == 1


# --- item 3: decompression bombs ------------------------------------------------------------------------
def write_bomb(path: Path, inflated: int = 3 << 30) -> None:
    """A torch.save zip (small on disk) whose tensor record is deflated zeros declaring ``inflated``
    bytes: a valid deflate stream that really inflates that far."""
    src = path.with_suffix(".src")
    torch.save({"state_dict": {"w": torch.zeros(4)}}, src)
    chunk_size = 16 << 20
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = compressor.compress(bytes(chunk_size)) + compressor.flush(zlib.Z_FULL_FLUSH)  # byte-aligned
    stream = chunk * (inflated // chunk_size) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    with zipfile.ZipFile(src) as archive, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as bomb:
        for info in archive.infolist():
            data = stream if info.filename.endswith("/data/0") else archive.read(info)
            bomb.writestr(info.filename, data)
    src.unlink()
    # Turn the stored member into a deflated one that declares `inflated` bytes (local + central header).
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("/data/0"))
    name = info.filename.encode()
    central = data.index(b"PK\x01\x02")  # central directory entries: find the member's by its name
    while data[central + 46 : central + 46 + len(name)] != name:
        central = data.index(b"PK\x01\x02", central + 4)
    for header, method_at, size_at in ((info.header_offset, 8, 22), (central, 10, 24)):
        data[header + method_at : header + method_at + 2] = (8).to_bytes(2, "little")
        data[header + size_at : header + size_at + 4] = inflated.to_bytes(4, "little")
    path.write_bytes(bytes(data))


def test_a_decompression_bomb_is_refused_before_anything_is_inflated(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.ckpt"
    write_bomb(bomb)
    assert bomb.stat().st_size < 8 << 20  # ~3 MB on disk
    with zipfile.ZipFile(bomb) as archive:  # a real bomb: its member really inflates (first 64 MiB shown)
        with archive.open(next(n for n in archive.namelist() if n.endswith("/data/0"))) as member:
            assert len(member.read(64 << 20)) == 64 << 20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB; a high-water mark
    message = one_line_error(bomb)
    assert "declare 3.0 GiB but the file holds" in message and "decompression bomb" in message
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 256 << 10  # < 256 MiB more
    # The absolute cap, consistent with models.encoder.config.MAX_ELEMENTS, names the member that exceeds it.
    assert integrity.MAX_CHECKPOINT_BYTES == 3 * 4 * MAX_ELEMENTS + (1 << 30)  # 3 x 4 GiB + 1 GiB
    monkeypatch.setattr(integrity, "MAX_CHECKPOINT_BYTES", 1 << 30)
    message = one_line_error(bomb)
    assert "/data/0 declares 3.0 GiB, more than the 1.0 GiB a checkpoint of the largest model" in message


# --- item 9: small ones ---------------------------------------------------------------------------------
def test_a_sparse_tensor_is_a_checkpoint_error(tmp_path):
    raw = torch.load(save_model(make_model(), tmp_path / "m.pt"), weights_only=True)
    raw["state_dict"]["head.ln.b"] = raw["state_dict"]["head.ln.b"].to_sparse()
    torch.save(raw, tmp_path / "sparse.pt")
    assert "head.ln.b is a sparse_coo tensor, expected a dense one" in one_line_error(tmp_path / "sparse.pt")


def test_a_fifo_a_symlink_loop_and_a_device_are_named_and_never_read(tmp_path):
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)
    errors: list[str] = []

    def load() -> None:
        try:
            load_model(fifo, check_accuracy=False)
        except CheckpointError as exc:
            errors.append(str(exc))

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():  # it blocked opening the FIFO: give it a writer so that the thread can end
        with open(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK), "wb"):
            pass
        worker.join(timeout=30)
        pytest.fail("load_model blocked on a FIFO")
    assert errors == [f"{fifo}: is a FIFO (named pipe), not a regular file"]
    assert str(one_line_error(tmp_path)).endswith("is a FIFO (named pipe), not a regular file")  # run folder
    with pytest.raises(CheckpointError, match="FIFO"):
        integrity.sha256_file(fifo)
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    assert one_line_error(tmp_path / "a").endswith("is a symlink loop (each link points back to another)")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere.pt")
    assert one_line_error(tmp_path / "dangling").endswith(
        f"is a broken symlink (to {tmp_path / 'nowhere.pt'})"
    )
    assert one_line_error(Path("/dev/null")).endswith("is a character device, not a regular file")


def test_model_files_get_the_mode_of_every_other_output(tmp_path, trained_fast_run):
    old = os.umask(0o022)
    try:
        files = [save_model(make_model(), tmp_path / "model.pt"), tmp_path / "SHA256SUMS"]
        files.append(write_flax_msgpack(to_flax_tree(make_model(layer_norm_eps=1e-6)), tmp_path / "f"))
    finally:
        os.umask(old)
    files += [trained_fast_run / "model.pt", trained_fast_run / "SHA256SUMS"]
    files += sorted((trained_fast_run / "checkpoints").iterdir())
    assert len(files) >= 7
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_a_trained_run_records_every_model_file_it_writes(trained_fast_run, tmp_path):
    for folder in (trained_fast_run, trained_fast_run / "checkpoints"):
        names = {p.name for p in folder.iterdir() if p.suffix in (".pt", ".ckpt")}
        recorded = integrity.read_sums(folder)
        assert names and set(recorded) == names
        for name, digest in recorded.items():
            assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    # A copied run folder keeps its records (relative names), so it is verified wherever it goes.
    copy = shutil.copytree(trained_fast_run, tmp_path / "copy")
    flip_two_bytes(copy / "model.pt")
    assert "differs from" in one_line_error(copy)
