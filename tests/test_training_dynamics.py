"""Training dynamics: crossing maths and restricted/excluded attention on hand-built cases, then a tiny
real training with snapshots through the CLI, checking every output."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_model

from analyses import training_dynamics as td
from analyses.training_dynamics import __main__ as td_cli
from analyses.training_dynamics.attention import (
    count_degenerate,
    exclude_flip,
    flip_window,
    renormalise_rows,
    renormalised_attention,
    restrict_to_flip,
    snapshot_statistics,
)
from analyses.training_dynamics.crossings import (
    UNRESOLVED_SHARE,
    crossing_steps,
    find_crossings,
    shared_interval,
    verdict,
)
from analyses.training_dynamics.figures import FIGURES
from interp.ablation import replace_pattern

ROOT = Path(__file__).resolve().parents[1]
N = 16


# --- crossing maths -------------------------------------------------------------------------------
def test_crossing_of_a_rising_curve_is_interpolated_in_log_step():
    steps = np.array([0, 1, 3, 7])
    star, j, theta = crossing_steps(np.array([0.0, 0.2, 0.6, 1.0]), steps, 0.5)
    # θ = 0.5 lies between 0.2 (step 1) and 0.6 (step 3): t = 0.75, log(1+s) = log 2 + 0.75 log 2.
    assert theta == 0.5 and j == 2
    assert star == pytest.approx(2**1.75 - 1)


def test_crossing_of_a_falling_curve_and_of_a_flat_one():
    steps = np.array([0, 1, 3, 7])
    star, j, theta = crossing_steps(np.array([2.0, 1.5, 0.5, 0.0]), steps, 0.5)
    assert theta == 1.0 and j == 2 and star == pytest.approx(2**1.5 - 1)
    star, j, _ = crossing_steps(np.array([0.3, 0.1, 0.5, 0.3]), steps, 0.5)
    assert math.isnan(star) and j == -1  # no net change: no crossing


def test_crossing_takes_the_first_snapshot_past_the_threshold_and_broadcasts():
    steps = np.array([0, 10, 20, 30])
    curves = np.array([[0.0, 0.9, 0.1, 1.0], [0.0, 0.0, 0.0, 1.0]])
    star, j, _ = crossing_steps(curves, steps, 0.5)
    assert j.tolist() == [1, 3]
    assert star[1] == pytest.approx(np.expm1(np.log(21) + 0.5 * (np.log(31) - np.log(21))))
    # An overshoot counts: the curve first passes θ_1 = 0.3 at step 1, although it ends at 0.3.
    _, j, _ = crossing_steps(np.array([0.1, 0.7, 0.3]), np.array([0, 1, 2]), 1.0)
    assert j == 1
    with pytest.raises(ValueError, match="fraction"):
        crossing_steps(curves, steps, 0.0)
    with pytest.raises(ValueError, match="increasing"):
        crossing_steps(curves, np.array([0, 20, 10, 30]), 0.5)


# --- verdicts: what the snapshots can resolve -----------------------------------------------------
STEPS = [0, 10, 100, 1000]


def compare(first: np.ndarray, second: np.ndarray, noise: float = 0.002, resamples: int = 200):
    """flip_mass (``first``) vs accuracy (``second``) at 50%, with bootstrap-like curves: the point curve
    plus small independent noise (seeded), as evaluation noise would give."""
    rng = np.random.default_rng(0)
    curves = {
        name: (curve, curve + rng.normal(0, noise, (resamples, len(curve))), (None, None))
        for name, curve in (("flip_mass", first), ("accuracy", second))
    }
    _, comparisons = find_crossings(STEPS, curves, [0.5], 0.95, [("flip_mass", "accuracy")])
    return comparisons[0]


def test_crossings_between_the_same_two_snapshots_are_unresolved():
    # Both pass half-way between steps 10 and 100: flip mass is at 0.3 / 0.9 there, accuracy at 0.1 / 0.6.
    c = compare(np.array([0.0, 0.3, 0.9, 1.0]), np.array([0.0, 0.1, 0.6, 1.0]))
    # The interpolation alone puts the flip mass first, with a CI far from 0 (the old verdict: "before") ...
    assert c.difference.ci_high < 0 and c.share_before == 1.0
    # ... but both first pass θ at the snapshot of step 100, so the data cannot order them.
    assert c.same_snapshot_share == 1.0 and c.shared_interval == (10, 100)
    assert c.verdict == "unresolved"
    assert "between steps 10 and 100" in c.verdict_text and "--save-every-log-steps" in c.verdict_text


def test_crossings_at_different_snapshots_are_before_or_after():
    early = np.array([0.0, 0.8, 0.9, 1.0])  # half-way between steps 0 and 10
    late = np.array([0.0, 0.05, 0.2, 1.0])  # half-way between steps 100 and 1000
    c = compare(early, late)
    assert (c.verdict, c.same_snapshot_share, c.shared_interval) == ("before", 0.0, None)
    assert c.verdict_text == "before" and c.difference.ci_high < 0
    c = compare(late, early)
    assert (c.verdict, c.same_snapshot_share, c.shared_interval) == ("after", 0.0, None)
    assert c.difference.ci_low > 0


def test_verdict_rules_and_the_shared_snapshot_pair():
    assert verdict(-5.0, -1.0, UNRESOLVED_SHARE) == "unresolved"
    assert verdict(-5.0, -1.0, UNRESOLVED_SHARE - 0.01) == "before"
    assert verdict(1.0, 5.0, 0.0) == "after" and verdict(-1.0, 5.0, 0.0) == "with"
    assert verdict(math.nan, math.nan, 1.0) == "undetermined"
    # j = index of the first snapshot past θ; −1 = never crosses (not a shared pair).
    share, pair = shared_interval(np.array([2, 2, 3, -1]), np.array([2, 3, 3, -1]), STEPS, (2, 3))
    assert share == 0.5 and pair == (10, 100)  # 2 of 4 resamples share; pair 2 (10→100) and 3 tie: lowest
    share, pair = shared_interval(np.array([3, 3, 1]), np.array([3, 2, 1]), STEPS, (1, 1))
    assert share == pytest.approx(2 / 3) and pair == (0, 10)  # the point curves' own pair wins
    assert shared_interval(np.array([1, 2]), np.array([3, 3]), STEPS, (1, 3)) == (0.0, None)


# --- restricted / excluded attention --------------------------------------------------------------
def planted(n: int = N) -> torch.Tensor:
    """Row i: 0.5 on the flipped key f, 0.25 on its neighbour (f+1, or f−1 at the edge), 0.25 on a far key."""
    pattern = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        f = n - 1 - i
        near = f + 1 if f + 1 < n else f - 1
        far = (f + n // 2) % n
        pattern[i, f], pattern[i, near], pattern[i, far] = 0.5, 0.25, 0.25
    return pattern


def test_restrict_and_exclude_by_hand():
    p = planted()
    restricted, excluded = restrict_to_flip(p, window=1), exclude_flip(p)
    for i in range(N):
        f = N - 1 - i
        near = f + 1 if f + 1 < N else f - 1
        far = (f + N // 2) % N
        expected = torch.zeros(N, dtype=torch.float64)
        expected[f], expected[near] = 2 / 3, 1 / 3
        assert torch.allclose(restricted[i], expected, atol=1e-15)
        expected = torch.zeros(N, dtype=torch.float64)
        expected[near], expected[far] = 0.5, 0.5
        assert torch.allclose(excluded[i], expected, atol=1e-15)
    # window 0 keeps the flipped key alone; a window covering every key changes nothing.
    assert torch.equal(restrict_to_flip(p, window=0), torch.eye(N, dtype=p.dtype).flip(-1))
    assert torch.allclose(restrict_to_flip(p, window=N), p)


def test_a_row_with_no_kept_mass_becomes_uniform_over_the_kept_keys_and_is_counted():
    flip = torch.eye(4).flip(-1)  # every row entirely on its flipped key
    keep = ~flip_window(4, 0)
    out = renormalise_rows(flip, keep)
    assert torch.allclose(out, keep.float() / 3)
    assert count_degenerate(flip, keep) == 4 and count_degenerate(renormalise_rows(flip, keep), keep) == 0
    with pytest.raises(ValueError, match="kept key"):
        renormalise_rows(flip, torch.zeros(4, 4, dtype=torch.bool))


def test_restricted_and_excluded_runs_equal_the_hand_restricted_patterns(tokens):
    model = make_model(d_model=16)
    p = planted().float()

    @torch.no_grad()
    def logits_with(pattern: torch.Tensor, restrict=None) -> torch.Tensor:
        with replace_pattern(model, 0, 0, lambda a: pattern.expand_as(a).clone()):
            if restrict is None:
                return model(tokens)
            with renormalised_attention(model, restrict):
                return model(tokens)

    restricted_by_hand, excluded_by_hand = torch.zeros(N, N), torch.zeros(N, N)
    for i in range(N):
        f = N - 1 - i
        near = f + 1 if f + 1 < N else f - 1
        restricted_by_hand[i, f], restricted_by_hand[i, near] = 2 / 3, 1 / 3
        excluded_by_hand[i, near], excluded_by_hand[i, (f + N // 2) % N] = 0.5, 0.5
    for restrict, by_hand in (
        (flip_window(N, 1), restricted_by_hand),
        (~flip_window(N, 0), excluded_by_hand),
    ):
        expected = logits_with(by_hand)
        assert torch.allclose(logits_with(p, restrict), expected, atol=1e-6)
        # ... and the unrestricted run differs, so the comparison can fail.
        assert (logits_with(p) - expected).abs().max() > 1e-2
        loss = F.cross_entropy(logits_with(p, restrict).transpose(1, 2), tokens.flip(-1))
        assert float(loss) == pytest.approx(float(F.cross_entropy(expected.transpose(1, 2), tokens.flip(-1))))


def test_snapshot_statistics_on_a_planted_perfect_flip(tokens):
    model = make_model(n_layers=2, n_heads=2, d_model=16)
    flip = lambda a, hook: torch.eye(N).flip(-1).expand_as(a).clone()  # noqa: E731
    hooks = [(f"blocks.{layer}.attn.hook_pattern", flip) for layer in range(2)]
    with model.hooks(fwd_hooks=hooks):
        units, mean_pattern, degenerate = snapshot_statistics(model, iter([tokens[:5], tokens[5:]]))
    table = {name: sums.numpy() for name, sums in units.sums.items()}  # 8 sequences: a unit each
    assert table["flip_mass"].shape == (8, 2, 2) and np.all(table["flip_mass"] == 1.0)
    assert np.all(table["argmax_hit_rate"] == 1.0) and np.all(table["neighbour_mass"] == 0.0)
    assert np.allclose(table["entropy"], 0.0)
    assert np.allclose(mean_pattern, np.eye(N)[::-1])
    # Restricting a perfect flip to its window changes nothing: the losses agree to the last bit.
    assert np.array_equal(table["restricted_loss"], table["loss"])
    assert degenerate == {"restricted": 0, "excluded": 8 * 2 * 2 * N}  # every excluded row had no mass
    assert set(table) >= {"zero_pe_accuracy", "zero_pe_loss", "excluded_accuracy"}


def test_no_zero_pe_measures_without_a_positional_encoding(tokens):
    model = make_model(positional_embedding="none")
    units, _, _ = snapshot_statistics(model, iter([tokens]))
    assert "zero_pe_accuracy" not in units.sums and "restricted_loss" in units.sums


# --- a real (tiny) training run with snapshots ----------------------------------------------------
@pytest.fixture(scope="module")
def snapshot_run(tmp_path_factory) -> Path:
    from models.train.cli import train

    out = tmp_path_factory.mktemp("td_run")
    argv = [
        "--preset",
        "fast",
        "--seed",
        "0",
        "--train-size",
        "4000",
        "--val-size",
        "200",
        "--test-size",
        "200",
        "--epochs",
        "2",
        "--save-every-log-steps",
        "4",
        "--out",
        str(out),
        "--no-progress-bar",
    ]
    return train(argv)


def test_find_snapshots_ends_at_the_step_training_ended(snapshot_run):
    snapshots = td.find_snapshots(snapshot_run)
    steps = [s for s, _ in snapshots]
    assert steps[0] == 0 and steps == sorted(steps) and len(steps) >= 5
    assert steps[-1] == json.loads((snapshot_run / "metrics.json").read_text())["steps"]
    assert snapshots[-1][1] == snapshot_run / "snapshots" / f"step_{steps[-1]:06d}.pt"
    assert torch.load(snapshot_run / "model.pt", weights_only=True)["metadata"]["step"] in steps


def test_find_snapshots_adds_model_pt_at_its_recorded_step(tmp_path):
    from models import save_model

    for step in (0, 10):
        save_model(make_model(seed=step), tmp_path / "snapshots" / f"step_{step:06d}.pt")
    found = lambda: [(s, p.name) for s, p in td.find_snapshots(tmp_path)]
    save_model(make_model(seed=4), tmp_path / "model.pt", {"step": 4})
    assert found() == [(0, "step_000000.pt"), (4, "model.pt"), (10, "step_000010.pt")]
    save_model(make_model(seed=4), tmp_path / "model.pt", {"step": 10})  # a snapshot covers it
    assert found() == [(0, "step_000000.pt"), (10, "step_000010.pt")]
    save_model(make_model(seed=4), tmp_path / "model.pt", {"source_checkpoint": "best-step=4-x.ckpt"})
    assert found() == [(0, "step_000000.pt"), (10, "step_000010.pt")]  # no recorded step: left out


def test_cli_writes_every_output(snapshot_run, tmp_path, capsys):
    out = tmp_path / "td"
    argv = [
        "--run",
        str(snapshot_run),
        "--out",
        str(out),
        "--num-sequences",
        "200",
        "--bootstrap-resamples",
        "100",
        "--svg",
    ]
    assert td_cli.main(argv) == 0
    assert "flip_mass − accuracy at 50%" in capsys.readouterr().out
    document = json.loads((out / "metrics.json").read_text())
    assert document["schema_version"] == td.SCHEMA_VERSION and document["analysis"] == "training_dynamics"
    provenance = document["provenance"]
    assert provenance["checkpoint"] == str(snapshot_run.absolute())
    assert len(provenance["snapshots"]) == len(document["snapshots"]) and provenance["command"]
    assert all(len(s["sha256"]) == 64 for s in provenance["snapshots"])
    answer = document["answer"]
    first, second = answer["first_crossing"], answer["second_crossing"]
    assert answer["difference"]["mean"] == pytest.approx(first["step"]["mean"] - second["step"]["mean"])
    lo, hi = answer["difference"]["ci_low"], answer["difference"]["ci_high"]
    if answer["same_snapshot_share"] >= UNRESOLVED_SHARE:
        assert answer["verdict"] == "unresolved"
        a, b = answer["shared_interval"]
        steps = [snap["step"] for snap in document["snapshots"]]
        assert [a, b] in [steps[i : i + 2] for i in range(len(steps) - 1)]  # two consecutive snapshots
        assert f"between steps {a} and {b}" in answer["verdict_text"]
    else:
        assert answer["verdict"] == ("before" if hi < 0 else "after" if lo > 0 else "with")
    snap = document["snapshots"][-1]
    assert snap["accuracy"]["mean"] > 0.9  # the tiny run learns the task
    assert snap["restricted_loss_increase"]["mean"] == pytest.approx(
        snap["restricted_loss"]["mean"] - snap["loss"]["mean"], abs=1e-12
    )
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0] == ",".join(td.CSV_FIELDS) and any("crossing_step:flip_mass" in r for r in rows)
    for name in FIGURES:
        for ext in ("png", "svg"):
            assert (out / "figures" / f"{name}.{ext}").stat().st_size > 1000
    html = (out / "report.html").read_text()
    assert "Does the flip alignment form before" in html and "http://" not in html.replace(
        "http://www.w3.org", ""
    )
    assert html.count("data:image/png;base64,") == len(FIGURES)


def test_same_seed_same_numbers(snapshot_run):
    snapshots = td.find_snapshots(snapshot_run)[:4]
    a = td.run(snapshots, num_sequences=50, bootstrap_resamples=30).to_dict()
    b = td.run(snapshots, num_sequences=50, bootstrap_resamples=30).to_dict()
    assert a == b


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--run", "/nonexistent/run"], "no such folder"),
        (["--run", "{tmp}/model.pt"], "is a file, not a run folder"),
        (["--run", "{tmp}"], "no snapshots/step_*.pt"),
        (["--run", "{tmp}", "--fractions", "1.5"], "(0, 1]"),
        (["--out", "x"], "required"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    (tmp_path / "model.pt").write_bytes(b"not a folder")
    assert td_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and len(err.strip().splitlines()) == 1


def test_a_cli_error_in_a_real_process_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "analyses.training_dynamics", "--run", str(tmp_path / "nothing")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"error: --run {tmp_path / 'nothing'}: no such folder\n"


# --- several runs: the crossing order over seeds ---------------------------------------------------
def _runs_with(differences, verdicts=None):
    """Stand-ins for results: one comparison (argmax_hit_rate − accuracy at 50%) per run."""
    from types import SimpleNamespace

    from analyses.training_dynamics.result import Comparison
    from interp.stats import Estimate

    verdicts = verdicts or ["before" if d < 0 else "after" for d in differences]
    return [
        SimpleNamespace(
            run=f"run{i}",
            comparisons=[
                Comparison("argmax_hit_rate", "accuracy", 0.5, Estimate(d, d - 3, d + 3), 1.0, 0.0, v)
            ],
        )
        for i, (d, v) in enumerate(zip(differences, verdicts))
    ]


def test_across_runs_is_the_median_with_the_order_statistic_interval():
    from analyses.training_dynamics.seeds import across_runs

    (row,) = across_runs(_runs_with([-74, -55, -66, -60, -80]))["comparisons"]
    assert (row["median"], row["ci_low"], row["ci_high"]) == (-66, -80, -55)  # [min, max] of 5 runs
    assert row["achieved_confidence"] == 1 - 2 / 2**5 and "93.8%" in row["reason"]
    assert row["verdicts"]["before"] == 5 and [r["run"] for r in row["per_run"]] == [
        f"run{i}" for i in range(5)
    ]
    # 9 runs: [x_(2), x_(8)] covers the median with 1 − 2 · (1 + 9)/512 = 96.1% ≥ 95%
    (row,) = across_runs(_runs_with(list(range(1, 10))))["comparisons"]
    assert (row["median"], row["ci_low"], row["ci_high"], row["reason"]) == (5, 2, 8, "")
    (row,) = across_runs(_runs_with([-10, 20]))["comparisons"]  # two seeds: no interval, said so
    assert row["median"] == 5 and row["ci_low"] is None and "fewer than 3" in row["reason"]
    with pytest.raises(ValueError, match="at least two runs"):
        across_runs(_runs_with([1]))


def test_cli_over_several_runs_adds_the_median_over_them(snapshot_run, tmp_path, capsys):
    """Three copies of one run: every run gives the same differences, so the median is run 1's
    difference and the order-statistic interval [min, max] collapses onto it (with its 75%)."""
    import shutil

    copies = [shutil.copytree(snapshot_run, tmp_path / f"seed{i}") for i in range(3)]
    out = tmp_path / "td"
    argv = ["--run", *map(str, copies), "--out", str(out), "--num-sequences", "100"]
    assert td_cli.main([*argv, "--bootstrap-resamples", "50"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("run 1 of 3: ") and "over 3 runs: argmax_hit_rate − accuracy at 50%" in printed
    document = json.loads((out / "metrics.json").read_text())
    seeds = document["seeds"]
    assert seeds["n"] == 3 and seeds["runs"] == [str(c.absolute()) for c in copies]
    assert len(document["provenance"]["runs"]) == 3
    for row, c in zip(seeds["comparisons"], document["comparisons"]):
        if c["difference"]["mean"] is None:
            continue
        assert row["median"] == row["ci_low"] == row["ci_high"] == pytest.approx(c["difference"]["mean"])
        assert row["achieved_confidence"] == 0.75 and row["verdicts"][c["verdict"]] == 3
    assert "Over 3 runs" in (out / "report.html").read_text()
    rows = (out / "metrics.csv").read_text().splitlines()
    assert sum("seeds_median_difference:" in r for r in rows) == len(seeds["comparisons"])
