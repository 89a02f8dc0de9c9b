"""notebooks/hook_ablations.ipynb is executed (so it cannot rot) and its printed numbers are checked.

The kernel is a kernelspec written into a temporary folder that points at this very interpreter
(``JUPYTER_PATH`` has the highest priority), so the notebook runs in the project's environment whatever
kernels the machine has installed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "hook_ablations.ipynb"
TIMEOUT = 300  # per cell; a hung kernel fails the test instead of hanging the suite


def test_notebook_is_saved_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert nb.metadata.kernelspec.name == "python3"


@pytest.fixture
def kernel_env(tmp_path, monkeypatch) -> None:
    """A ``python3`` kernelspec for sys.executable, found before any installed one."""
    from ipykernel.kernelspec import install

    install(kernel_name="python3", prefix=str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter" / "share" / "jupyter"))
    monkeypatch.setenv("TQDM_DISABLE", "1")  # the patching sweep's progress bars
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert spec.argv[0] == sys.executable


def execute(checkpoint: Path | None, monkeypatch) -> tuple[str, int]:
    """Run the notebook; return every text output joined, and how many PNG images it displayed."""
    if checkpoint is None:
        monkeypatch.delenv("HOOK_ABLATIONS_CHECKPOINT", raising=False)
    else:
        monkeypatch.setenv("HOOK_ABLATIONS_CHECKPOINT", str(checkpoint))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb, kernel_name="python3", timeout=TIMEOUT, resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()  # raises CellExecutionError (with the traceback) if any cell fails
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    text = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    images = sum("image/png" in out.get("data", {}) for out in outputs)
    return text, images


def number(text: str, pattern: str) -> float:
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not found in the notebook's output:\n{text}"
    return float(match.group(1))


def check_tour(text: str, images: int) -> None:
    clean = number(text, r"clean accuracy: ([\d.]+)")
    zero_pe = number(text, r"zero PE accuracy: ([\d.]+)")
    head = number(text, r"head 0\.0 mean-ablated accuracy: ([\d.]+)")
    assert clean > 0.99  # a fast-preset model reverses (validation accuracy 100%)
    assert zero_pe < clean - 0.5 and zero_pe <= 0.25  # no better than the no-position ceiling ≈ 0.241
    assert head < 0.2  # the only head removed: about chance (0.1)
    # One corrupted input digit (position 3): restored exactly by the residual stream at 3 and by the
    # attention output at 15 − 3 = 12.
    assert number(text, r"layer 0 resid_pre: position 3 restores ([\d.-]+)") == 1.0
    assert number(text, r"layer 0 attn_out: position 12 restores ([\d.-]+)") == 1.0
    assert images == 2  # the attention map and the patching sweep


def test_notebook_trains_a_fast_model_and_runs_every_cell(kernel_env, monkeypatch):
    check_tour(*execute(None, monkeypatch))


def test_notebook_reads_a_checkpoint_from_the_environment(kernel_env, monkeypatch, trained_fast_run):
    text, images = execute(trained_fast_run, monkeypatch)
    check_tour(text, images)
    assert "layers 1, heads 1, d_model 32, PE sinusoidal" in text
