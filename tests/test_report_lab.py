"""The report's interventions lab in a real browser (headless Chromium through Playwright), checked against
Python: every control is set as a person would (selects, number fields, sliders moved with the arrow
keys, a click on a heatmap cell, the pin form) and the page's digits correct (exactly), flip and neighbour
masses and attention patterns (within 1e-4) must equal the same intervention run through ``interp``.
Also: the URL fragment reproduces a view and a bad one is ignored with a note; "copy as Python" gives
code that runs and prints the page's numbers; labelled controls; no console error, no network request.

One browser for the module, one page per model shared by the control cases (the lab is reset between
them)."""

from __future__ import annotations

import contextlib
import io
import json
import re
from contextlib import ExitStack
from functools import partial

import numpy as np
import pytest
import torch
from conftest import make_model
from test_report_browser import Watched

from interp import metrics, patterns
from interp.ablation import ablate_heads, ablate_positional_encoding, head_means, replace_pattern
from models import load_model, save_model
from reports import explorer
from reports.full_report import render_full_report
from reports.lab import lab_data

PATTERN_SEQUENCES = 12  # sequences whose full patterns are compared (the masses cover all 256)


def write_page(model, checkpoint, path):
    cfg = model.cfg
    provenance = {
        "config": cfg.to_dict(),
        "seed": 0,
        "num_sequences": 0,
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": None,
        "training": {},
        "command": None,
        "packages": {},
        "timestamp": "",
        "analyses": [],
    }
    html = render_full_report(
        name="lab",
        sections=[],
        metrics={},
        explorer=explorer.explorer_data(model, seed=0, count=4),
        provenance=provenance,
        lab=lab_data(model, seed=0, checkpoint=checkpoint),
    )
    path.write_text(html)
    return path


class Lab:
    """A model, its lab page open in the browser, and Python's view of the same sequences."""

    def __init__(self, model, checkpoint, path, context):
        self.model, self.checkpoint, self.url = model, checkpoint, path.as_uri()
        data = lab_data(model, seed=0)
        self.tokens = torch.tensor(data["tokens"])
        with torch.no_grad():
            self.means = head_means(model, [self.tokens])
        self.clean = None  # python_run(self, {}), once
        self.w = Watched(context)
        self.w.page.goto(self.url)

    @property
    def page(self):
        return self.w.page

    def settle(self):
        """Two animation frames: the lab recomputes once per frame after its controls change."""
        self.page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")

    def result(self) -> dict:
        self.settle()
        return json.loads(self.page.get_attribute("#lab", "data-result"))

    def page_patterns(self, count: int = PATTERN_SEQUENCES) -> np.ndarray:
        got = self.page.evaluate(f"[...Array({count}).keys()].map(i => ReverseEncoder.lab.patterns(i))")
        return np.array(got)  # [sequence, layer, head, query, key]


@pytest.fixture(scope="module")
def tutorial(trained_fast_run, browser, tmp_path_factory):
    """The tutorial's architecture (1 layer, 1 head, d 32), trained with the fast preset."""
    model = load_model(trained_fast_run)
    return Lab(
        model,
        trained_fast_run,
        write_page(model, trained_fast_run, tmp_path_factory.mktemp("lab") / "t.html"),
        browser,
    )


@pytest.fixture(scope="module")
def multi(browser, tmp_path_factory):
    """A random 2-layer × 2-head model (every per-head and per-layer path)."""
    root = tmp_path_factory.mktemp("lab-multi")
    model = make_model(seed=5, n_layers=2, n_heads=2, d_model=16)
    checkpoint = save_model(model, root / "model.pt")
    return Lab(model, checkpoint, write_page(model, checkpoint, root / "m.html"), browser)


# --- Python's side --------------------------------------------------------------------------------
def all_heads(model):
    return [(layer, head) for layer in range(model.cfg.n_layers) for head in range(model.cfg.n_heads)]


def python_run(lab: Lab, spec: dict) -> tuple[dict, np.ndarray]:
    """``spec`` through interp's context managers: the measures the page shows, and the patterns."""
    model, tokens = lab.model, lab.tokens
    pe = {"method": "none", "alpha": 1.0, **spec.get("pe", {})}
    with torch.no_grad(), ExitStack() as stack:
        if pe["method"] != "none":
            kwargs = {k: v for k, v in pe.items() if k in ("shift", "seed", "band")}
            stack.enter_context(ablate_positional_encoding(model, pe["method"], **kwargs))
        if pe["alpha"] != 1:
            stack.enter_context(ablate_positional_encoding(model, "scale", alpha=pe["alpha"]))
        attn = spec.get("attn")
        if attn:
            targets = all_heads(model) if attn.get("target", "all") == "all" else [attn["target"]]
            for layer, head in targets:
                if attn.get("tau", 1) != 1:
                    stack.enter_context(
                        replace_pattern(model, layer, head, partial(patterns.temperature, tau=attn["tau"]))
                    )
                shift = {"flip": 0, "flip+1": 1, "flip-1": -1}.get(attn.get("replace"))
                if shift is not None:
                    stack.enter_context(
                        replace_pattern(model, layer, head, partial(patterns.flip, shift=shift))
                    )
                if attn.get("replace") == "uniform":
                    stack.enter_context(replace_pattern(model, layer, head, patterns.uniform))
                if attn.get("mix"):
                    stack.enter_context(
                        replace_pattern(model, layer, head, partial(patterns.neighbour_mix, s=attn["mix"]))
                    )
        for layer, head, query, key in spec.get("pins", []):
            stack.enter_context(
                replace_pattern(model, layer, head, partial(patterns.pin, query=query, key=key))
            )
        for (layer, head), method in spec.get("heads", {}).items():
            stack.enter_context(ablate_heads(model, [(layer, head)], method, means=lab.means))
        logits, cache = model.run_with_cache(tokens)
    correct = metrics.reversal_correct(logits, tokens)
    pats = torch.stack([cache[f"blocks.{layer}.attn.hook_pattern"] for layer in range(model.cfg.n_layers)], 1)
    return {
        "logits": logits.numpy(),
        "digits": int(correct.sum()),
        "sequences": int(correct.all(-1).sum()),
        "perPosition": correct.double().mean(0).tolist(),
        "flipMass": metrics.flip_mass(pats.flatten(1, 2)).double().mean((0, 2)).tolist(),
        "neighbourMass": metrics.neighbour_mass(pats.flatten(1, 2)).double().mean((0, 2)).tolist(),
    }, pats.numpy()


def assert_same(lab: Lab, spec: dict) -> dict:
    got = lab.result()
    expected, pats = python_run(lab, spec)
    if spec:  # the intervention did something (a case that changes nothing could not catch a bug)
        if lab.clean is None:
            lab.clean = python_run(lab, {})
        clean, clean_pats = lab.clean
        assert max(np.abs(expected["logits"] - clean["logits"]).max(), np.abs(pats - clean_pats).max()) > 1e-4
    assert (got["digits"], got["sequences"]) == (expected["digits"], expected["sequences"])
    assert np.allclose(got["perPosition"], expected["perPosition"], rtol=0, atol=1e-12)
    assert np.abs(np.array(got["flipMass"]) - expected["flipMass"]).max() < 1e-5
    assert np.abs(np.array(got["neighbourMass"]) - expected["neighbourMass"]).max() < 1e-5
    assert np.abs(lab.page_patterns() - pats[:PATTERN_SEQUENCES]).max() < 1e-4
    assert not lab.w.errors
    return got


# --- driving the controls as a person would -------------------------------------------------------
def reset(lab: Lab):
    # The module's two lab pages share one browser: the one opened last is in front, and a page in the
    # background gets no animation frames (Chromium pauses them), so each settle() would wait seconds.
    lab.page.bring_to_front()
    lab.page.click("#lab-reset")
    lab.settle()


def slide(lab: Lab, slider: str, presses: int):
    lab.page.focus(f"#lab-{slider}")
    for _ in range(abs(presses)):
        lab.page.keyboard.press("ArrowRight" if presses > 0 else "ArrowLeft")


def choose(lab: Lab, control: str, value: str):
    lab.page.select_option(f"#lab-{control}", value)


def type_number(lab: Lab, control: str, value: int):
    lab.page.fill(f"#lab-{control}", str(value))


PE_CASES = [
    ("zero", lambda lab: choose(lab, "pe-method", "zero"), {"pe": {"method": "zero"}}),
    ("mean", lambda lab: choose(lab, "pe-method", "mean"), {"pe": {"method": "mean"}}),
    (
        "shuffle seed 3",
        lambda lab: (choose(lab, "pe-method", "shuffle"), choose(lab, "pe-seed", "3")),
        {"pe": {"method": "shuffle", "seed": 3}},
    ),
    (
        "shift -2",
        lambda lab: (choose(lab, "pe-method", "shift"), type_number(lab, "pe-shift", -2)),
        {"pe": {"method": "shift", "shift": -2}},
    ),
    ("mirror", lambda lab: choose(lab, "pe-method", "mirror"), {"pe": {"method": "mirror"}}),
    (
        "remove band 1",
        lambda lab: (choose(lab, "pe-method", "remove_band"), choose(lab, "pe-band", "1")),
        {"pe": {"method": "remove_band", "band": 1}},
    ),
    (
        "keep band 0",
        lambda lab: (choose(lab, "pe-method", "keep_band"), choose(lab, "pe-band", "0")),
        {"pe": {"method": "keep_band", "band": 0}},
    ),
    ("scale 0.5", lambda lab: slide(lab, "alpha", -10), {"pe": {"alpha": 0.5}}),
    (
        "shift +1 then scale 1.5",
        lambda lab: (choose(lab, "pe-method", "shift"), slide(lab, "alpha", 10)),
        {"pe": {"method": "shift", "shift": 1, "alpha": 1.5}},
    ),
]
ATTENTION_CASES = [
    ("tau 0.5", lambda lab: slide(lab, "tau", -4), {"attn": {"tau": 0.5}}),
    ("tau 2^1.5", lambda lab: slide(lab, "tau", 6), {"attn": {"tau": 2**1.5}}),
    ("flip", lambda lab: choose(lab, "attn-replace", "flip"), {"attn": {"replace": "flip"}}),
    ("flip+1", lambda lab: choose(lab, "attn-replace", "flip+1"), {"attn": {"replace": "flip+1"}}),
    ("flip-1", lambda lab: choose(lab, "attn-replace", "flip-1"), {"attn": {"replace": "flip-1"}}),
    ("uniform", lambda lab: choose(lab, "attn-replace", "uniform"), {"attn": {"replace": "uniform"}}),
    ("neighbour mix 0.3", lambda lab: slide(lab, "mix", 6), {"attn": {"mix": 0.3}}),
    (
        "tau 0.5, flip, mix 0.4",
        lambda lab: (slide(lab, "tau", -4), choose(lab, "attn-replace", "flip"), slide(lab, "mix", 8)),
        {"attn": {"tau": 0.5, "replace": "flip", "mix": 0.4}},
    ),
]


@pytest.mark.parametrize(
    "name, act, spec", PE_CASES + ATTENTION_CASES, ids=[c[0] for c in PE_CASES + ATTENTION_CASES]
)
def test_each_control_on_the_tutorial_model_matches_python(tutorial, name, act, spec):
    reset(tutorial)
    act(tutorial)
    got = assert_same(tutorial, spec)
    # the measure strip and the table show the same numbers
    assert tutorial.page.locator("#lab-strip .strip-cell").count() == 16
    assert f"{got['digits']} of 4096" in tutorial.page.inner_text("#lab-measures")


MULTI_CASES = [
    ("zero head 1.0", lambda lab: choose(lab, "head-1-0", "zero"), {"heads": {(1, 0): "zero"}}),
    ("mean head 0.1", lambda lab: choose(lab, "head-0-1", "mean"), {"heads": {(0, 1): "mean"}}),
    (
        "uniform on head 1.1 only",
        lambda lab: (choose(lab, "attn-target", "1.1"), choose(lab, "attn-replace", "uniform")),
        {"attn": {"target": (1, 1), "replace": "uniform"}},
    ),
    (
        "everything at once",
        lambda lab: (
            choose(lab, "pe-method", "mirror"),
            slide(lab, "alpha", -4),
            choose(lab, "attn-target", "0.0"),
            slide(lab, "tau", 3),
            slide(lab, "mix", 2),
            choose(lab, "head-1-1", "mean"),
            choose(lab, "head-0-1", "zero"),
        ),
        {
            "pe": {"method": "mirror", "alpha": 0.8},
            "attn": {"target": (0, 0), "tau": 2**0.75, "mix": 0.1},
            "heads": {(1, 1): "mean", (0, 1): "zero"},
        },
    ),
]


@pytest.mark.parametrize("name, act, spec", MULTI_CASES, ids=[c[0] for c in MULTI_CASES])
def test_head_controls_on_two_layers_match_python(multi, name, act, spec):
    reset(multi)
    act(multi)
    assert_same(multi, spec)


def test_a_click_pins_a_row_and_the_output_digit_changes(tutorial):
    reset(tutorial)
    page = tutorial.page
    before = page.locator(".digits-row").nth(2).locator(".digit").all_inner_texts()
    tokens = [int(d) for d in page.locator(".digits-row").nth(0).locator(".digit").all_inner_texts()]
    key = next(
        k for k in range(16) if tokens[k] != tokens[15 - 3]
    )  # a key holding another digit than 3's target
    page.click(f'#explorer-heatmap .cell[data-q="3"][data-k="{key}"]')
    tutorial.settle()
    assert page.locator("#explorer-heatmap .cell.pinned").count() == 1
    after = page.locator(".digits-row").nth(2).locator(".digit").all_inner_texts()
    assert (
        after[3] != before[3] and int(after[3]) == tokens[key]
    )  # output 3 now copies the pinned key's digit
    assert page.locator(".digits-row").count() == 4  # the output without the interventions is shown too
    assert_same(tutorial, {"pins": [(0, 0, 3, key)]})
    # the keyboard way: the pin form (Enter on its button) adds a second pin; a second click unpins the first
    page.fill("#lab-pin-query", "7")
    page.fill("#lab-pin-key", "2")
    page.focus("#lab-pin-add")
    page.keyboard.press("Enter")
    assert_same(tutorial, {"pins": [(0, 0, 3, key), (0, 0, 7, 2)]})
    page.click(f'#explorer-heatmap .cell[data-q="3"][data-k="{key}"]')
    assert_same(tutorial, {"pins": [(0, 0, 7, 2)]})
    page.fill("#lab-pin-query", "16")
    page.click("#lab-pin-add")
    assert "positions 0–15" in page.inner_text("#lab-pin-status")
    page.click("#lab-pin-clear")
    assert_same(tutorial, {})


def snippet_numbers(code: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<copied from the report>", "exec"), {})
    text = out.getvalue()
    heads = re.findall(r"head (\d+)\.(\d+): flip mass ([\d.]+), neighbour mass ([\d.]+)", text)
    return {
        "digits": int(re.search(r"digits correct: (\d+) of", text).group(1)),
        "sequences": int(re.search(r"sequences correct: (\d+) of", text).group(1)),
        "flip": [float(h[2]) for h in heads],
        "near": [float(h[3]) for h in heads],
    }


@pytest.mark.parametrize("which", ["tutorial", "multi"])
def test_copy_as_python_runs_and_prints_the_page_numbers(which, request):
    lab = request.getfixturevalue(which)
    reset(lab)
    page = lab.page
    choose(lab, "pe-method", "shift")
    type_number(lab, "pe-shift", -1)
    slide(lab, "tau", -2)
    slide(lab, "mix", 3)
    if which == "multi":
        choose(lab, "head-1-1", "mean")
        choose(lab, "head-0-0", "zero")
        page.select_option("#explorer-layer", "1")
    page.click('#explorer-heatmap .cell[data-q="5"][data-k="4"]')
    page.click("#lab-copy")
    got = lab.result()
    code = page.input_value("#lab-python")
    assert str(lab.checkpoint) in code and 'ablate_positional_encoding(model, "shift", shift=-1)' in code
    numbers = snippet_numbers(code)
    assert (numbers["digits"], numbers["sequences"]) == (got["digits"], got["sequences"])
    assert np.abs(np.array(numbers["flip"]) - got["flipMass"]).max() <= 5.1e-5  # printed to 4 decimals
    assert np.abs(np.array(numbers["near"]) - got["neighbourMass"]).max() <= 5.1e-5
    assert page.inner_text("#lab-copy-status")  # copied, or selected for Ctrl+C
    assert not lab.w.errors


def test_the_fragment_reproduces_the_view_and_a_bad_one_is_ignored_with_a_note(multi, browser):
    reset(multi)
    choose(multi, "pe-method", "shuffle")
    choose(multi, "pe-seed", "2")
    slide(multi, "tau", 2)
    choose(multi, "attn-replace", "flip+1")
    choose(multi, "head-0-1", "mean")
    multi.page.select_option("#explorer-layer", "1")
    multi.page.click('#explorer-heatmap .cell[data-q="2"][data-k="9"]')
    got = multi.result()
    link = multi.page.url
    assert "#lab&" in link and "pe=shuffle%3A2" in link
    fresh = Watched(browser)
    fresh.page.goto(link)
    fresh.page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    again = json.loads(fresh.page.get_attribute("#lab", "data-result"))
    assert again == got
    assert (
        fresh.page.input_value("#lab-pe-method") == "shuffle"
        and fresh.page.input_value("#lab-head-0-1") == "mean"
    )
    assert fresh.page.inner_text("#lab-fragment-note") == ""
    base = multi.url
    for bad, problem in [
        ("#lab&pe=warp", "unknown positional-encoding method"),
        ("#lab&heads=3.0:zero", "is not layer.head:zero|mean of this model"),
        ("#lab&alpha=7", "alpha must be a slider value"),
        ("#lab&alpha=%20", "alpha must be a slider value"),  # Number(" ") is 0: not alpha = 0
        ("#lab&alpha=", "alpha must be a slider value"),
        ("#lab&mix=0x0", "the neighbour mix must be a slider value"),
        ("#lab&pins=0.0.3", "is not layer.head.query.key"),
        ("#lab&colour=red", "unknown field"),
        ("#lab&tau=0.1", "log2 tau must be a slider value"),
    ]:
        fresh.page.goto(base + bad)
        fresh.page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        note = fresh.page.inner_text("#lab-fragment-note")
        assert note.startswith("The link's lab settings were ignored (") and problem in note, (bad, note)
        assert fresh.page.input_value("#lab-pe-method") == "none"
    clean = json.loads(fresh.page.get_attribute("#lab", "data-result"))
    assert clean["digits"] == python_run(multi, {})[0]["digits"]  # the model as trained
    fresh.page.goto(base + "#lab-measures")  # an in-page link is not a lab state: the note stays
    assert fresh.page.inner_text("#lab-fragment-note").startswith("The link's lab settings were ignored")
    assert not fresh.errors and not fresh.dialogs and fresh.offline_only(base)


def test_every_control_is_labelled_and_the_page_stays_offline(tutorial):
    page = tutorial.page
    unlabelled = page.evaluate(
        """[...document.querySelectorAll('#lab select, #lab input, #lab button, #lab textarea')]
           .filter(c => !(c.labels && c.labels.length) && c.tagName !== 'BUTTON').map(c => c.id)"""
    )
    assert unlabelled == []
    reset(tutorial)
    page.focus("#lab-pe-method")  # the keyboard reaches the lab's controls in order (disabled ones skipped)
    order = []
    for _ in range(4):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id"))
    assert order == ["lab-alpha", "lab-attn-target", "lab-tau", "lab-attn-replace"]
    assert all(r == tutorial.url or r.startswith("data:") for r in tutorial.w.requests)
    assert not tutorial.w.errors and not tutorial.w.dialogs


def test_typed_digits_run_under_the_interventions(multi):
    reset(multi)
    page = multi.page
    choose(multi, "pe-method", "mirror")
    choose(multi, "head-0-1", "mean")
    choose(multi, "attn-replace", "flip-1")
    multi.settle()
    page.fill("#explorer-digits", "0123456789")  # 10 digits: the means cover the 16 training positions
    assert "mean ablation holds means of 16 positions" in page.inner_text("#explorer-status")
    digits = "3141592653589793"
    page.fill("#explorer-digits", digits)
    multi.settle()
    assert page.inner_text("#explorer-status") == ""
    tokens = torch.tensor([[int(c) for c in digits]])
    spec = {"pe": {"method": "mirror"}, "heads": {(0, 1): "mean"}, "attn": {"replace": "flip-1"}}
    original, multi.tokens = multi.tokens, tokens
    try:
        expected, pats = python_run(multi, spec)
    finally:
        multi.tokens = original
    for layer in range(2):
        for head in range(2):
            page.select_option("#explorer-layer", str(layer))
            page.select_option("#explorer-head", str(head))
            shown = np.array(
                page.eval_on_selector_all("#explorer-heatmap .cell", "cs => cs.map(c => +c.dataset.w)")
            )
            assert np.abs(shown.reshape(16, 16) - pats[0, layer, head]).max() < 1e-4
    assert int(page.get_attribute("#explorer-note", "data-correct")) == expected["digits"]
    assert "without the interventions" in page.inner_text("#explorer-note")
    assert not multi.w.errors
