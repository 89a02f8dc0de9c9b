"""Count flags of the analyses against what this machine can do (issue 16, item 5): each refused
before any work with one line naming the flag, exit code 2, nothing written; counts may be written 1e6.
The bounds are lower bounds of memory, so requests that can run still do (the other tests run them)."""

from __future__ import annotations

import importlib

import pytest
from conftest import make_model

from analyses.frame import arguments
from machine import limits
from models import EncoderConfig, save_model

HUGE = "1e12"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("limits")
    return {
        pe: str(save_model(make_model(positional_embedding=pe), folder / pe / "model.pt"))
        for pe in ("sinusoidal", "none")
    }


T = "1,000,000,000,000"
AT_LEAST_2 = "argument --bootstrap-resamples: expected at least 2"
CASES = [
    ("head_ablation", "sinusoidal", ["--reference-sequences", HUGE], f"--reference-sequences {T} needs"),
    ("head_ablation", "sinusoidal", ["--permutations", HUGE], f"--permutations {T} needs"),
    ("head_ablation", "sinusoidal", ["--patch-sequences", HUGE], f"--patch-sequences {T} needs"),
    ("flip_alignment", "none", ["--seq-len", "1e6"], "--seq-len 1,000,000 needs at least 3."),
    ("qk_circuit", "none", ["--seq-len", "1e6"], "--seq-len 1,000,000 needs"),
    ("length_generalisation", "none", ["--lengths", "16,1000000"], "--lengths 1,000,000 needs"),
    ("pe_ablation", "sinusoidal", ["--shuffle-seeds", HUGE], f"--shuffle-seeds {T} needs"),
    ("flip_alignment", "sinusoidal", ["--bootstrap-resamples", HUGE], f"--bootstrap-resamples {T} needs"),
    ("pe_ablation", "sinusoidal", ["--bootstrap-resamples", "1"], AT_LEAST_2),
    ("flip_alignment", "sinusoidal", ["--bootstrap-resamples", "1"], AT_LEAST_2),
    ("interchange", "none", ["--seq-len", "3000"], "--seq-len 3,000 needs"),
    ("interchange", "none", ["--num-sequences", HUGE, "--batch-size", HUGE], f"--batch-size {T} needs"),
    ("interchange", "sinusoidal", ["--bootstrap-resamples", HUGE], f"--bootstrap-resamples {T} needs"),
    ("interchange", "sinusoidal", ["--bootstrap-resamples", "1"], AT_LEAST_2),
    ("tolerance", "none", ["--seq-len", "1e6"], "--seq-len 1,000,000 needs"),
    ("tolerance", "sinusoidal", ["--bootstrap-resamples", HUGE], f"--bootstrap-resamples {T} needs"),
    ("tolerance", "sinusoidal", ["--bootstrap-resamples", "1"], AT_LEAST_2),
    ("tolerance", "sinusoidal", ["--adversarial-sequences", HUGE], f"--adversarial-sequences {T} needs"),
    ("tolerance", "sinusoidal", ["--beam-width", HUGE], f"--beam-width {T} needs"),
]  # fmt: skip


@pytest.mark.parametrize("analysis, pe, flags, message", CASES)
def test_a_count_beyond_the_machine_is_one_line_before_any_work(
    analysis, pe, flags, message, checkpoints, tmp_path, capsys
):
    main = importlib.import_module(f"analyses.{analysis}.__main__").main
    out = tmp_path / "out"
    argv = ["--checkpoint", checkpoints[pe], "--out", str(out), "--num-sequences", "8", "--quiet", *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert "this machine has" in err or "expected at least" in err
    assert list(tmp_path.iterdir()) == []


def test_counts_may_be_written_with_an_exponent():
    assert arguments.positive_int("1e6") == 1_000_000 and arguments.resamples_int("2") == 2
    for bad in ("1.5", "nan", "inf", "1e-3", "x"):
        with pytest.raises(Exception, match="expected a positive integer"):
            arguments.positive_int(bad)


def test_the_memory_bounds_are_lower_bounds_by_hand():
    cfg = EncoderConfig(n_layers=2, n_heads=4, d_model=32, d_vocab=10, n_ctx=16)
    # tokens 8·16 + logits 4·16·10 + residual 4·16·32·2 + patterns 4·2·4·16²
    assert arguments.sequence_bytes(cfg, 16) == 128 + 640 + 4096 + 8192
    have = limits.memory_bytes()
    arguments.check_memory("batch_size", 1, have, "exactly what there is")  # fits
    with pytest.raises(ValueError, match=r"^--batch-size 2 needs at least .* \(twice\); this machine has"):
        arguments.check_memory("batch_size", 2, have + 1, "twice")
