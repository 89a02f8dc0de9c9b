"""The README and the documentation site say what the code does: every code block runs (Python) or
parses and names real commands (shell), every quoted figure is the one its command gave, the README's
example lab link works, and the built site makes no network request.

Python blocks run as printed on a fresh clone: a cache holding a trained fast-preset model stands in
for the default model (``trained_fast_run``), so no 15 s of training happens here, and ``runs/fast-seed0``
is that run (the Python API page's example path)."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from models.train.default_model import CACHE_ENV, default_model_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import figures  # noqa: E402  (scripts/figures.py)

FENCE = re.compile(r"^( *)```([^\n`]*)\n(.*?)^\1```", re.S | re.M)
SHELLS = {"bash", "sh", "shell"}
# python: executed; a shell: parsed, its commands checked; json: parsed; text: diagrams and output, not code
LANGUAGES = {"python", *SHELLS, "json", "text"}


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(path: Path) -> list[tuple[str, str]]:
    """(language, code) of every fenced block, indentation of list items removed."""
    out = []
    for match in FENCE.finditer(path.read_text(encoding="utf-8")):
        indent = len(match.group(1))
        code = "\n".join(line[indent:] for line in match.group(3).split("\n"))
        out.append((match.group(2).strip(), code))
    return out


def name(path: Path) -> str:
    return str(path.relative_to(ROOT))


PYTHON_PAGES = [p for p in pages() if any(lang == "python" for lang, _ in blocks(p))]
SHELL_BLOCKS = [(name(p), code) for p in pages() for lang, code in blocks(p) if lang in SHELLS]
JSON_BLOCKS = [(name(p), code) for p in pages() for lang, code in blocks(p) if lang == "json"]


def test_the_readme_is_short_and_every_block_says_its_language():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200
    found = {(name(p), lang) for p in pages() for lang, _ in blocks(p)}
    assert {lang for _, lang in found} <= LANGUAGES, sorted(x for x in found if x[1] not in LANGUAGES)
    assert len(PYTHON_PAGES) >= 2 and len(SHELL_BLOCKS) >= 5  # the finder finds them
    for where, code in JSON_BLOCKS:  # none today; a page's JSON example must parse
        try:
            json.loads(code)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"{where}: {exc}") from None


def commands(code: str) -> list[list[str]]:
    """The words of each command of a shell block (comments dropped; split at &&, ||, ; and |)."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token in {"&&", "||", ";", "|"}:
                if words:
                    out.append(words)
                words = []
            else:
                words.append(token)
    return out


@pytest.mark.parametrize(
    "where,code", SHELL_BLOCKS, ids=[f"{w}#{i}" for i, (w, _) in enumerate(SHELL_BLOCKS)]
)
def test_shell_blocks_parse_and_name_real_modules_and_files(where, code):
    check = subprocess.run(["bash", "-n"], input=code, text=True, capture_output=True)
    assert check.returncode == 0, (where, check.stderr)
    for words in commands(code):
        program = words[0]
        if program.endswith("python") and "-m" in words:
            module = words[words.index("-m") + 1]
            assert importlib.util.find_spec(module) is not None, (where, module)
        elif program.endswith("python") and len(words) > 1 and words[1].endswith(".py"):
            assert (ROOT / words[1]).is_file(), (where, words[1])
        elif program == "bash":
            assert (ROOT / words[1]).is_file(), (where, words[1])
        elif program.startswith(".venv/bin/"):
            assert program.split("/")[-1] in {"python", "mkdocs", "ruff"}, (where, program)
        else:
            # Ray's own CLI (the zoo's cluster set-up), and the shell's own tools of a measurement recipe
            assert program in {"ray", "git", "cd", "export", "/usr/bin/time"}, (where, program)


@pytest.fixture
def fresh_clone(tmp_path, monkeypatch, trained_fast_run):
    """A cache whose default model is a finished fast-preset run, and ``runs/fast-seed0`` beside."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    shutil.copytree(trained_fast_run, default_model_dir())  # with its SHA256SUMS: no training needed
    shutil.copytree(trained_fast_run, tmp_path / "runs" / "fast-seed0")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=name)
def test_python_blocks_run_as_printed(page, fresh_clone, capsys):
    namespace: dict = {"__name__": "__docs__"}
    for lang, code in blocks(page):
        if lang == "python":
            exec(compile(code, str(page), "exec"), namespace)
    printed = capsys.readouterr().out
    if page.name == "README.md":  # flip mass, then accuracy with and without positional encoding
        first, second = printed.strip().splitlines()
        assert 0.3 < float(first.split("(")[1].rstrip(")")) <= 1.0
        accuracy, no_pe = (float(x.split("(")[1].rstrip(")")) for x in second.split(") "))
        assert accuracy > 0.9 and no_pe < 0.5
    if page.name == "python-api.md":
        assert namespace["loss"].ndim == 0 and namespace["no_pe"].shape == (256, 16, 10)
        assert len(namespace["df"]) > 0


# --- figures ---------------------------------------------------------------------------------------------
def test_every_quoted_figure_is_the_recorded_one():
    """README, docs pages, the generated page and the PNGs agree with docs/figures/figures.json."""
    assert figures.check(ROOT) == []


def test_formatting_of_estimates_and_crossings():
    assert figures.estimate({"mean": 0.56745, "ci_low": 0.5, "ci_high": 0.6}, 3) == "0.567 [0.500, 0.600]"
    assert figures.estimate({"mean": -0.00001, "ci_low": None, "ci_high": None}, 3) == "0.000"
    before = {"difference": {"mean": -74.2, "ci_low": -76.4, "ci_high": -71.6}, "verdict": "before"}
    assert figures.steps_apart(before) == "74 [72, 76] steps before"
    after = {"difference": {"mean": 51.0, "ci_low": 49.6, "ci_high": 53.2}, "verdict": "after"}
    assert figures.steps_apart(after) == "51 [50, 53] steps after"
    unresolved = {"difference": {"mean": 0.0, "ci_low": -3.0, "ci_high": 2.0}, "verdict": "unresolved"}
    assert figures.steps_apart(unresolved).startswith("unresolved")
    row = {"first": "flip_mass", "second": "accuracy", "fraction": 0.5, "median": 47.1, "ci_low": 39.8,
           "ci_high": 52.9, "achieved_confidence": 0.9375, "reason": "",
           "verdicts": {"before": 0, "with": 0, "after": 3, "unresolved": 2, "undetermined": 0}}  # fmt: skip
    seeds = {"n": 5, "comparisons": [row]}
    assert figures.seeds_apart(seeds, "flip_mass") == (
        "47 [40, 53] steps after, 3/5 seeds after (unresolved 2) (median; interval 93.8%)"
    )
    lead = {**row, "first": "argmax_hit_rate", "median": -68.5, "ci_low": -74.4, "ci_high": -55.9}
    lead["verdicts"] = {**row["verdicts"], "before": 5, "after": 0, "unresolved": 0}
    assert figures.seeds_apart({"n": 5, "comparisons": [lead]}, "argmax_hit_rate") == (
        "68 [56, 74] steps before, 5/5 seeds before (median; interval 93.8%)"
    )
    # certified bounds on their safe side, from exact counts (a float's 0.1 is above 1/10: not 0.2 here)
    assert figures.safe(1, 10, "upper", 1) == "0.1" and figures.safe(1, 10, "lower", 1) == "0.1"
    assert figures.safe(1, 3, "lower", 3) == "0.333" and figures.safe(1, 3, "upper", 3) == "0.334"
    assert figures.safe(3, 3, "upper", 3) == "1.000" and figures.safe(0, 3, "lower", 2) == "0.00"
    pairs = 16 * 10**16
    wrong = {"lower": 10**11, "upper": 2 * 10**12}
    cert = {"pairs": pairs, "inputs": 10**16, "census": {"wrong_pairs": wrong},
            "sequences_right": {"lower": 10**16 - 10**12 - 1, "upper": 10**16 - 1}}  # fmt: skip
    assert figures.certified(cert, "per_digit", "lower") == "0.9999875"  # 1 − 2e12/1.6e17 = 0.9999875
    assert figures.certified(cert, "per_digit", "upper") == "0.9999994"  # 1 − 6.25e-7, rounded up
    assert figures.certified(cert, "sequence", "lower") == "0.9998999"
    assert figures.certified(cert, "sequence", "upper") == "1.0000000"


def test_figures_come_from_their_command_and_a_changed_one_fails_the_check(tmp_path, trained_fast_run):
    """The script on a small run: it records what the command's metrics.json says, rewrites the marked
    values, and its check names a value edited by hand, an unknown key and a missing PNG."""
    root = tmp_path / "repo"
    (root / "docs" / "guide").mkdir(parents=True)
    (root / "README.md").write_text(
        "| flip mass | <!--fig:flip_alignment.flip_mass-->0.5<!--/fig--> |\n"
        "accuracy <!--fig:flip_alignment.accuracy-->?<!--/fig-->.\n"
    )
    (root / "docs" / "guide" / "x.md").write_text(
        "entropy <!--fig:flip_alignment.entropy-->1<!--/fig--> nats\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    extra = ["--checkpoint", str(trained_fast_run), "--num-sequences", "200", "--bootstrap-resamples", "50"]
    got, runs = figures.collect(["flip_alignment"], work, extra=extra)
    metrics = json.loads((work / "flip_alignment" / "metrics.json").read_text())
    flip = metrics["layers"][0]["heads"][0]["flip_mass"]
    assert (
        got["flip_alignment.flip_mass"] == f"{flip['mean']:.4f} [{flip['ci_low']:.4f}, {flip['ci_high']:.4f}]"
    )
    assert runs["flip_alignment"]["num_sequences"] == 200
    figures.write(root, got, runs, {"flip_alignment": work / "flip_alignment"})
    readme = (root / "README.md").read_text()
    assert f"<!--fig:flip_alignment.flip_mass-->{got['flip_alignment.flip_mass']}<!--/fig-->" in readme
    assert got["flip_alignment.entropy"] in (root / "docs" / "guide" / "x.md").read_text()
    assert (root / "docs" / "figures" / "flip_alignment" / "mean_attention.png").is_file()
    problems = figures.check(root)
    assert all("no recorded value" in p or "missing" in p for p in problems)  # only what did not run
    assert not [p for p in problems if "flip_alignment" in p and "missing" in p]

    (root / "README.md").write_text(readme.replace(got["flip_alignment.flip_mass"], "0.9999 [0.9, 1.0]"))
    (root / "docs" / "guide" / "y.md").write_text(
        "<!--fig:flip_alignment.nonsense-->1<!--/fig-->\n"
    )  # line start
    (root / "docs" / "figures" / "flip_alignment" / "offset_profile.png").unlink()
    problems = figures.check(root)
    assert any(
        p.startswith("README.md:1: flip_alignment.flip_mass shows '0.9999 [0.9, 1.0]'") for p in problems
    )
    assert any("docs/guide/y.md:1: unknown figure 'flip_alignment.nonsense'" in p for p in problems)
    assert any("docs/guide/y.md:1: flip_alignment.nonsense starts a line" in p for p in problems)
    assert any("offset_profile.png: missing" in p for p in problems)
    page = root / figures.PAGE
    page.write_text(page.read_text() + "edited\n")
    assert any(p.startswith("docs/guide/figures.md: not the page") for p in figures.check(root))


def test_linearisation_error_figures_are_reproducible_and_exact_where_known(tmp_path, trained_fast_run):
    """scripts/linearisation_error.py through scripts/figures.py, twice with the same seed: the same
    figures (the corrupting digits come from --seed). Known exactly: the clean attn_out patched at the
    output position restores the whole gap (position N−1−p's output reads attn_out there and nothing
    else that differs), and no other position restores any of it."""
    extra = ["--checkpoint", str(trained_fast_run), "--num-sequences", "100"]
    runs = []
    for k in range(2):
        work = tmp_path / f"work{k}"
        work.mkdir()
        runs.append(figures.collect(["linearisation_error"], work, extra=extra)[0])
    assert runs[0] == runs[1]
    assert runs[0]["linearisation_error.activation"] == "1.000"
    assert runs[0]["linearisation_error.other_positions"] == "0.00"
    assert set(runs[0]) == {f.key for f in figures.FIGURES if f.analysis == "linearisation_error"}


# --- the README's lab link --------------------------------------------------------------------------------
def test_the_readme_lab_link_applies_every_setting(browser, tmp_path):
    from conftest import make_model
    from test_report_browser import Watched
    from test_report_lab import write_page

    from models import save_model

    link = re.search(r"report\.html(#lab&[^`\s]+)", (ROOT / "README.md").read_text(encoding="utf-8")).group(1)
    assert "rep=flip+1" in link  # the example as typed: "+" unescaped
    model = make_model(seed=1)
    page = write_page(model, save_model(model, tmp_path / "model.pt"), tmp_path / "report.html")
    w = Watched(browser)
    w.page.goto(page.as_uri() + link)
    w.page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    assert w.page.inner_text("#lab-fragment-note") == ""
    assert w.page.input_value("#lab-pe-method") == "shift"
    assert w.page.input_value("#lab-attn-replace") == "flip+1"
    assert w.page.input_value("#lab-head-0-0") == "mean"
    assert not w.errors


# --- the site ------------------------------------------------------------------------------------------
EXTERNAL = re.compile(
    r"""(?:src|href)\s*=\s*["'](?:https?:)?//|@import\s+url\(\s*["']?(?:https?:)?//|url\(\s*["']?https?://"""
)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built strictly (a broken link, a missing page or an unresolvable reference fails)."""
    out = tmp_path_factory.mktemp("site") / "site"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    return out


def test_the_built_site_loads_nothing_from_the_network(site):
    """No page, stylesheet or script asks for a remote resource (links to other sites are fine: they
    are not loaded), and in Chromium, opened from file://, no request leaves the folder."""
    loaded = []
    for path in site.rglob("*"):
        if path.suffix in {".html", ".css", ".js"}:
            text = path.read_text(encoding="utf-8", errors="replace")
            if path.suffix == ".html":  # an <a href> is a link, not a load
                text = re.sub(r"<a\s[^>]*>", "", text)
            loaded += [f"{path.relative_to(site)}: {m.group(0)}" for m in EXTERNAL.finditer(text)]
    assert not loaded, loaded[:10]
    assert (site / "api" / "models.html").is_file() and "load_model" in (
        site / "api" / "models.html"
    ).read_text()


def test_the_api_reference_reads_the_docstrings_without_sphinx_roles(site):
    interp_page = (site / "api" / "interp.html").read_text(encoding="utf-8")
    assert "bootstrap" in interp_page and "flip_mass" in interp_page  # functions of interp, documented
    for page in (site / "api").glob("*.html"):
        assert not re.search(r":(func|class|mod):<code>", page.read_text(encoding="utf-8")), page.name


def test_the_built_site_works_offline_in_a_browser(site, browser):
    from test_report_browser import Watched

    w = Watched(browser)
    for page in ("index.html", "guide/analyses.html", "api/interp.html"):
        w.page.goto((site / page).as_uri())
        w.page.wait_for_load_state("load")
    w.page.click("input.md-search__input")  # search, from file://: the index is a script beside the pages
    w.page.keyboard.type("tolerance", delay=20)
    w.page.wait_for_function(
        "document.querySelector('.md-search-result__meta').innerText.includes('matching')"
    )
    assert "The analyses" in w.page.inner_text(".md-search-result__list")
    assert all(r.startswith(("file://", "data:", "blob:")) for r in w.requests), w.requests
    images = w.page.goto((site / "guide" / "analyses.html").as_uri()) and w.page.eval_on_selector_all(
        "img", "imgs => imgs.map(i => i.naturalWidth)"
    )
    assert images and all(width > 0 for width in images)  # the figures are there
