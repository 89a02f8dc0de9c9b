"""Update time of the report's interventions lab in headless Chromium (targets: ≤ 100 ms per change for
the tutorial-sized model, ≤ 1 s for 2 layers × 4 heads).

For each model a lab page is rendered (``reports.full_report`` with ``reports.lab.lab_data``: 256
sequences) and opened in Chromium (Debian's /usr/bin/chromium through Playwright). Each change sets
one control as the user would (a select, a slider step, a pin) and the page's own clock times the
update it triggers (``#lab-timing[data-ms]``: the forward pass with the interventions on the 256
sequences and the explorer's sequence, the measures and the redrawn heatmap), and the DevTools
protocol gives the CPU time of the page's main thread over the same change (thread ticks: the cost
of an update whatever the load, layout and paint included). The baseline, in the same
run and for the same change, is PyTorch on one CPU thread computing the same forward pass through
``interp``'s context managers on the same 256 sequences (``torch.set_num_threads(1)``); the ratio says
how much the page's plain JavaScript pays. The load average is printed with each model's figures: the
machine is shared, so the times say as much about the neighbours as about the code.

    python benchmarks/lab_speed.py [--rounds 3]

The tutorial-sized model is the default model (``models.load_model()``: trained and cached on first
use); the 2 × 4 model has random weights of the tutorial's width (the time does not depend on them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from interp import patterns  # noqa: E402
from interp.ablation import ablate_heads, ablate_positional_encoding, head_means, replace_pattern  # noqa: E402
from models import EncoderConfig, HookedReverseEncoder, load_model  # noqa: E402
from reports import explorer  # noqa: E402
from reports.full_report import render_full_report  # noqa: E402
from reports.lab import lab_data  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]

# (name, JavaScript that changes one control, the same intervention in Python)
CHANGES = [
    ("PE zero", "set('lab-pe-method', 'zero')", lambda m: [ablate_positional_encoding(m, "zero")]),
    ("PE mirror", "set('lab-pe-method', 'mirror')", lambda m: [ablate_positional_encoding(m, "mirror")]),
    (
        "PE scale 0.95",
        "set('lab-alpha', '0.95')",
        lambda m: [ablate_positional_encoding(m, "scale", alpha=0.95)],
    ),
    (
        "tau 0.84",
        "set('lab-tau', '-0.25')",
        lambda m: [replace_pattern(m, *h, partial(patterns.temperature, tau=2**-0.25)) for h in heads(m)],
    ),
    (
        "flip",
        "set('lab-attn-replace', 'flip')",
        lambda m: [replace_pattern(m, *h, patterns.flip) for h in heads(m)],
    ),
    (
        "neighbour mix 0.05",
        "set('lab-mix', '0.05')",
        lambda m: [replace_pattern(m, *h, partial(patterns.neighbour_mix, s=0.05)) for h in heads(m)],
    ),
    ("head 0.0 zero", "set('lab-head-0-0', 'zero')", lambda m: [ablate_heads(m, [(0, 0)], "zero")]),
    (
        "head 0.0 mean",
        "set('lab-head-0-0', 'mean')",
        lambda m: [ablate_heads(m, [(0, 0)], "mean", means=head_means(m, [TOKENS[0]]))],
    ),
    (
        "pin query 3",
        'document.querySelector(\'#explorer-heatmap .cell[data-q="3"][data-k="2"]\').click()',
        lambda m: [replace_pattern(m, 0, 0, partial(patterns.pin, query=3, key=2))],
    ),
]
SETUP = """() => { window.set = function (id, value) {
  var c = document.getElementById(id); c.value = value; c.dispatchEvent(new Event('change'));
}; }"""
# Make the change, wait for the update it triggers, return the page's own timing of that update.
CHANGE = """() => new Promise(resolve => {
  var lab = document.getElementById('lab'), before = lab.dataset.updates;
  CHANGE;
  (function wait() {
    if (lab.dataset.updates !== before) resolve(+document.getElementById('lab-timing').dataset.ms);
    else requestAnimationFrame(wait);
  })();
})"""
TOKENS: list[torch.Tensor] = []


def heads(model):
    return [(layer, head) for layer in range(model.cfg.n_layers) for head in range(model.cfg.n_heads)]


def page_for(model, folder: Path, name: str) -> Path:
    cfg = model.cfg
    provenance = {
        "config": cfg.to_dict(),
        "seed": 0,
        "num_sequences": 0,
        "checkpoint": None,
        "checkpoint_sha256": None,
        "training": {},
        "command": "benchmarks/lab_speed.py",
        "packages": {},
        "timestamp": "",
        "analyses": [],
    }
    html = render_full_report(
        name=name,
        sections=[],
        metrics={},
        explorer=explorer.explorer_data(model, seed=0),
        provenance=provenance,
        lab=lab_data(model, seed=0),
    )
    path = folder / f"{name}.html"
    path.write_text(html)
    return path


def page_times(context, path: Path, rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per change: the page's own wall-clock ms, and the CPU ms of the page's main thread (Chromium's
    ``TaskDuration`` in thread time, from the DevTools protocol: what the update costs whatever the load)."""
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Performance.enable", {"timeDomain": "threadTicks"})

    def task_seconds() -> float:
        return next(
            m["value"] for m in cdp.send("Performance.getMetrics")["metrics"] if m["name"] == "TaskDuration"
        )

    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.evaluate(SETUP)
    out: dict[str, list[float]] = {name: [] for name, _, _ in CHANGES}
    cpu: dict[str, list[float]] = {name: [] for name, _, _ in CHANGES}
    for _ in range(rounds):
        for name, js, _ in CHANGES:
            page.click("#lab-reset")
            page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            before = task_seconds()
            out[name].append(page.evaluate(CHANGE.replace("CHANGE", js)))
            cpu[name].append(1000 * (task_seconds() - before))
    if errors:
        raise RuntimeError(f"{path.name}: page errors {errors}")
    page.close()
    return out, cpu


@torch.no_grad()
def torch_times(model, tokens: torch.Tensor, rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for name, _, managers in CHANGES:
        out[name] = []
        for _ in range(rounds):
            started = time.perf_counter()
            with ExitStack() as stack:
                for manager in managers(model):
                    stack.enter_context(manager)
                model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern"))
            out[name].append(1000 * (time.perf_counter() - started))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from playwright.sync_api import sync_playwright

    torch.manual_seed(0)
    models = {
        "tutorial (1 layer x 1 head, d 32)": load_model(None),
        "2 layers x 4 heads, d 32": HookedReverseEncoder(
            EncoderConfig(n_layers=2, n_heads=4, d_model=32)
        ).eval(),
    }
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        context = browser.new_context()
        for i, (label, model) in enumerate(models.items()):
            path = page_for(model, Path(tmp), f"model{i}")
            tokens = torch.tensor(lab_data(model, seed=0)["tokens"])
            TOKENS[:] = [tokens]
            load = os.getloadavg()[0]
            in_page, in_page_cpu = page_times(context, path, args.rounds)
            in_torch = torch_times(model, tokens, args.rounds)
            print(f"\n{label}: page {path.stat().st_size / 1e6:.2f} MB, load average {load:.1f}")
            head = ("change", "page ms", "max", "page CPU ms", "PyTorch ms", "ratio")
            print("{:<20} {:>8} {:>6} {:>12} {:>11} {:>6}".format(*head))
            for name in in_page:
                page_ms, torch_ms = statistics.median(in_page[name]), statistics.median(in_torch[name])
                top, cpu_ms = max(in_page[name]), statistics.median(in_page_cpu[name])
                ratio = page_ms / torch_ms
                print(
                    f"{name:<20} {page_ms:>8.0f} {top:>6.0f} {cpu_ms:>12.0f} {torch_ms:>11.1f} {ratio:>6.1f}"
                )
            every = [v for values in in_page.values() for v in values]
            every_cpu = [v for values in in_page_cpu.values() for v in values]
            print(
                f"{'all changes':<20} {statistics.median(every):>8.0f} {max(every):>6.0f} "
                f"{statistics.median(every_cpu):>12.0f}   (medians; ratio = page ms / PyTorch ms)"
            )
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
