"""An index page comparing several report folders side by side (seeds, head counts, encodings, ...).

Public API (also used by the model zoo)::

    from reports.index import build_index
    page = build_index([Path("runs/a"), Path("runs/b")], Path("runs"))   # -> runs/index.html

``build_index(run_dirs, out) -> Path`` reads each ``DIR/summary.json`` (written by
``python -m reports.build`` next to ``DIR/report.html``) and writes one offline page with a row per run:
its name linking to its report (relative link), the model configuration, and the key metrics with
their 95% CIs. A DIR written by ``python -m analyses.zoo_atlas`` (its ``metrics.json`` says so) is listed
above the table instead, as the population's page: runs, cells and the share of single-pointer runs.
``out`` is a folder (the page is ``out/index.html``) or a path ending in ``.html``. A
folder without report.html or summary.json is a ``ValueError`` naming it, raised before anything is
written; the page is written atomically.

CLI: ``python -m reports.build --index DIR [DIR ...] [--out DIR]`` (default ``--out``: the common
parent of the DIRs).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from reports.summary import SUMMARY_FILE

INDEX_FILE = "index.html"
REPORT_FILE = "report.html"
CONFIG_COLUMNS = ("n_layers", "n_heads", "d_model", "positional_embedding", "normalization")
CONFIG_LABELS = {
    "n_layers": "layers",
    "n_heads": "heads",
    "d_model": "d_model",
    "positional_embedding": "positions",
    "normalization": "LayerNorm",
}


def default_index_dir(run_dirs: Sequence[Path]) -> Path:
    """The common parent of the run folders (for one folder: its parent)."""
    parents = [str(Path(d).expanduser().absolute().parent) for d in run_dirs]
    return Path(os.path.commonpath(parents))


def read_summary(run_dir: Path) -> dict[str, Any]:
    """``run_dir/summary.json``, checked to sit next to a report (``ValueError`` naming the folder)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"--index {run_dir}: not a folder")
    if not (run_dir / REPORT_FILE).is_file():
        raise ValueError(f"--index {run_dir}: no {REPORT_FILE} (build one with python -m reports.build)")
    try:
        summary = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"--index {run_dir}: cannot read {SUMMARY_FILE} ({e})") from None
    if not isinstance(summary, dict) or summary.get("kind") != "report_summary":
        raise ValueError(f"--index {run_dir}: {SUMMARY_FILE} is not a report summary")
    return summary


ATLAS = "zoo_atlas"


def read_atlas(folder: Path, page_dir: Path) -> dict[str, Any] | None:
    """The index's entry for a ``python -m analyses.zoo_atlas`` output folder (None for any other):
    link, runs, cells and how many runs are single pointers (the tutorial's circuit)."""
    try:
        document = json.loads((Path(folder) / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("analysis") != ATLAS:
        return None
    if not (Path(folder) / REPORT_FILE).is_file():
        raise ValueError(f"--index {folder}: a zoo atlas without {REPORT_FILE}")
    runs = [r for r in document.get("runs") or [] if isinstance(r, dict)]
    link = os.path.relpath(Path(folder).absolute() / REPORT_FILE, page_dir.absolute())
    return {
        "name": Path(folder).name,
        "href": quote(Path(link).as_posix()),
        "runs": len(runs),
        "cells": len(document.get("cells") or []),
        "single_pointer": sum(r.get("mechanism") == "single_pointer" for r in runs),
        "outliers": len(document.get("outliers") or []),
    }


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` if it is a dict, else {}: a hand-edited or foreign summary shows as missing numbers."""
    return value if isinstance(value, dict) else {}


def _estimate(value: Any) -> dict[str, Any] | None:
    """``value`` if it is an estimate ``{"mean", "ci_low", "ci_high"}`` of numbers (or None bounds),
    else None: a hand-edited summary's string or list shows as a missing number, not a traceback."""
    if not isinstance(value, dict):
        return None
    number = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)  # noqa: E731
    if not number(value.get("mean")):
        return None
    if not all(value.get(k) is None or number(value.get(k)) for k in ("ci_low", "ci_high")):
        return None
    return value


def _text(value: Any) -> str | None:
    """``value`` if it is a string, else None (a timestamp written as a number, a label as a list)."""
    return value if isinstance(value, str) else None


def _row(run_dir: Path, summary: dict[str, Any], page_dir: Path) -> dict[str, Any]:
    row = _raw_row(run_dir, summary, page_dir)
    estimates = ("accuracy", "flip_mass", "neighbour_mass", "pe_zero_accuracy", "top_delta")
    for key in (*estimates, "rho", "tolerance_margin", "iia_z"):
        row[key] = _estimate(row[key])
    for key in ("name", "verdict", "tolerance", "interchange", "timestamp"):
        row[key] = _text(row[key])
    row["name"] = row["name"] or run_dir.name
    return row


def _raw_row(run_dir: Path, summary: dict[str, Any], page_dir: Path) -> dict[str, Any]:
    metrics = _mapping(summary.get("metrics"))
    link = os.path.relpath(run_dir.absolute() / REPORT_FILE, page_dir.absolute())
    flip = _mapping(metrics.get("flip_mass"))
    pe = _mapping(metrics.get("pe_zero_accuracy"))
    verdict = _mapping(metrics.get("qk_verdict"))
    top = _mapping(metrics.get("top_head"))
    tolerance = _mapping(metrics.get("tolerance_verdict"))
    interchange = _mapping(metrics.get("interchange"))
    sites = [_mapping(s) for s in interchange.get("iia_table") or [] if isinstance(s, dict)]
    output_sites = [s for s in sites if s.get("site") == "z" and isinstance(s.get("iia"), dict)]
    best_z = max(output_sites, key=lambda s: s["iia"].get("mean") or 0, default={})
    config = _mapping(summary.get("config"))
    return {
        "name": summary.get("name") or run_dir.name,
        "href": quote(Path(link).as_posix()),
        "config": {k: config.get(k) for k in CONFIG_COLUMNS},
        "training": _mapping(summary.get("training")),
        "seed": summary.get("seed"),
        "num_sequences": summary.get("num_sequences"),
        "accuracy": _mapping(metrics.get("accuracy")).get("estimate"),
        "flip_head": flip.get("head"),
        "flip_mass": flip.get("flip_mass"),
        "neighbour_mass": flip.get("neighbour_mass"),
        "pe_zero_accuracy": pe.get("estimate"),
        "verdict": verdict.get("label"),
        "rho": verdict.get("spearman_rho"),
        "top_head": top.get("head"),
        "top_delta": top.get("delta_accuracy"),
        "tolerance": tolerance.get("label"),
        "tolerance_margin": tolerance.get("margin"),
        "interchange": interchange.get("label"),
        "iia_z": best_z.get("iia"),
        "iia_z_layer": best_z.get("layer"),
        "selector": _mapping(interchange.get("selector")),
        "timestamp": summary.get("timestamp"),
        "sha": str(summary.get("checkpoint_sha256") or "")[:12],
    }


def render_index(rows: list[dict[str, Any]], atlases: Sequence[dict[str, Any]] = ()) -> str:
    from analyses.frame.html import environment
    from reports.full_report import TEMPLATES

    return (
        environment(TEMPLATES)
        .get_template("index.html.j2")
        .render(rows=rows, atlases=atlases, config_columns=CONFIG_COLUMNS, config_labels=CONFIG_LABELS)
    )


INDEX_MARKER = '<meta name="generator" content="reverse-encoder-interp reports.index">'


def is_index_page(path: Path) -> bool:
    """Whether ``path`` is an index page this module wrote (it carries :data:`INDEX_MARKER`)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return INDEX_MARKER in f.read(1 << 20)
    except OSError:
        return False


def build_index(run_dirs: list[Path], out: Path) -> Path:
    """Write the index page for ``run_dirs`` into ``out`` (a folder, or a ``.html`` path); return its path."""
    from analyses.frame.files import make_folders, remove_empty, write_text

    if not run_dirs:
        raise ValueError("--index needs at least one report folder")
    out = Path(out).expanduser().absolute()
    page = out if out.suffix == ".html" else out / INDEX_FILE
    folders = [Path(d).expanduser() for d in run_dirs]
    atlases = {d: a for d in folders if d.is_dir() and (a := read_atlas(d, page.parent)) is not None}
    summaries = [(d, read_summary(d)) for d in folders if d not in atlases]
    if page.parent.exists() and not page.parent.is_dir():
        raise ValueError(f"--out {page.parent} is not a folder")
    if page.exists() and not is_index_page(page):  # never overwrite a report or a file of the user's
        raise ValueError(
            f"--out {page} exists and is not an index page of reports.build: refusing to replace it"
        )
    rows = [_row(d, s, page.parent) for d, s in summaries]
    html = render_index(rows, list(atlases.values()))
    created: list[Path] = []  # folders made here, removed again if the page cannot be written
    try:
        created = make_folders(page.parent)
        return write_text(page, html)
    except OSError as e:
        remove_empty(created)
        raise ValueError(f"cannot write --out {page}: {e.strerror or e}") from None
