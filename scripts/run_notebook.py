"""Execute notebooks/hook_ablations.ipynb in this environment and save it with its outputs.

The notebook is committed with its outputs (figures visible where people browse the repository); the
test suite executes it again and checks that the stored text outputs are what a fresh run prints, so
rerun this after changing the notebook or anything it prints::

    python scripts/run_notebook.py            # trains a fast-preset model, as a reader's first run does

The kernel is a kernelspec written into a temporary folder that points at this very interpreter
(``JUPYTER_PATH`` has the highest priority), so the notebook runs in the project's environment
whatever kernels the machine has installed. Progress bars are off (``TQDM_DISABLE``) and only stdout
and figures are kept: Lightning's log lines on stderr name temporary folders, which differ per run.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "hook_ablations.ipynb"
TIMEOUT = 300  # per cell; a hung kernel fails instead of hanging


def execute(checkpoint: str | None = None, n_heads: int | None = None) -> nbformat.NotebookNode:
    """The notebook executed from a clean kernel; ``checkpoint``/``n_heads`` are passed as the
    ``HOOK_ABLATIONS_CHECKPOINT`` / ``HOOK_ABLATIONS_N_HEADS`` variables the notebook reads."""
    return execute_each([(checkpoint, n_heads)])[0]


def execute_each(settings: list[tuple[str | None, int | None]]) -> list[nbformat.NotebookNode]:
    """The notebook executed once per ``(checkpoint, n_heads)`` of ``settings``, one run after another
    in one kernel: the first from a clean kernel, each later one after ``%reset -f`` has removed every
    name the run before defined and the two variables are set for it. Modules stay imported, so a
    later run skips the kernel's start and the imports (seconds each)."""
    from ipykernel.kernelspec import install
    from nbclient import NotebookClient

    runs = [nbformat.read(NOTEBOOK, as_version=4) for _ in settings]
    combined = nbformat.read(NOTEBOOK, as_version=4)
    combined.cells = []
    for k, (nb, (checkpoint, n_heads)) in enumerate(zip(runs, settings)):
        if k:  # between runs: a clean namespace, then the variables of the next run
            combined.cells.append(nbformat.v4.new_code_cell(_between_runs(checkpoint, n_heads)))
        combined.cells.extend(nb.cells)
    saved = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "TQDM_DISABLE", *ENV)}
    with tempfile.TemporaryDirectory(prefix="notebook-kernel-") as tmp:
        try:
            install(kernel_name="python3", prefix=tmp)
            os.environ["JUPYTER_PATH"] = str(Path(tmp) / "share" / "jupyter")
            os.environ["TQDM_DISABLE"] = "1"
            for name, value in zip(ENV, settings[0]):
                os.environ.pop(name, None)
                if value is not None:
                    os.environ[name] = str(value)
            client = NotebookClient(
                combined, kernel_name="python3", timeout=TIMEOUT, resources={"metadata": {"path": str(ROOT)}}
            )
            client.execute()  # raises CellExecutionError (with the traceback) if a cell fails
        finally:
            for name, value in saved.items():
                os.environ.pop(name, None)
                if value is not None:
                    os.environ[name] = value
    for nb in runs:  # the cells are the combined notebook's own objects, executed in place
        nb.metadata = combined.metadata
        count = 0
        for cell in nb.cells:
            if cell.cell_type == "code":
                count += 1
                cell.execution_count = count  # numbered as a run of its own
                cell.outputs = [out for out in cell.outputs if out.get("name") != "stderr"]
    return runs


def _between_runs(checkpoint: str | None, n_heads: int | None) -> str:
    lines = ["%reset -f", "import os"]
    for name, value in zip(ENV, (checkpoint, n_heads)):
        lines.append(f"os.environ.pop({name!r}, None)")
        if value is not None:
            lines.append(f"os.environ[{name!r}] = {str(value)!r}")
    return "\n".join([*lines, "del os"])


ENV = ("HOOK_ABLATIONS_CHECKPOINT", "HOOK_ABLATIONS_N_HEADS")


def text_outputs(nb: nbformat.NotebookNode) -> str:
    """Every stdout line the notebook printed, in order."""
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    return "".join(out.get("text", "") for out in outputs if out.output_type == "stream")


def image_count(nb: nbformat.NotebookNode) -> int:
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    return sum("image/png" in out.get("data", {}) for out in outputs)


def main() -> int:
    nb = execute()
    tmp = NOTEBOOK.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, NOTEBOOK)
    print(f"wrote {NOTEBOOK} ({image_count(nb)} figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
