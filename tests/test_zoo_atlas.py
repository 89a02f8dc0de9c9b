"""The zoo atlas: every new metric on hand-built cases with known answers (share intervals with their
exact coverage, head matching, Procrustes, CKA, spill width, the class rule), a run compared with its
own heads permuted, and the whole command on a tiny real zoo."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from analyses import zoo_atlas
from analyses.frame.cli import UserError
from analyses.zoo_atlas import __main__ as atlas_cli
from analyses.zoo_atlas.classes import CLASSES, classify
from analyses.zoo_atlas.compare import compare_pair, served_pattern
from analyses.zoo_atlas.dynamics import crossing_differences, final_flip_mass
from analyses.zoo_atlas.measure import (
    measure_run,
    outlier_reason,
    seed_interval,
    served_by,
    spill_width,
    summarise_cell,
)
from analyses.zoo_atlas.runs import find_runs, recipe_label
from interp.alignment import (
    aligned_similarity,
    linear_cka,
    match_heads,
    pattern_similarity,
    procrustes_similarity,
    raw_cosine,
    raw_similarity,
    row_centred_cosine,
)
from interp.populations import clopper_pearson_interval, t_interval, wilson_interval
from models import load_model, save_model
from models.zoo import cli as zoo_cli
from reports.index import build_index

TINY = "--train-size 960 --val-size 64 --test-size 64 --max-steps 30".split()


# --- shares of runs -------------------------------------------------------------------------------
def test_share_intervals_by_hand():
    # Wilson, 5 of 10 at 95%: centre 0.5, half-width z√(2.5 + z²/4)/(10 + z²)
    z = stats.norm.ppf(0.975)
    half = z * math.sqrt(2.5 + z * z / 4) / (10 + z * z)
    assert wilson_interval(5, 10) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-12)
    # 0 of n: lower bound exactly 0, upper z²/(n + z²) (Wilson) and 1 − (α/2)^{1/n} (Clopper–Pearson)
    assert wilson_interval(0, 10) == pytest.approx((0.0, z * z / (10 + z * z)), abs=1e-12)
    assert clopper_pearson_interval(0, 10) == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)), abs=1e-12)
    assert clopper_pearson_interval(10, 10) == pytest.approx((0.025 ** (1 / 10), 1.0), abs=1e-12)
    # Clopper–Pearson is the beta quantiles
    assert clopper_pearson_interval(3, 12, 0.9) == pytest.approx(
        (stats.beta.ppf(0.05, 3, 10), stats.beta.ppf(0.95, 4, 9)), abs=1e-12
    )
    for k, n in [(0, 1), (1, 1), (0, 5), (5, 5), (3, 7)]:
        for interval in (wilson_interval, clopper_pearson_interval):
            low, high = interval(k, n)
            assert 0 <= low < high <= 1 and low <= k / n <= high  # never zero width, inside [0, 1]
    with pytest.raises(ValueError):
        wilson_interval(6, 5)
    with pytest.raises(TypeError):
        clopper_pearson_interval(1.0, 5)


@pytest.mark.parametrize("n", [3, 5, 10, 40])
def test_share_intervals_cover_exactly(n):
    """Exact coverage P(p ∈ interval(K, n)), K ~ Binomial(n, p), summed over every k: Clopper–Pearson
    never below 95%; Wilson close to 95% on average over p (it may dip near the ends)."""
    ps = np.linspace(0.005, 0.995, 199)
    k = np.arange(n + 1)
    for interval, check in (
        (clopper_pearson_interval, lambda c: c.min() >= 0.95 - 1e-12),
        (wilson_interval, lambda c: c.mean() >= 0.93 and c.min() >= 0.75),
    ):
        bounds = np.array([interval(int(i), n) for i in k])
        inside = (bounds[:, :1] <= ps) & (ps <= bounds[:, 1:])  # [k, p]
        coverage = (stats.binom.pmf(k[:, None], n, ps) * inside).sum(0)
        assert check(coverage), (interval.__name__, n, coverage.min(), coverage.mean())


# --- alignment ------------------------------------------------------------------------------------
def _patterns(heads: int, n: int = 6, seed: int = 0) -> np.ndarray:
    scores = np.random.default_rng(seed).normal(size=(heads, n, n)) * 3
    return torch.from_numpy(scores).softmax(-1).numpy()


def test_heads_permuted_are_matched_exactly():
    a = _patterns(4)
    perm = np.array([2, 0, 3, 1])
    b = a[np.argsort(perm)]  # head i of a is head perm[i] of b
    s = pattern_similarity(a, b)
    assert match_heads(s).tolist() == perm.tolist()
    assert aligned_similarity(s, match_heads(s)) == pytest.approx(1.0, abs=1e-12)
    assert raw_similarity(s) < 0.95
    assert pattern_similarity(a, a).diagonal() == pytest.approx(np.ones(4), abs=1e-12)
    # more heads on one side: the extra head is left unmatched
    assert sorted(match_heads(pattern_similarity(a, a[:3])).tolist()) == [-1, 0, 1, 2]


def test_qk_similarity_ignores_row_constants():
    a = np.random.default_rng(1).normal(size=(2, 5, 5))
    shifted = a + np.random.default_rng(2).normal(size=(2, 5, 1))  # a constant per query row
    assert row_centred_cosine(a, shifted).diagonal() == pytest.approx([1.0, 1.0], abs=1e-12)
    assert row_centred_cosine(a, -a).diagonal() == pytest.approx([-1.0, -1.0], abs=1e-12)


def test_procrustes_finds_the_rotation_and_raw_does_not():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 8))
    rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    y = 2.5 * x @ rotation + 7.0  # rotated, scaled and shifted
    assert procrustes_similarity(x, y) == pytest.approx(1.0, abs=1e-10)
    assert raw_cosine(x, y) < 0.9
    assert raw_cosine(x, 2 * x + 1) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, y) == pytest.approx(1.0, abs=1e-10)
    # a wider representation that holds x in some of its coordinates
    wide = np.hstack([x @ rotation, np.zeros((200, 3))])
    assert procrustes_similarity(x, wide) == pytest.approx(1.0, abs=1e-10)
    independent = rng.normal(size=(200, 8))
    assert procrustes_similarity(x, independent) < 0.5 and linear_cka(x, independent) < 0.2


def test_cka_caveat_a_used_low_variance_direction_can_vanish_unseen():
    """The caveat the atlas states: destroying a low-variance direction leaves CKA near 1."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(500, 4)) * np.array([10.0, 10.0, 10.0, 0.3])
    y = x.copy()
    y[:, 3] = 0.0  # the small direction, which a readout may use, is gone
    assert linear_cka(x, y) > 0.999


# --- per-run scalars and the class rule -----------------------------------------------------------
def test_spill_width_and_served_queries_by_hand():
    n = 6
    pointer = torch.zeros(n, n, dtype=torch.float64)
    pointer[torch.arange(n), torch.arange(n - 1, -1, -1)] = 1.0
    assert float(spill_width(pointer)) == 0.0
    uniform = torch.full((n, n), 1.0 / n, dtype=torch.float64)
    expected = np.mean([sum(abs(k - (n - 1 - i)) for k in range(n)) / n for i in range(n)])
    assert float(spill_width(uniform)) == pytest.approx(expected, abs=1e-12)
    # two heads of one layer: head 1 serves queries 0..3, head 0 serves 4, 5
    flip = np.array([[[0.1, 0.1, 0.1, 0.1, 0.9, 0.8], [0.5, 0.6, 0.7, 0.8, 0.2, 0.2]]])
    server, main, share = served_by(flip)
    assert server.tolist() == [1, 1, 1, 1, 0, 0] and main == (0, 1) and share == pytest.approx(4 / 6)


@pytest.mark.parametrize(
    "scalars, expected",
    [
        ({"accuracy": 0.98, "flip_coverage": 0.9, "served_share": 1.0}, "fails"),
        ({"accuracy": math.nan, "flip_coverage": 0.9, "served_share": 1.0}, "fails"),
        ({"accuracy": 1.0, "flip_coverage": 0.49, "served_share": 1.0}, "no_pointer"),
        ({"accuracy": 1.0, "flip_coverage": 0.6, "served_share": 0.875}, "split_pointer"),
        ({"accuracy": 0.99, "flip_coverage": 0.5, "served_share": 0.9}, "single_pointer"),
        ({"accuracy": 1.0, "flip_coverage": 0.57, "served_share": 1.0}, "single_pointer"),
    ],
)
def test_class_rule(scalars, expected):
    assert classify(scalars) == expected


def test_crossing_differences_reads_training_dynamics_comparisons():
    document = {
        "comparisons": [
            {"first": "argmax_hit_rate", "second": "accuracy", "fraction": 0.5, "verdict": "before",
             "difference": {"mean": -74.0, "ci_low": -76.0, "ci_high": -72.0}},
            {"first": "flip_mass", "second": "accuracy", "fraction": 0.5, "verdict": "after",
             "difference": {"mean": 51.0, "ci_low": 50.0, "ci_high": 53.0}},
            {"first": "flip_mass", "second": "accuracy", "fraction": 0.1, "verdict": "before",
             "difference": {"mean": -9.0, "ci_low": -10.0, "ci_high": -8.0}},
        ]
    }  # fmt: skip
    found = crossing_differences(document)
    document["flip_head"] = {"layer": 0, "head": 1}
    heads = [{"layer": 0, "head": h, "flip_mass": {"mean": 0.1 + h / 2}} for h in (0, 1)]
    document["snapshots"] = [{"step": 10, "heads": []}, {"step": 3900, "heads": heads}]
    assert final_flip_mass(document) == {"step": 3900, "flip_mass": 0.6}
    assert found == {
        "argmax_hit_rate−accuracy": {
            "difference": -74.0,
            "ci_low": -76.0,
            "ci_high": -72.0,
            "verdict": "before",
        },
        "flip_mass−accuracy": {"difference": 51.0, "ci_low": 50.0, "ci_high": 53.0, "verdict": "after"},
    }


def test_the_zoo_takes_the_tutorial_preset_and_trains_snapshot_runs_as_ensembles(tmp_path, capsys):
    argv = ["--out", str(tmp_path / "zoo"), "--preset", "tutorial", "--seeds", "2", "--heads", "1",
            "--layers", "1", "--positional-embeddings", "sinusoidal", "--no-control", "--list",
            "--engine", "sequential", "--", "--save-every-log-steps", "8"]  # fmt: skip
    assert zoo_cli.main(argv) == 0
    listed = capsys.readouterr().out
    assert "tutorial_sinusoidal_L1_H1_seed0" in listed and "tutorial_sinusoidal_L1_H1_seed1" in listed
    assert "ensemble of 2" in listed and "alone" not in listed  # members write their own snapshots


# --- a tiny real zoo ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory) -> Path:
    """2 seeds × heads {1, 2}, d_model 16, 30 steps, trained with snapshots (as ensembles of 2 seeds, each
    member writing its own); the two-head runs' snapshots are removed again."""
    out = tmp_path_factory.mktemp("atlas_zoo")
    argv = ["--out", str(out), "--engine", "sequential", "--seeds", "2", "--heads", "1", "2", "--layers", "1",
            "--positional-embeddings", "sinusoidal", "--d-model", "16", "--no-control",
            "--", *TINY, "--save-every-log-steps", "3"]  # fmt: skip
    assert zoo_cli.main(argv) == 0
    for run in out.glob("*_H2_*"):  # dynamics for one cell only: a child process per run costs seconds
        shutil.rmtree(run / "snapshots")
    return out


def _permuted_copy(run: Path, out: Path, perm: list[int]) -> Path:
    """The run with its heads reordered (head i of the copy is head perm[i] of the run): same function."""
    shutil.copytree(run, out, ignore=shutil.ignore_patterns("snapshots", "checkpoints"))
    model = load_model(run / "model.pt", check_accuracy=False)
    attn = model.blocks[0].attn
    h, dh, d = model.cfg.n_heads, model.cfg.d_head, model.cfg.d_model
    with torch.no_grad():
        attn.qkv_proj.weight.copy_(attn.qkv_proj.weight.view(h, 3 * dh, d)[perm].reshape(3 * d, d))
        attn.qkv_proj.bias.copy_(attn.qkv_proj.bias.view(h, 3 * dh)[perm].reshape(3 * d))
        attn.o_proj.weight.copy_(attn.o_proj.weight.view(d, h, dh)[:, perm].reshape(d, d))
    document = torch.load(run / "model.pt", weights_only=True)
    save_model(model, out / "model.pt", metadata=document.get("metadata", {}))
    return out


def test_a_run_and_its_heads_permuted_match_exactly(tiny_zoo, tmp_path):
    run = tiny_zoo / "fast_sinusoidal_L1_H2_D16_seed0"
    (tmp_path / "zoo").mkdir()
    _permuted_copy(run, tmp_path / "zoo" / "permuted_copy", [1, 0])
    (infos, _), (copies, _) = find_runs([tiny_zoo]), find_runs([tmp_path / "zoo"])
    info = next(i for i in infos if i.name == run.name)
    a, b = (measure_run(i, 300, 0, 300, 32, 0.95) for i in (info, copies[0]))
    # the same function (up to summation order: a digit of 4,800 may flip in a float tie, no more)
    assert a.scalars["accuracy"] == pytest.approx(b.scalars["accuracy"], abs=2 / 4800)
    np.testing.assert_allclose(a.mean_patterns[0, [1, 0]], b.mean_patterns[0], atol=1e-6)
    pair = compare_pair(a, b)
    assert pair.matching == [[1, 0]]
    assert pair.pattern_aligned == pytest.approx(1.0, abs=1e-6) and pair.pattern_raw < pair.pattern_aligned
    assert pair.qk_aligned == pytest.approx(1.0, abs=1e-6) and pair.qk_raw < pair.qk_aligned
    assert pair.ov_aligned == pytest.approx(1.0, abs=1e-6) and pair.ov_raw < 0.99
    assert pair.representation_raw == pytest.approx(1.0, abs=1e-6)
    assert pair.representation_cka == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(served_pattern(a), served_pattern(b), atol=1e-6)


EVIL = "<img src=x onerror=alert(1)>"  # a run folder's name is shown on the page: it must stay text


@pytest.fixture(scope="module")
def atlas(tiny_zoo, tmp_path_factory) -> tuple[Path, str]:
    """``python -m analyses.zoo_atlas`` with --dynamics on the tiny zoo plus a second zoo folder (no
    manifest) holding one copy of seed 0 of the one-head cell under a hostile name."""
    root = tmp_path_factory.mktemp("atlas")
    shutil.copytree(
        tiny_zoo / "fast_sinusoidal_L1_H1_D16_seed0",
        root / "copies" / EVIL,
        ignore=shutil.ignore_patterns("snap*"),
    )
    out = root / "atlas"
    argv = [str(tiny_zoo), str(root / "copies"), "--out", str(out), "--num-sequences", "200",
            "--iia-pairs", "16", "--dynamics", "--dynamics-sequences", "64", "--quiet"]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        assert atlas_cli.main(argv) == 0
    return out, printed.getvalue()


def test_the_atlas_writes_every_output_on_a_tiny_zoo(atlas):
    out, printed = atlas
    assert "class rule" in printed and "fast (max_steps=30, train_size=960) · sinusoidal L1 H2 D16" in printed
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["analysis"] == "zoo_atlas" and len(doc["runs"]) == 5 and len(doc["cells"]) == 2
    for cell in doc["cells"]:
        one_head = " L1 H1 " in cell["name"]
        shares = cell["classes"]
        assert sum(s["k"] for s in shares.values()) == len(cell["runs"]) == (3 if one_head else 2)
        for s in shares.values():
            assert 0 <= s["ci_low"] < s["ci_high"] <= 1 and s["ci_low"] <= s["share"] <= s["ci_high"]
        similarities = cell["similarities"]
        assert similarities["pattern_aligned"]["n"] == (3 if one_head else 1)  # pairs of seeds
        assert similarities["pattern_aligned"]["mean"] >= similarities["pattern_raw"]["mean"] - 1e-12
        assert len(cell["dynamics"]) == (2 if one_head else 0)
        assert (cell["final_flip_mass"] is not None) == one_head
        for pair, v in cell["dynamics"].items():
            assert v["before"]["n"] == 2 and v["difference"]["n"] <= 2, pair
    copy = [
        p for p in doc["pairs"] if EVIL in (p["first"], p["second"]) and "seed0" in p["first"] + p["second"]
    ]
    assert copy[0]["pattern_aligned"] == pytest.approx(1.0, abs=1e-12)  # a run and its copy: identical
    assert copy[0]["representation_procrustes"] == pytest.approx(1.0, abs=1e-9)
    for run in doc["runs"]:
        assert run["mechanism"] in CLASSES and run["recipe"] == "fast (max_steps=30, train_size=960)"
        served = sorted(q for h in run["heads"] for q in h["queries_served"])
        assert served == list(range(16))  # every query is served by exactly one head
        if run["snapshots"]:
            assert set(run["dynamics"]["crossings"]) == {"argmax_hit_rate−accuracy", "flip_mass−accuracy"}
            assert run["dynamics"]["final"]["step"] == 30 and 0 <= run["dynamics"]["final"]["flip_mass"] <= 1
        else:
            assert run["dynamics"] is None and (run["n_heads"] == 2 or run["name"] == EVIL)
        assert run["selector_head"] is not None and 0 <= run["scalars"]["iia_z"] <= 1
    names = ["phase_diagram", "reference_similarity", "examples", "mean_patterns", "alignment_effect"]
    names += ["recipe", "dynamics"]
    assert sorted(p.name for p in (out / "figures").glob("*.png")) == sorted(f"{n}.png" for n in names)
    assert sorted(p.name for p in (out / "dynamics").iterdir()) == [
        "fast_sinusoidal_L1_H1_D16_seed0",
        "fast_sinusoidal_L1_H1_D16_seed1",
    ]  # each run's own training_dynamics output, kept
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0] == ",".join(zoo_atlas.CSV_FIELDS) and any(r.startswith("cell_share,") for r in rows)


def test_the_atlas_page_in_a_browser(atlas, browser):
    """Offline (no request but the file and its data: images), no console error, the hostile run name
    shown as text, one phase-diagram row per cell and every figure decoded."""
    out, _ = atlas
    doc = json.loads((out / "metrics.json").read_text())
    page = browser.new_page()
    errors, requests, dialogs = [], [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    url = (out / "report.html").as_uri()
    page.goto(url)
    assert page.locator("#phase-diagram tr").count() == 1 + len(doc["cells"])
    assert EVIL in page.inner_text("#runs")  # shown as the text it is
    widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert len(widths) == 7 and min(widths) > 100
    assert page.locator("#outliers").count() == 1
    assert not errors and not dialogs and all(r == url or r.startswith("data:") for r in requests)
    # the index lists the atlas as the population's page, and its link opens it
    index = build_index([out], out.parent / "index")
    page.goto(index.as_uri())
    assert "zoo atlas of 5 runs in 2 cells" in page.inner_text("#atlases")
    page.click("#atlases a")
    page.wait_for_url(url)
    assert page.title().startswith("Zoo atlas") and not errors
    page.close()


def test_recipes_are_told_apart_and_differences_have_welch_intervals(tiny_zoo):
    infos, _ = find_runs([tiny_zoo])
    config = json.loads((infos[0].folder / "config.json").read_text())
    assert recipe_label(config) == "fast (max_steps=30, train_size=960)"
    config["training"]["lr"] = 1e-3
    assert recipe_label(config) == "fast (lr=0.001, max_steps=30, train_size=960)"


def test_outliers_and_cell_shares_on_synthetic_runs(tiny_zoo):
    infos, _ = find_runs([tiny_zoo])
    base = measure_run(infos[0], 100, 0, 100, 0, 0.95)
    runs = []
    cases = [("single_pointer", 0.70), ("single_pointer", 0.71), ("single_pointer", 0.72)]
    for mechanism, flip in [*cases, ("single_pointer", 0.71), ("split_pointer", 0.30)]:
        r = base.__class__(
            **{
                **base.__dict__,
                "mechanism": mechanism,
                "scalars": {**base.scalars, "flip_mass": flip, "reference_similarity": 0.9},
            }
        )
        runs.append(r)
    reasons = [outlier_reason(r, runs) for r in runs]
    assert reasons[:4] == [None] * 4
    assert reasons[4].startswith("split_pointer while 4/5 seeds are single_pointer")
    # a flip mass far from the others' stands out among eight seeds, not among five
    flips = [0.70, 0.71, 0.72, 0.71, 0.70, 0.72, 0.71, 0.90]
    eight = [
        base.__class__(**{**runs[0].__dict__, "scalars": {**runs[0].scalars, "flip_mass": f}}) for f in flips
    ]
    assert [outlier_reason(r, eight) is None for r in eight] == [True] * 7 + [False]
    assert "flip_mass 0.900 against the cell's median 0.710" in outlier_reason(eight[-1], eight)
    assert outlier_reason(eight[-1], eight[3:]) is None
    cell = summarise_cell(runs, [], 0.95, "wilson")
    counts = {k: s.k for k, s in cell.classes.items()}
    assert counts == {"single_pointer": 4, "split_pointer": 1, "no_pointer": 0, "fails": 0}
    assert cell.classes["fails"].ci_high > 0  # 0 of 5 is not "never"
    assert cell.stats["flip_mass"].mean == pytest.approx(np.mean([0.70, 0.71, 0.72, 0.71, 0.30]))
    # every seed gave 0.9: no interval (a zero-width one would claim what five seeds cannot show)
    same = cell.stats["reference_similarity"]
    assert same.all_equal and same.mean == pytest.approx(0.9) and math.isnan(same.ci_low) and same.n == 5


def test_seed_intervals_stay_inside_the_range_of_their_quantity():
    values = [0.99, 1.0, 0.97]
    mean, low, high, _ = t_interval(np.array(values), 0.95)
    assert high > 1  # the plain t-interval leaves [0, 1] ...
    clipped = seed_interval(values, 0.95, (0.0, 1.0))
    assert (clipped.mean, clipped.ci_low, clipped.ci_high) == (mean, low, 1.0)  # ... the atlas' does not
    one = seed_interval([0.5], 0.95, (0.0, 1.0))
    assert one.n == 1 and math.isnan(one.ci_low) and math.isnan(one.ci_high) and not one.all_equal


def test_runs_of_the_same_name_in_two_zoos_are_qualified_by_their_zoo(tiny_zoo, tmp_path):
    run = "fast_sinusoidal_L1_H1_D16_seed0"
    shutil.copytree(tiny_zoo / run, tmp_path / "other" / run, ignore=shutil.ignore_patterns("snap*"))
    infos, _ = find_runs([tiny_zoo, tmp_path / "other"])
    names = [i.name for i in infos]
    assert (
        f"{tiny_zoo.name}/{run}" in names and f"other/{run}" in names and len(set(names)) == len(names) == 5
    )
    with pytest.raises(UserError, match="given twice"):
        find_runs([tiny_zoo, tiny_zoo])


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert atlas_cli.main([str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no such folder" in err and "Traceback" not in err and not (tmp_path / "o").exists()
    assert atlas_cli.main([str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no finished run" in capsys.readouterr().err
