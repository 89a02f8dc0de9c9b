"""machine.allocator: after keep_freed_memory(), freed blocks of a few MB are reused instead of being
mapped afresh (page faults), and the numbers do not change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from machine.allocator import keep_freed_memory
from tests.conftest import make_model

ROOT = Path(__file__).resolve().parent.parent
FAULTS = """
import resource, sys
import numpy as np
from machine.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):  # as in a forward pass: a few tensors of some MB, then all freed
    blocks = [np.ones(1 << 19) for _ in range(4)]  # 4 MB each
    del blocks
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, cwd=ROOT, check=True
    )
    applied, count = done.stdout.split()
    return applied, int(count)


def test_freed_blocks_are_reused_instead_of_mapped_again():
    applied, kept = faults("keep")
    _, plain = faults("plain")
    assert applied == "True"  # glibc on Linux, as on this project's machines
    assert plain > 50 * 1000 and kept < plain / 10  # ~1,024 fresh pages per 4 MB block without it


def test_the_numbers_do_not_change(tokens):
    model = make_model(seed=1, n_layers=2, n_heads=2)
    with torch.inference_mode():
        before = model(tokens)
        keep_freed_memory()
        assert torch.equal(model(tokens), before)


def test_exit_process_is_a_normal_exit_without_the_collectors_teardown_walks():
    """The exit code, atexit handlers and unflushed output of a normal exit; the objects alive at exit
    moved to the collector's permanent generation (a fresh process: this one goes on collecting)."""
    code = (
        "import atexit, gc, sys\n"
        "from machine.quick_exit import exit_process\n"
        "atexit.register(lambda: print(' atexit ran, frozen', gc.get_freeze_count() > 1000, end=''))\n"
        "sys.stdout.write('unflushed')\n"
        "exit_process(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (3, "unflushed atexit ran, frozen True", "")
