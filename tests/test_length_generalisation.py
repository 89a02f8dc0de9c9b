"""The length-generalisation analysis: key maps and statistics on hand-built cases, planted attention
patterns, agreement with a direct computation, skipped lengths, determinism, outputs, the CLI and its
errors, and a trained model."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from conftest import make_model, numbers

from analyses import length_generalisation as lg
from analyses.frame import sequences
from analyses.length_generalisation import __main__ as lg_cli
from analyses.length_generalisation.lengths import plan_lengths
from analyses.length_generalisation.measure import learned_flip_keys, length_statistics, preference
from analyses.length_generalisation.result import NAN
from interp.stats import Estimate
from models import load_model, save_model

SMALL = dict(num_sequences=40, batch_size=16, bootstrap_resamples=40)
CLI_SMALL = ["--num-sequences", "24", "--batch-size", "16", "--bootstrap-resamples", "20"]


def one_hot_keys(keys_of):
    """A hook replacing every head's pattern by one-hot rows: query i reads key ``keys_of(n)[i]``."""

    def hook(pattern, hook):
        n = pattern.shape[-1]
        return torch.nn.functional.one_hot(keys_of(n), n).to(pattern.dtype).expand_as(pattern).clone()

    return hook


def task_keys(n: int) -> torch.Tensor:
    return torch.arange(n - 1, -1, -1)


def learned_keys_or_zero(n: int, train_length: int = 16) -> torch.Tensor:
    """Key 15 − i where it exists, key 0 otherwise."""
    keys = train_length - 1 - torch.arange(n)
    return torch.where((keys >= 0) & (keys < n), keys, torch.zeros_like(keys))


# --- hand-built cases -----------------------------------------------------------------------------
def test_learned_flip_keys_exist_exactly_where_the_trained_position_is_inside_the_sequence():
    keys, valid = learned_flip_keys(16, 16)
    assert keys.tolist() == list(range(15, -1, -1)) and valid.all()
    keys, valid = learned_flip_keys(12, 16)
    assert valid.tolist() == [False] * 4 + [True] * 8
    assert keys[valid].tolist() == list(range(11, 3, -1))  # query 4 → key 11, ..., query 11 → key 4
    keys, valid = learned_flip_keys(20, 16)
    assert valid.tolist() == [True] * 16 + [False] * 4 and keys[:16].tolist() == list(range(15, -1, -1))
    assert not learned_flip_keys(8, 16)[1].any()  # N′ ≤ N_train / 2: no learned key at all
    assert learned_flip_keys(9, 16)[1].tolist() == [False] * 7 + [True] * 2


def test_length_statistics_on_a_hand_built_batch():
    n, tokens = 12, torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]])
    keys, valid = learned_flip_keys(n, 16)
    # Half the mass on the task key, half on the learned key (all on the task key where none exists).
    pattern = 0.5 * torch.nn.functional.one_hot(task_keys(n), n).double()
    pattern[valid] += 0.5 * torch.nn.functional.one_hot(keys[valid], n).double()
    pattern[~valid] *= 2
    # The output copies t[15 − i] where it exists, and is right elsewhere.
    copied = torch.where(valid, tokens[0, keys], tokens[0].flip(0))
    logits = torch.nn.functional.one_hot(copied, 10).double().unsqueeze(0) * 5
    stats = length_statistics(logits, pattern.view(1, 1, 1, n, n), tokens, 16)
    right = (copied == tokens[0].flip(0)).double()
    assert stats["accuracy"].item() == pytest.approx(right.mean().item())
    assert stats["correct"][0].tolist() == right.tolist()
    assert stats["sequence_accuracy"].item() == float(right.all())
    assert stats["learned_copy"].item() == 1.0
    assert stats["task_flip_mass"].item() == pytest.approx((4 * 1.0 + 8 * 0.5) / 12)
    assert stats["learned_flip_mass"].item() == 0.5 and stats["task_flip_mass_shared"].item() == 0.5
    assert stats["learned_minus_task"].item() == 0.0
    expected_loss = torch.nn.functional.cross_entropy(logits[0], tokens[0].flip(0)).item()
    assert stats["loss"].item() == pytest.approx(expected_loss)


def test_preference_reads_the_confidence_interval():
    e = lambda lo, hi: Estimate((lo + hi) / 2, lo, hi)  # noqa: E731
    assert preference(e(0.1, 0.3), 20, 16, 16) == "learned"
    assert preference(e(-0.3, -0.1), 20, 16, 16) == "task"
    assert preference(e(-0.1, 0.1), 20, 16, 16) == "unclear"
    assert preference(e(0.1, 0.3), 16, 16, 16) == "same_key"
    assert preference(NAN, 8, 16, 0) == "no_learned_key"


# --- planted patterns -----------------------------------------------------------------------------
def test_planted_task_attention_gives_task_mass_one(tiny_model):
    hook = one_hot_keys(task_keys)
    with tiny_model.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", hook)]):
        result = lg.run(tiny_model, lengths=(8, 12, 16, 20), **SMALL)
    for r in result.lengths:
        h = r.head(0, 0)
        assert (h.task_flip_mass.mean, h.task_flip_mass.ci_low, h.task_flip_mass.ci_high) == (1.0, 1.0, 1.0)
        if r.length in (12, 20):
            assert h.learned_flip_mass.mean == 0.0 and h.task_flip_mass_shared.mean == 1.0
            assert h.learned_minus_task.ci_high == -1.0 and h.preference == "task"
    assert result.at(8).head(0, 0).preference == "no_learned_key"
    assert math.isnan(result.at(8).head(0, 0).learned_flip_mass.mean)
    assert result.at(16).head(0, 0).preference == "same_key"
    assert result.at(12).learned_key_queries == 8 and result.at(20).learned_key_queries == 16


def test_planted_learned_attention_gives_learned_mass_one(tiny_model):
    hook = one_hot_keys(learned_keys_or_zero)
    with tiny_model.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", hook)]):
        result = lg.run(tiny_model, lengths=(12, 20), **SMALL)
    for r in result.lengths:
        h = r.head(0, 0)
        assert (h.learned_flip_mass.mean, h.learned_flip_mass.ci_low) == (1.0, 1.0)
        assert h.task_flip_mass_shared.mean == 0.0 and h.preference == "learned"
    # N′ = 20: queries 16..19 read key 0, which is the task key of query 19 only → 1/20.
    assert result.at(20).head(0, 0).task_flip_mass.mean == pytest.approx(1 / 20)
    assert result.at(12).head(0, 0).task_flip_mass.mean == 0.0


# --- agreement, skipping, determinism -------------------------------------------------------------
def test_agrees_with_a_direct_computation(multi_model):
    result = lg.run(multi_model, lengths=(6, 16, 24), **SMALL)
    assert result.heads == [(layer, head) for layer in range(2) for head in range(4)]
    for n in (6, 16, 24):
        tokens = torch.cat(list(sequences.token_batches(40, n, 10, 0, 1000)))
        with torch.no_grad():
            logits, cache = multi_model.run_with_cache(tokens)
        correct = (logits.argmax(-1) == tokens.flip(-1)).double()
        r = result.at(n)
        assert r.accuracy.mean == pytest.approx(correct.mean().item())
        assert [e.mean for e in r.per_position_accuracy] == pytest.approx(correct.mean(0).tolist())
        assert r.loss.mean == pytest.approx(multi_model.loss_fn(logits.double(), tokens).item(), rel=1e-5)
        pattern = cache["blocks.1.attn.hook_pattern"][:, 2].double()  # layer 1, head 2
        h = r.head(1, 2)
        assert h.mean_pattern == pytest.approx(pattern.mean(0).numpy(), abs=1e-6)
        flip = pattern[:, torch.arange(n), torch.arange(n - 1, -1, -1)]
        assert h.task_flip_mass.mean == pytest.approx(flip.mean().item(), rel=1e-6)
        if n == 24:
            learned = pattern[:, torch.arange(16), torch.arange(15, -1, -1)]
            assert h.learned_flip_mass.mean == pytest.approx(learned.mean().item(), rel=1e-6)
        for e in (r.accuracy, h.task_flip_mass):
            assert e.ci_low <= e.mean <= e.ci_high


def test_a_learned_encoding_skips_lengths_past_its_table_with_a_reason():
    model = make_model(positional_embedding="learned")
    result = lg.run(model, lengths=(20, 8, 16, 32), **SMALL)
    assert [r.length for r in result.lengths] == [8, 16]
    assert [s.length for s in result.skipped] == [20, 32]
    assert "learned positional encoding has 16 rows" in result.skipped[0].reason
    assert result.requested_lengths == [8, 16, 20, 32]
    with pytest.raises(ValueError, match=r"lengths 17, 20: every one exceeds the 16 positions .* learned"):
        lg.run(model, lengths=(20, 17), **SMALL)
    # The sinusoidal table is long (5000 rows): 32 runs; a model without encoding has no limit.
    assert plan_lengths(make_model().cfg, (32, 6000))[1][0].length == 6000
    assert plan_lengths(make_model(positional_embedding="none").cfg, (6000,)) == ([6000], [])


def test_same_seed_same_numbers_and_batch_size_does_not_matter(tiny_model):
    a = lg.run(tiny_model, lengths=(12, 20), **SMALL)
    assert numbers(lg.run(tiny_model, lengths=(12, 20), **SMALL)) == numbers(a)
    b = lg.run(tiny_model, lengths=(12, 20), **{**SMALL, "batch_size": 40})
    for ra, rb in zip(a.lengths, b.lengths):
        assert ra.accuracy == rb.accuracy
        assert ra.head(0, 0).task_flip_mass.mean == pytest.approx(rb.head(0, 0).task_flip_mass.mean)
    c = lg.run(tiny_model, lengths=(12, 20), **{**SMALL, "seed": 1})
    assert c.at(12).loss.mean != a.at(12).loss.mean


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"lengths": ()}, "at least one sequence length"),
        ({"lengths": (8, 0)}, "positive integers"),
        ({"lengths": (8, 12, 8)}, "lists 8 more than once"),
        ({"num_sequences": 0}, "num_sequences must be a positive integer"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"confidence": 1.5}, "confidence must be in"),
    ],
)
def test_bad_arguments_raise_one_clear_error(tiny_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        lg.run(tiny_model, **{**SMALL, **kwargs})


# --- outputs and CLI ------------------------------------------------------------------------------
def test_outputs_and_report(tmp_path):
    result = lg.run(make_model(positional_embedding="learned"), lengths=(8, 12, 16, 24), **SMALL)
    result.provenance = {"checkpoint": "<script>alert(1)</script>", "command": "a & b"}
    out = lg.write_outputs(result, tmp_path / "out", svg=True)
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["schema_version"] == lg.SCHEMA_VERSION and doc["analysis"] == "length_generalisation"
    assert [r["length"] for r in doc["lengths"]] == [8, 12, 16]
    assert doc["skipped"] == [{"length": 24, "reason": result.skipped[0].reason}]
    assert doc["lengths"][0]["heads"][0]["learned_flip_mass"] == {
        "mean": None,
        "ci_low": None,
        "ci_high": None,
    }
    assert set(doc["lengths"][1]["accuracy"]) == {"mean", "ci_low", "ci_high"}
    assert np.array(doc["lengths"][1]["heads"][0]["mean_pattern"]).shape == (12, 12)
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0] == ",".join(lg.CSV_FIELDS)
    assert any(line.startswith("12,model,,,accuracy,,") for line in rows)
    assert rows[-1].startswith("24,model,,,skipped,,,,,") and "learned positional encoding" in rows[-1]
    html = (out / "report.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "Lengths not evaluated" in html and "needs positions up to 23" in html
    figures = sorted(p.name for p in (out / "figures").iterdir() if p.suffix in (".png", ".svg"))
    names = ["accuracy", "attention_targets", "mean_attention"]
    assert figures == sorted(f"{n}.{ext}" for n in names for ext in ("png", "svg"))
    assert html.count("data:image/png;base64,") == len(names)


def test_cli_writes_everything_and_says_once_which_lengths_it_skips(tmp_path, capsys):
    checkpoint = save_model(make_model(positional_embedding="learned"), tmp_path / "model.pt")
    out = tmp_path / "run"
    code = lg_cli.main(
        ["--checkpoint", str(checkpoint), "--out", str(out), "--lengths", "12,16,20,24", *CLI_SMALL]
    )
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"metrics.json", "metrics.csv", "figures", "report.html"}
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        "skipping lengths 20, 24: the model's learned positional encoding has rows for positions 0..15 only, "
        "so it cannot run them"
    ]
    assert "length generalisation" in captured.out and "20  skipped" in captured.out
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["provenance"]["checkpoint_sha256"] and doc["provenance"]["lengths"] == [12, 16, 20, 24]
    assert [s["length"] for s in doc["skipped"]] == [20, 24]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--lengths", "20,24"], "--lengths 20, 24: every one exceeds the 16 positions"),
        (["--lengths", "8,x"], "comma-separated positive integers"),
        (["--lengths", "8,8"], "lists 8 more than once"),
        (["--lengths", "0"], "positive integers"),
        (["--num-sequences", "0"], "expected a positive integer"),
        (["--checkpoint", "/nonexistent/model.pt"], "no such file"),
    ],
)
def test_cli_errors_are_one_line_exit_2_and_leave_nothing(tmp_path, capsys, args, message):
    checkpoint = save_model(make_model(positional_embedding="learned"), tmp_path / "learned.pt")
    argv = ["--checkpoint", str(checkpoint), *CLI_SMALL, *args, "--out", str(tmp_path / "out")]
    assert lg_cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SHA256SUMS", "learned.pt"]  # no output, no temp


# --- a trained model ------------------------------------------------------------------------------
def test_trained_model_reads_its_learned_position_at_other_lengths(trained_fast_run):
    result = lg.run(load_model(trained_fast_run), lengths=(12, 16, 20), num_sequences=200, batch_size=200)
    assert result.at(16).accuracy.mean > 0.99
    for n in (12, 20):
        r = result.at(n)
        assert r.accuracy.ci_high < 0.2  # no generalisation: chance is 0.1
        assert r.learned_copy_rate.ci_low > 0.9  # it outputs t[15 − i] instead
        assert r.head(0, 0).preference == "learned"
        assert r.head(0, 0).learned_flip_mass.mean > 10 * r.head(0, 0).task_flip_mass_shared.mean
