"""The report in a real browser (headless Chromium through Playwright): it loads from a file URL without
console errors or network requests, the attention explorer reacts to the layer/head/sequence choices,
typed digits give the patterns Python computes (the in-page forward pass), a hostile run name stays
text, and the index page loads and links to the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_model

from interp import metrics
from models import load_model, save_model
from reports import build, explorer
from reports.full_report import render_full_report
from reports.index import build_index
from reports.lab import lab_data

EVIL = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A report of a random 2-layer × 2-head model and an index over it. One analysis section, the one
    with the quickest figures (interchange): the explorer and the lab are what is tested here, the
    section only needs to put figures (data URIs) on the page; every section's markup is checked in
    test_report_build.py."""
    root = tmp_path_factory.mktemp("browser")
    checkpoint = save_model(make_model(seed=7, n_layers=2, n_heads=2), root / "model.pt")
    page = build.build_report(
        checkpoint, root / "runs" / "tiny", only=["interchange"], num_sequences=24, name=EVIL
    )
    assert 'src="data:image/png;base64,' in page.read_text()  # the page loads images (offline ones)
    index = build_index([page.parent], root / "runs")
    return page, index, load_model(checkpoint)


class Watched:
    """A page whose console errors, uncaught exceptions, requests and dialogs are recorded."""

    def __init__(self, context):
        self.page = context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))

        def dialog(d):
            self.dialogs.append(d.message)
            d.dismiss()

        self.page.on("dialog", dialog)

    def offline_only(self, url: str) -> bool:
        return all(r == url or r.startswith("data:") for r in self.requests)


def heatmap(page) -> np.ndarray:
    """The weights the heatmap shows, read back from its cells, as a [query, key] matrix."""
    cells = page.eval_on_selector_all(
        "#explorer-heatmap .cell", "cs => cs.map(c => [+c.dataset.q, +c.dataset.k, +c.dataset.w])"
    )
    n = int(round(len(cells) ** 0.5))
    out = np.full((n, n), np.nan)
    for q, k, w in cells:
        out[q, k] = w
    return out


def python_patterns(model, tokens: list[int]) -> tuple[np.ndarray, list[int]]:
    patterns, predictions = explorer.attention_patterns(model, torch.tensor([tokens]))
    return patterns[0].numpy(), predictions[0].tolist()


def test_report_is_offline_and_the_explorer_follows_layer_and_head(report, browser, tmp_path):
    page_path, _, model = report
    w = Watched(browser)
    url = page_path.as_uri()
    w.page.goto(url)
    check = w.page.locator("#explorer-check")
    assert check.inner_text().startswith("Check passed")
    assert float(check.get_attribute("data-max-diff")) < 1e-4
    first = w.page.locator("#explorer-sequence option").first.inner_text()
    # 0-based, named as in flip_alignment's figures ("Example sequence 0"): the same first sequence.
    assert first.startswith("Example sequence 0: ")
    assert w.page.inner_text("#explorer-note").startswith("Example sequence 0: patterns")
    tokens = [int(t) for t in first.split(": ")[1]]
    expected, predictions = python_patterns(model, tokens)
    shown = {}
    for layer in (0, 1):
        for head in (0, 1):
            w.page.select_option("#explorer-layer", str(layer))
            w.page.select_option("#explorer-head", str(head))
            shown[layer, head] = heatmap(w.page)
            assert np.abs(shown[layer, head] - expected[layer, head]).max() <= 1e-5  # stored to 5 decimals
    assert np.abs(shown[0, 0] - shown[0, 1]).max() > 1e-3  # another head, another heatmap
    n = len(tokens)
    flipped = w.page.eval_on_selector_all(".cell.flip", "cs => cs.map(c => [+c.dataset.q, +c.dataset.k])")
    assert sorted(map(tuple, flipped)) == [(i, n - 1 - i) for i in range(n)]
    output = w.page.locator(".digits-row").nth(2).locator(".digit").all_inner_texts()
    assert [int(d) for d in output] == predictions
    w.page.hover('#explorer-heatmap .cell[data-q="3"][data-k="12"]')
    assert w.page.inner_text("#explorer-readout") == (
        f"query 3 (digit {tokens[3]}) → key 12 (digit {tokens[12]}): weight {shown[1, 1][3, 12]:.4f}"
        " — the flipped key"
    )
    background = w.page.eval_on_selector_all(
        "#explorer-heatmap .cell", "cs => cs.map(c => c.style.background)"
    )
    w.page.check("#explorer-scale")  # colours stretched to the largest weight; the weights stay
    assert w.page.inner_text("#explorer-scale-max") == f"{shown[1, 1].max():.3f}"
    assert np.array_equal(heatmap(w.page), shown[1, 1])
    assert (
        w.page.eval_on_selector_all("#explorer-heatmap .cell", "cs => cs.map(c => c.style.background)")
        != background
    )
    w.page.select_option("#explorer-sequence", "2")
    assert not np.allclose(heatmap(w.page), shown[1, 1])
    # reports.build adds the interventions lab (tests/test_report_lab.py drives it)
    assert "of 4096 (" in w.page.inner_text("#lab-measures")  # 256 sequences × 16 digits
    w.page.locator("#explorer").scroll_into_view_if_needed()
    shot = tmp_path / "explorer.png"
    w.page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    assert not w.errors and w.offline_only(url) and url in w.requests and not w.dialogs


@pytest.mark.parametrize("digits", ["9081726354", "0 1 2 3 4 5 6 7 8 9 9 8 7 6 5 4 3 2 1 0 5 5"])
def test_typed_digits_are_run_through_the_model_in_the_page(report, browser, digits):
    page_path, _, model = report
    w = Watched(browser)
    w.page.goto(page_path.as_uri())
    w.page.fill("#explorer-digits", digits)
    tokens = [int(c) for c in digits if c.isdigit()]
    expected, predictions = python_patterns(model, tokens)  # lengths 10 and 22 (beyond training's 16)
    assert w.page.input_value("#explorer-sequence") == "typed"
    for layer in (0, 1):
        for head in (0, 1):
            w.page.select_option("#explorer-layer", str(layer))
            w.page.select_option("#explorer-head", str(head))
            got = heatmap(w.page)
            assert got.shape == (len(tokens), len(tokens))
            assert np.abs(got - expected[layer, head]).max() < 1e-4
    output = w.page.locator(".digits-row").nth(2).locator(".digit").all_inner_texts()
    assert [int(d) for d in output] == predictions
    before = heatmap(w.page)
    w.page.fill("#explorer-digits", "12a4")
    assert "Only digits 0–9" in w.page.inner_text("#explorer-status")
    assert np.array_equal(heatmap(w.page), before)  # a bad entry keeps the last good heatmap
    w.page.fill("#explorer-digits", "1" * 33)
    assert "At most 32" in w.page.inner_text("#explorer-status")
    assert not w.errors


def test_hostile_run_name_is_shown_as_text_and_never_runs(report, browser):
    page_path, index_path, _ = report
    for path, where in ((page_path, "h1"), (page_path, "#provenance dd"), (index_path, "table.runs a")):
        w = Watched(browser)
        w.page.goto(path.as_uri())
        assert EVIL in w.page.locator(where).first.inner_text()
        assert not w.dialogs and not w.errors
        if path == page_path:
            assert w.page.title() == f"Report — {EVIL}"
            # the explorer's and the lab's data, and the one script (model.js + explorer.js + lab.js)
            assert w.page.evaluate("document.querySelectorAll('script').length") == 3


def test_index_page_loads_and_links_to_the_report(report, browser):
    page_path, index_path, _ = report
    w = Watched(browser)
    url = index_path.as_uri()
    w.page.goto(url)
    rows = w.page.locator("table.runs tr")
    assert rows.count() == 2  # header + one run
    w.page.click(f"text={EVIL}")
    w.page.wait_for_load_state()
    assert w.page.url == page_path.as_uri()
    assert w.page.inner_text("#explorer-check").startswith("Check passed")
    assert not w.errors and not w.dialogs
    assert all(r in (url, page_path.as_uri()) or r.startswith("data:") for r in w.requests)


@pytest.mark.parametrize("width", [1400, 700])
def test_index_table_is_whole_or_scrolls_inside_its_box(report, browser, width):
    """At 1400 px (where it was cut off) and at 700 px: the page itself never scrolls sideways, and
    every cell of the index table is either inside the visible box or reached by scrolling the table's
    own box (the last header cell ends inside it once scrolled to the end), with the run's name pinned
    at the left. (The fixture's one-run table is ~1,850 px wide: it scrolls at both widths.)"""
    _, index_path, _ = report
    w = Watched(browser)
    w.page.set_viewport_size({"width": width, "height": 900})
    w.page.goto(index_path.as_uri())
    page = w.page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert page[0] <= page[1], f"the page scrolls sideways at {width} px: {page}"
    box = w.page.locator("table.runs").evaluate_handle("t => t.parentElement")
    geometry = """b => { const r = b.getBoundingClientRect(), s = getComputedStyle(b);
        return {left: r.left, right: r.right, client: b.clientWidth, scroll: b.scrollWidth,
                overflow: s.overflowX, viewport: document.documentElement.clientWidth}; }"""
    g = box.evaluate(geometry)
    assert g["left"] >= 0 and g["right"] <= g["viewport"] + 0.5, g  # the box itself is on screen
    if g["scroll"] > g["client"]:  # wider than its box: the box must scroll, not clip
        assert g["overflow"] in ("auto", "scroll"), g
    box.evaluate("b => { b.scrollLeft = b.scrollWidth; }")
    header = w.page.locator("table.runs tr").first.locator("th")
    last, name = header.last.bounding_box(), header.first.bounding_box()
    g = box.evaluate(geometry)
    assert last["x"] >= g["left"] - 0.5 and last["x"] + last["width"] <= g["right"] + 0.5, (last, g)
    # scrolled to the end, the run's name is still there, pinned at the left of the box
    assert abs(name["x"] - g["left"]) <= 1.5, (name, g)
    assert not w.errors


@pytest.mark.parametrize(
    "overrides",
    [
        dict(normalization="pre", positional_embedding="learned", n_heads=4),
        dict(positional_embedding="none", n_layers=3, d_vocab=12),
    ],
)
def test_in_page_forward_pass_matches_python_for_other_architectures(overrides, browser, tmp_path):
    """Pre-LayerNorm blocks, learned or absent encodings, more heads and tokens beyond 9: a page holding
    only the explorer (no analysis sections) recomputes Python's patterns."""
    model = make_model(seed=11, n_layers=overrides.pop("n_layers", 2), **overrides)
    cfg = model.cfg
    provenance = {
        "config": cfg.to_dict(),
        "seed": 0,
        "num_sequences": 0,
        "checkpoint": None,
        "checkpoint_sha256": None,
        "training": {},
        "command": None,
        "packages": {},
        "timestamp": "",
        "analyses": [],
    }
    html = render_full_report(
        name="explorer only",
        sections=[],
        metrics={},
        explorer=explorer.explorer_data(model, seed=1, count=4),
        provenance=provenance,
        lab=lab_data(model, seed=1),
    )
    path = tmp_path / "page.html"
    path.write_text(html)
    w = Watched(browser)
    w.page.goto(path.as_uri())
    assert w.page.inner_text("#explorer-check").startswith("Check passed")
    tokens = [11, 0, 10, 3, 3, 7, 1, 9] if cfg.d_vocab > 10 else [5, 1, 4, 1, 5, 9, 2, 6, 5, 3]
    w.page.fill("#explorer-digits", ", ".join(map(str, tokens)))
    expected, predictions = python_patterns(model, tokens)
    for layer in range(cfg.n_layers):
        for head in range(cfg.n_heads):
            w.page.select_option("#explorer-layer", str(layer))
            w.page.select_option("#explorer-head", str(head))
            assert np.abs(heatmap(w.page) - expected[layer, head]).max() < 1e-4
    output = w.page.locator(".digits-row").nth(2).locator(".digit").all_inner_texts()
    assert [int(d) for d in output] == predictions
    # the lab runs on these architectures too (its controls are checked in test_report_lab.py)
    lab_tokens = torch.tensor(lab_data(model, seed=1)["tokens"])
    digits = int(metrics.reversal_correct(model(lab_tokens), lab_tokens).sum())
    assert json.loads(w.page.get_attribute("#lab", "data-result"))["digits"] == digits
    assert w.page.is_disabled("#lab-pe-method") == (cfg.positional_embedding == "none")
    # the lab redraws in the next animation frame: after each change, wait two frames, as
    # test_report_lab.Lab.settle does (two changes within one frame are drawn together)
    settle = "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
    w.page.select_option("#lab-attn-replace", "uniform")
    w.page.evaluate(settle)
    assert w.page.locator(".digits-row").count() == 4  # and the output without the interventions
    w.page.select_option("#lab-head-0-0", "mean")  # means of n_ctx positions: not for the typed length
    w.page.evaluate(settle)
    assert w.page.inner_text("#explorer-status") == (
        f"The lab's interventions do not apply to {len(tokens)} digits: mean ablation holds means of "
        f"{cfg.n_ctx} positions."
    )
    assert not w.errors and not w.dialogs
