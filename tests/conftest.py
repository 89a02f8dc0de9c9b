"""Shared fixtures: tiny random models (fast, CPU) and deterministic tokens."""

from __future__ import annotations

import dataclasses
import signal
import sys
import types
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import torch

    from models import HookedReverseEncoder


def pytest_configure(config):
    """One torch thread in each process that runs tests (the suite runs with two workers on two cores).
    torch is imported here, not at the top: pytest-xdist's controller process, which runs no test,
    would spend ~2 CPU s importing it (and transformer_lens) while both workers collect."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return  # the controller of ``-n N``
    import torch

    torch.set_num_threads(1)


def make_model(seed: int = 0, **overrides) -> HookedReverseEncoder:
    """A random encoder in eval mode; the same seed gives the same weights."""
    import torch

    from models import EncoderConfig, HookedReverseEncoder

    torch.manual_seed(seed)
    defaults = dict(n_layers=1, n_heads=1, d_model=16, d_vocab=10, n_ctx=16)
    defaults.update(overrides)
    model = HookedReverseEncoder(EncoderConfig(**defaults))
    # Random non-trivial LayerNorm and bias values so tests cannot pass by symmetry.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".w"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif name.endswith("bias") or name.endswith(".b"):
                p.copy_(0.3 * torch.randn_like(p))
    return model.eval()


def figures_module(monkeypatch, name: str, make_figures) -> str:
    """Register a module ``name`` whose ``make_figures`` is the given function, for ``Outputs(figures=)``."""
    module = types.ModuleType(name)
    module.make_figures = make_figures
    monkeypatch.setitem(sys.modules, name, module)
    return name


def no_figures(monkeypatch, outputs):
    """``outputs`` (an ``analyses.frame.command.Outputs``) without figures, for tests of the folder, the
    provenance or the printed summary; every analysis' own tests draw its real figures."""
    return dataclasses.replace(outputs, figures=figures_module(monkeypatch, "no_figures", lambda r, d: {}))


def numbers(result) -> dict:
    """A result's ``to_dict()`` without the provenance timestamp, the one field that may differ
    between two runs with the same seed."""
    doc = result.to_dict()
    doc.get("provenance", {}).pop("timestamp", None)
    return doc


@pytest.fixture
def tiny_model() -> HookedReverseEncoder:
    return make_model()


@pytest.fixture
def multi_model() -> HookedReverseEncoder:
    """Two layers, four heads: the shape every multi-head code path must handle."""
    return make_model(seed=1, n_layers=2, n_heads=4, d_model=16)


@pytest.fixture
def tokens() -> torch.Tensor:
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 10, (8, 16), generator=g)


from pathlib import Path  # noqa: E402  (appended with the fixture below)


@pytest.fixture(scope="session")
def trained_fast_run(tmp_path_factory) -> Path:
    """Run folder of a real ``fast``-preset training run, seed 0 (trained once per session, ~2 s)."""
    from models.train.cli import train  # imports Lightning: only the tests that ask for a trained model

    out = tmp_path_factory.mktemp("trained_fast_run")
    return train(["--preset", "fast", "--seed", "0", "--out", str(out), "--no-progress-bar"])


# A tiny training run: d_model 16, 512 training sequences in 16 batches of 32, 3 epochs = 48 steps,
# validation every 12 steps (tests/test_training.py and tests/test_run_reliability.py).
TINY_TRAIN = [
    "--d-model", "16", "--train-size", "512", "--batch-size", "32", "--epochs", "3", "--val-size", "64",
    "--test-size", "64", "--lr", "1e-2", "--warmup", "4", "--no-progress-bar", "--val-check-interval", "12",
]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_uninterrupted_run(tmp_path_factory) -> Path:
    """Run folder of ``TINY_TRAIN`` trained without interruption (named ``run``), the reference that
    interrupted, capped, moved or resumed runs are compared with. Read only."""
    from models.train.cli import train

    return train([*TINY_TRAIN, "--out", str(tmp_path_factory.mktemp("tiny_uninterrupted")), "--name", "run"])


# --- the browser tests' Chromium (Debian's package; Playwright's own download does not work here) ----
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """One headless Chromium per test process, shared by the browser modules that process runs (a
    persistent context with its own profile folder; each test opens its own pages). A start costs ~4 s
    on a busy 2-core machine, so two modules on one worker save one."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1200, "height": 1000},
        )
        yield context
        context.close()


# --- the order in which pytest-xdist hands out modules ------------------------------------------------
# With ``--dist loadscope`` each worker takes the next whole module in collection order when it is
# free. The longest modules go first (seconds of one suite run on this machine, most first), so that
# the short ones fill the end and both workers finish together; in file-name order the Ray modules
# (zoo_*) came last and one worker ran them alone.
LONGEST_FIRST = [
    "test_zoo_ray.py",  # 42 s (mostly waiting on Ray's processes)
    "test_report_build.py",  # 24 s
    "test_zoo_cluster.py",  # 23 s
    "test_report_lab.py",  # 22 s
    "test_docs.py",  # ~25 s? (91 s at load 15): the site's strict build, a small command, the snippets
    "test_notebook.py",  # 16 s
    "test_zoo.py",  # 14 s
    "test_transformer_lens.py",  # 12 s
    "test_report_browser.py",  # 12 s
    "test_flip_alignment.py",  # 11 s
    "test_head_ablation.py",  # 10 s
    "test_qk_circuit.py",  # 10 s
    "test_processes.py",  # 10 s
    "test_output_reliability.py",  # 10 s
    "test_training_dynamics.py",  # 8 s
]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: within a module, as written


@pytest.fixture
def ctrl_c_delivered():
    """Ctrl-C handled as in a foreground run during one test (Python's own handler, inherited by the
    commands it starts), then as before. A shell starts a background job (``pytest &`` without job
    control) with SIGINT ignored, and every process it starts inherits that: the tests of a real
    SIGINT would see nothing arrive. Restored afterwards, so a Ctrl-C meant for the shell's foreground
    command still leaves such a background run alone."""
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
