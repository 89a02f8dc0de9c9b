"""The README's Python snippet runs as printed, on a fresh clone (here: a cache holding a trained model
in place of the default one, so that the test does not spend 15 s training the tutorial preset)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from models.train.default_model import CACHE_ENV, default_model_dir

README = Path(__file__).resolve().parents[1] / "README.md"


def python_api_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_python_api_snippet_runs(tmp_path, monkeypatch, trained_fast_run, capsys):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    target = default_model_dir()
    shutil.copytree(trained_fast_run, target)  # a finished run (with its SHA256SUMS): no training needed
    namespace: dict = {}
    exec(compile(python_api_snippet(), str(README), "exec"), namespace)
    printed = float(capsys.readouterr().out.strip().split("(")[1].rstrip(")"))  # tensor(0.5...)
    assert 0.3 < printed <= 1.0  # the flip mass of a trained model
    assert namespace["loss"].ndim == 0 and namespace["no_pe"].shape == (256, 16, 10)
