"""Render an analysis document (the metrics.json dict) and its figures into one offline HTML file.

Each analysis' page is its package's ``report.html.j2`` (``analyses/<name>/report.html.j2``), which
extends ``templates/base.html.j2`` here and takes its Figures and Provenance sections from the macros
of ``templates/sections.html.j2``; ``reports`` renders the full report with the same
environment (:func:`environment` with its own template folder added), so one set of filters and one
escaping policy serve both. This module lives below ``reports`` because every analysis writes its own
report.html, and analyses never import ``reports``.

The page is self-contained: figures are inlined as base64 PNG ``data:`` URIs, styles are inline, and
there is no script, font or image fetched from anywhere. Jinja2 autoescaping is on for every template,
so every string (paths, command lines, config values) is HTML-escaped. Nothing is recomputed here: the
templates only format numbers that the analysis produced.

:func:`write_report` also records the figure captions in ``figures/captions.json`` so that the full
report (``reports.build``) can show the same figures with the same captions later;
:func:`render_section` renders one analysis' content as a section of that full report, and
:func:`json_script` embeds data in a ``<script type="application/json">`` safely.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import markupsafe

from analyses.frame import numbers
from analyses.frame.files import write_json, write_text
from machine.names import path_component

TEMPLATES = Path(__file__).parent / "templates"  # base.html.j2, sections.html.j2
ANALYSES_ROOT = Path(__file__).parent.parent  # <analysis>/report.html.j2
REPORT_TEMPLATE = "report.html.j2"
CAPTIONS_FILE = "captions.json"
# Inside <script>, only these can end the element or change how it is parsed; JSON allows \uXXXX for all.
_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _number(value: Any, digits: int = 3) -> str:
    """A number at ``digits`` decimals (integers with thousands separators); "n/a" for anything that
    is not a finite number (None, NaN, or a string or list from a hand-edited file)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _estimate(est: Mapping[str, Any] | None, digits: int = 3) -> str:
    """``{"mean", "ci_low", "ci_high"}`` → ``0.912 [0.905, 0.918]`` (:func:`numbers.interval`)."""
    if not est or not isinstance(est, Mapping):
        return "n/a"
    return numbers.interval(est.get("mean"), est.get("ci_low"), est.get("ci_high"), digits)


def environment(*template_dirs: Path) -> jinja2.Environment:
    """Jinja2 with autoescaping on, strict undefined names and the number filters; templates are looked
    up in ``template_dirs``, then here (``base.html.j2``, ``sections.html.j2``), then in the analysis
    packages."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([*template_dirs, TEMPLATES, ANALYSES_ROOT]),
        autoescape=True,  # templates end in .html.j2, so select_autoescape would miss them
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _number
    env.filters["est"] = _estimate
    env.filters["pvalue"] = numbers.p_value
    env.filters["bound"] = numbers.bound
    env.filters["bounds"] = numbers.bounds
    env.filters["share"] = numbers.share
    env.filters["pretty_json"] = lambda obj: json.dumps(obj, indent=2, sort_keys=True)
    env.filters["json_script"] = json_script
    return env


def json_script(obj: Any) -> markupsafe.Markup:
    """``obj`` as JSON that is safe between ``<script type="application/json">`` and ``</script>``.

    ``<``, ``>``, ``&`` (and U+2028/2029) become ``\\u003c``-style escapes, so a string holding
    ``</script>`` or ``<!--`` cannot end or alter the element; ``JSON.parse`` restores them exactly.
    NaN and infinities are not JSON and raise ``ValueError``.
    """
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    return markupsafe.Markup(re.sub("[<>&\u2028\u2029]", lambda m: _SCRIPT_ESCAPES[m.group()], text))


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
    analysis = _template_name(document)
    figures = figure_list(figures_dir, captions)
    return environment().get_template(analysis).render(doc=document, figures=figures)


def _template_name(document: Mapping[str, Any]) -> str:
    analysis = document.get("analysis")
    if not isinstance(analysis, str) or not analysis.isidentifier():
        raise ValueError(f"no report template for analysis {analysis!r}")
    if not (ANALYSES_ROOT / analysis / REPORT_TEMPLATE).is_file():
        raise ValueError(f"no report template for analysis {analysis!r}")
    return f"{analysis}/{REPORT_TEMPLATE}"


def figure_list(figures_dir: Path | None, captions: Mapping[str, str] | None) -> list[dict[str, str]]:
    """``[{"name", "caption", "src"}]`` with each ``figures_dir/<name>.png`` inlined, in caption order."""
    figures = []
    for name, caption in (captions or {}).items():
        # a name may come from figures/captions.json: one file name inside figures_dir, never a path
        path = Path(figures_dir or ".") / f"{path_component(name, 'figure name')}.png"
        if path.is_symlink() or not path.is_file():
            raise ValueError(f"figure {path} does not exist or is not a regular file")
        figures.append({"name": name, "caption": caption, "src": inline_png(path)})
    return figures


def read_captions(figures_dir: Path) -> dict[str, str]:
    """The captions :func:`write_report` recorded next to the figures (``ValueError`` if absent)."""
    path = Path(figures_dir) / CAPTIONS_FILE
    try:
        captions = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read figure captions {path}: {e}") from None
    if not isinstance(captions, dict) or not all(isinstance(v, str) for v in captions.values()):
        raise ValueError(f"{path}: expected a JSON object of figure name -> caption")
    for name in captions:
        path_component(name, f"{path}: figure name")
    return captions


def render_section(
    document: Mapping[str, Any],
    figures_dir: Path | None = None,
    captions: Mapping[str, str] | None = None,
    id_prefix: str = "",
) -> markupsafe.Markup:
    """An analysis' report content (its template's ``content`` block) as a section of a larger page.

    Headings move one level down (h1 → h2, ...) and every ``id``/in-page link gets ``id_prefix``, so
    several analyses can share one page without clashing anchors. The rewrite only touches markup the
    templates wrote: strings from the document are escaped, so they hold no ``<h1`` or ``id="``.
    """
    template = environment().get_template(_template_name(document))
    context = template.new_context({"doc": document, "figures": figure_list(figures_dir, captions)})
    for _ in template.root_render_func(context):  # runs the template's top-level {% set %} statements
        pass
    html = "".join(template.blocks["content"](context))
    html = re.sub(r"<(/?)h([1-5])\b", lambda m: f"<{m.group(1)}h{int(m.group(2)) + 1}", html)
    html = re.sub(r'(?<=\s)(id|for)="', lambda m: f'{m.group(1)}="{id_prefix}', html)
    html = html.replace('href="#', f'href="#{id_prefix}')
    return markupsafe.Markup(html)


def write_report(
    path: Path,
    document: Mapping[str, Any],
    figures_dir: Path | None = None,
    captions: Mapping[str, str] | None = None,
) -> Path:
    """Render and write atomically (temp file in the same folder, then rename); the captions go to
    ``figures_dir/captions.json`` for the full report."""
    html = render_report(document, figures_dir, captions)
    if figures_dir is not None and captions:
        write_json(Path(figures_dir) / CAPTIONS_FILE, dict(captions))
    return write_text(Path(path), html)
