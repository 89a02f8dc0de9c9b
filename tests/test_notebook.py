"""notebooks/hook_ablations.ipynb is committed with its outputs and executed here, so it cannot rot:
a fresh run must print exactly what the stored notebook shows (``python scripts/run_notebook.py``
refreshes it), and the numbers it prints must say what the tour claims."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

from models import load_model
from tests.test_loading import flax_file

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("run_notebook", ROOT / "scripts" / "run_notebook.py")
runner = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(runner)


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


def test_the_stored_notebook_is_valid_and_shows_its_outputs():
    nb = nbformat.read(runner.NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code)  # executed, in order
    assert not any(out.get("name") == "stderr" for cell in code for out in cell.outputs)
    check_tour(runner.text_outputs(nb), runner.image_count(nb))


@pytest.fixture(scope="module")
def runs(trained_fast_run, tmp_path_factory) -> tuple[nbformat.NotebookNode, nbformat.NotebookNode]:
    """Two runs of the notebook in one kernel (``runner.execute_each``): as a reader's first run (no
    checkpoint: it trains a fast-preset model), then, after ``%reset -f``, on a Flax msgpack file of the
    session's trained fast-preset model with its head count."""
    path = flax_file(load_model(trained_fast_run), tmp_path_factory.mktemp("flax") / "tutorial.msgpack")
    fresh, flax = runner.execute_each([(None, None), (str(path), 1)])
    return fresh, flax


def test_a_fresh_run_prints_what_the_stored_notebook_shows(runs):
    stored = nbformat.read(runner.NOTEBOOK, as_version=4)
    fresh = runs[0]
    assert runner.text_outputs(fresh) == runner.text_outputs(stored), (
        "the stored outputs are stale: run `python scripts/run_notebook.py`"
    )
    assert runner.image_count(fresh) == runner.image_count(stored)


def test_the_notebook_reads_a_flax_checkpoint_and_its_head_count(runs):
    nb = runs[1]
    text = runner.text_outputs(nb)
    check_tour(text, runner.image_count(nb))
    assert "layers 1, heads 1, d_model 32, PE sinusoidal" in text
