"""Render an analysis document (the metrics.json dict) and its figures into one offline HTML file.

The page is self-contained: figures are inlined as base64 PNG ``data:`` URIs, styles are inline, and
there is no script, font or image fetched from anywhere. Jinja2 autoescaping is on for every template,
so every string (paths, command lines, config values) is HTML-escaped. Nothing is recomputed here: the
templates only format numbers that the analysis produced.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).parent / "templates"


def _number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _estimate(est: Mapping[str, Any] | None, digits: int = 3) -> str:
    """``{"mean", "ci_low", "ci_high"}`` → ``0.912 [0.905, 0.918]``."""
    if not est:
        return "n/a"
    return (
        f"{_number(est.get('mean'), digits)} [{_number(est.get('ci_low'), digits)}, "
        f"{_number(est.get('ci_high'), digits)}]"
    )


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # templates end in .html.j2, so select_autoescape would miss them
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _number
    env.filters["est"] = _estimate
    env.filters["pretty_json"] = lambda obj: json.dumps(obj, indent=2, sort_keys=True)
    return env


def inline_png(path: Path) -> str:
    """A ``data:image/png;base64,...`` URI holding the file's bytes."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render_report(
    document: Mapping[str, Any],
    figures_dir: Path | None = None,
    captions: Mapping[str, str] | None = None,
) -> str:
    """HTML for ``document`` (a metrics.json dict with an ``analysis`` key naming its template).

    ``captions`` maps figure names to captions; each ``figures_dir/<name>.png`` is inlined.
    """
    analysis = document.get("analysis")
    if not isinstance(analysis, str) or not (TEMPLATES / f"{analysis}.html.j2").is_file():
        raise ValueError(f"no report template for analysis {analysis!r}")
    figures = []
    for name, caption in (captions or {}).items():
        path = Path(figures_dir or ".") / f"{name}.png"
        if not path.is_file():
            raise ValueError(f"figure {path} does not exist")
        figures.append({"name": name, "caption": caption, "src": inline_png(path)})
    return environment().get_template(f"{analysis}.html.j2").render(doc=document, figures=figures)


def write_report(
    path: Path,
    document: Mapping[str, Any],
    figures_dir: Path | None = None,
    captions: Mapping[str, str] | None = None,
) -> Path:
    """Render and write atomically (temp file in the same folder, then rename)."""
    from analyses.common import write_text

    return write_text(Path(path), render_report(document, figures_dir, captions))
