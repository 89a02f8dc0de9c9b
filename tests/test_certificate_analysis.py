"""``python -m analyses.certificate`` end to end on tiny models whose C^N inputs can all be enumerated
here, independently of the engine: the bounds, the census, the re-checked examples, metrics.json's
fields and types, the refusal of 2-layer models, the report section (escaped), the summary row, and
``zoo_summary --certify``."""

from __future__ import annotations

import csv
import itertools
import json
import math
from fractions import Fraction
from pathlib import Path

import markupsafe
import numpy as np
import pytest
import torch
from conftest import make_model

from analyses import certificate
from analyses.certificate import __main__ as cli
from analyses.certificate.figures import cell_matrix, make_figures
from analyses.certificate.measure import load_tolerance, recheck_examples
from analyses.certificate.result import REGIMES, CertificateResult, describe_region, theorem_sentence
from analyses.frame import numbers
from analyses.frame.cli import UserError
from models import save_model

C, N = 3, 5  # 243 inputs, 1,215 (input, position) pairs


def exhaustive(model) -> tuple[np.ndarray, np.ndarray]:
    """(every input [C^N, N], right [C^N, N]) by the model's forward, written here without the engine:
    position i is right iff the logit of t[N−1−i] is strictly above every other logit."""
    tokens = torch.tensor(list(itertools.product(range(C), repeat=N)), dtype=torch.int64)
    with torch.inference_mode():
        logits = model(tokens).float()
    target = tokens.flip(-1)
    right = torch.zeros(tokens.shape, dtype=torch.bool)
    for b in range(len(tokens)):
        for i in range(N):
            row = logits[b, i]
            others = torch.cat([row[: target[b, i]], row[target[b, i] + 1 :]])
            right[b, i] = bool((row[target[b, i]] > others).all())
    return tokens.numpy(), right.numpy()


def census_cover(doc: dict, tokens: np.ndarray, right: np.ndarray) -> np.ndarray:
    """[C^N, N] how many census regions hold each (input, position) pair; each region's count is its
    exact size and every pair it holds is wrong by this test's forward."""
    covered = np.zeros_like(right, dtype=int)
    for r in doc["census"]["regions"]:
        inside = np.ones(len(tokens), dtype=bool)
        for pos, digits in r["constraints"].items():
            inside &= np.isin(tokens[:, int(pos)], digits)
        assert inside.sum() == r["count"]
        assert not right[inside, r["position"]].any()
        covered[inside, r["position"]] += 1
        assert r["description"].startswith(f"output {r['position']} wrong when")
    return covered


def check_examples(doc: dict, tokens: np.ndarray, right: np.ndarray) -> None:
    """Each listed example is well formed and wrong by this test's own forward."""
    assert 0 < len(doc["wrong_examples"]) <= 20
    index = {tuple(t): k for k, t in enumerate(tokens.tolist())}
    for e in doc["wrong_examples"]:
        assert set(e) == {"tokens", "position"} and len(e["tokens"]) == N
        assert all(isinstance(t, int) for t in e["tokens"]) and isinstance(e["position"], int)
        assert not right[index[tuple(e["tokens"])], e["position"]]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, object]:
    """A random 1-layer model with C = 3, N = 5 (many inputs wrong, some right), saved."""
    model = make_model(seed=3, d_vocab=C, n_ctx=N, d_model=8)
    path = save_model(model, tmp_path_factory.mktemp("small") / "model.pt")
    return path, model


@pytest.fixture(scope="module")
def auto_run(small, tmp_path_factory) -> Path:
    path, _ = small
    out = tmp_path_factory.mktemp("auto") / "cert"
    assert cli.main(["--checkpoint", str(path), "--out", str(out), "--quiet"]) == 0
    return out


def test_auto_enumerates_and_its_bounds_are_the_exact_counts(small, auto_run):
    _, model = small
    doc = json.loads((auto_run / "metrics.json").read_text())
    tokens, right = exhaustive(model)
    assert 0 < right.sum() < right.size  # the case is not degenerate: some pairs right, some wrong
    assert doc["method"] == "enumeration" and doc["settings"]["method_requested"] == "auto"
    assert doc["inputs"] == C**N and isinstance(doc["inputs"], int) and doc["pairs"] == N * C**N
    # the exact fractions, each between its float bounds (rounded outward: at most one ulp apart)
    for key, exact in (
        ("per_digit", Fraction(int(right.sum()), right.size)),
        ("sequence", Fraction(int(right.all(1).sum()), len(right))),
    ):
        low, high = doc[key]["lower"], doc[key]["upper"]
        assert Fraction(low) <= exact <= Fraction(high) and high <= math.nextafter(low, 1.0)
    assert doc["resolved"] and doc["sequences_right"]["lower"] == int(right.all(1).sum())
    wrong = int((~right).sum())
    assert doc["census"]["wrong_pairs"] == {"lower": wrong, "upper": wrong}
    # the census is exact: its regions hold exactly the wrong pairs, each counted once
    assert doc["census"]["complete"] and doc["census"]["listed_count"] == wrong
    assert (census_cover(doc, tokens, right) == (~right)).all()
    check_examples(doc, tokens, right)


def test_metrics_json_fields_types_and_the_regime(auto_run):
    doc = json.loads((auto_run / "metrics.json").read_text())
    assert doc["schema_version"] == certificate.SCHEMA_VERSION and doc["analysis"] == "certificate"
    assert doc["provenance"]["checkpoint_sha256"] and "analyses.certificate" in doc["provenance"]["command"]
    for key in ("per_digit", "sequence"):
        assert set(doc[key]) == {"lower", "upper"} and all(isinstance(v, float) for v in doc[key].values())
        assert 0.0 <= doc[key]["lower"] <= doc[key]["upper"] <= 1.0
    comp = doc["compute"]
    assert comp["seconds"] > 0 and comp["boxes"] == C**N  # enumeration evaluates every input once
    assert comp["flops"] > 0 and comp["brute_force_flops"] > 0
    assert isinstance(doc["arithmetic"], str) and doc["arithmetic"]
    assert doc["regime"] == REGIMES["enumeration"]
    assert "argmax ties counted as wrong" in doc["verdict"]["bounds"]
    assert doc["verdict"]["bounds"].startswith("Certified over all C^N inputs")
    assert not doc["theorem"]["computed"] and "enumeration" in doc["verdict"]["theorem"]
    rows = list(csv.DictReader((auto_run / "metrics.csv").open()))
    model_rows = {r["metric"]: r["value"] for r in rows if r["scope"] == "model"}
    assert float(model_rows["per_digit_lower"]) == doc["per_digit"]["lower"]
    assert int(model_rows["inputs"]) == C**N
    cell_rows = [r for r in rows if r["scope"] == "cell" and r["metric"] == "wrong"]
    assert len(cell_rows) == N * C * C - (C * C - C)  # the middle query of an odd N has a = b only
    assert sum(int(r["value"]) for r in cell_rows) == doc["census"]["wrong_pairs"]["lower"]
    html = (auto_run / "report.html").read_text()
    assert "Certificate over all inputs" in html and "argmax ties counted as wrong" in html
    assert (auto_run / "figures" / "cells.png").is_file()


def test_proof_bounds_contain_the_enumerated_value(small, tmp_path):
    path, model = small
    out = tmp_path / "proof"
    assert cli.main(["--checkpoint", str(path), "--out", str(out), "--quiet", "--method", "proof"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    tokens, right = exhaustive(model)
    assert doc["method"] == "proof"
    assert doc["per_digit"]["lower"] <= right.sum() / right.size <= doc["per_digit"]["upper"]
    assert doc["sequence"]["lower"] <= right.all(1).mean() <= doc["sequence"]["upper"]
    wrong = int((~right).sum())
    assert doc["census"]["wrong_pairs"]["lower"] <= wrong <= doc["census"]["wrong_pairs"]["upper"]
    assert doc["regime"] == REGIMES["proof"]
    # every region is proven wrong; where the bounds meet, the census is the enumerated wrong set
    covered = census_cover(doc, tokens, right)
    assert covered.max() <= 1 and doc["census"]["listed_count"] == covered.sum()
    assert doc["resolved"], "this small model's proof resolves every pair within the budget"
    assert doc["census"]["complete"] and (covered == (~right)).all()
    check_examples(doc, tokens, right)
    assert doc["theorem"]["computed"] and (out / "figures" / "theorem.png").is_file()


def test_a_box_budget_is_deterministic_sound_and_says_it_stopped_the_proof(small, tmp_path):
    path, model = small
    tokens, right = exhaustive(model)
    docs = []
    for k in range(2):
        out = tmp_path / f"boxes{k}"
        argv = ["--checkpoint", str(path), "--out", str(out), "--quiet", "--method", "proof"]
        assert cli.main([*argv, "--budget-boxes", "30", "--no-theorems"]) == 0
        docs.append(json.loads((out / "metrics.json").read_text()))
    doc = docs[0]
    assert doc["settings"]["max_boxes"] == 30 and doc["settings"]["budget_seconds"] is None
    assert doc["compute"]["boxes"] == 30 and doc["compute"]["stopped_by"] == "max_boxes"
    assert doc["compute"]["budget"] == "budget: 30 boxes; stopped by the box budget"
    assert not doc["resolved"] and "(budget: 30 boxes; stopped by the box budget)" in doc["verdict"]["bounds"]
    # the same model and box budget: the same bounds and census, whatever the load
    for key in ("per_digit", "sequence", "census"):
        assert docs[1][key] == doc[key]
    assert doc["per_digit"]["lower"] <= right.sum() / right.size <= doc["per_digit"]["upper"]
    covered = census_cover(doc, tokens, right)
    assert covered.max() <= 1
    html = (tmp_path / "boxes0" / "report.html").read_text()
    assert "budget: 30 boxes; stopped by the box budget" in html


def test_a_two_layer_model_is_refused_in_one_line(tmp_path, capsys):
    path = save_model(make_model(seed=1, n_layers=2, d_vocab=C, n_ctx=N, d_model=8), tmp_path / "two.pt")
    out = tmp_path / "cert"
    assert cli.main(["--checkpoint", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot certify {path}: the certificate covers 1-layer models only")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_flags_are_checked_before_any_work(small, tmp_path, capsys):
    path, _ = small
    for argv in (
        ["--budget-seconds", "0"],
        ["--budget-seconds", "nan"],
        ["--method", "enumeration"],
        ["--budget-boxes", "0"],
        ["--budget-boxes", "2.5"],
    ):
        assert cli.main(["--checkpoint", str(path), "--out", str(tmp_path / "x"), *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("\n") == 1
    assert not (tmp_path / "x").exists()
    assert (
        cli.main(["--checkpoint", str(path), "--out", str(tmp_path / "x"), "--tolerance", str(tmp_path)]) == 2
    )
    assert capsys.readouterr().err.startswith(f"error: --tolerance {tmp_path}: cannot read")


def test_suspects_put_their_regions_in_the_census_whatever_the_budget(small, tmp_path, capsys):
    """--suspect (typed) and --tolerance (its adversary's wrong inputs): the proof dives on them first,
    so inputs a box budget leaves out of the census breadth first are in it (each region wrong by this
    test's own forward, the bounds still around the enumerated accuracy); bad input is one line and
    exit 2."""
    path, model = small
    tokens, right = exhaustive(model)

    def certify(name: str, *extra: str) -> dict:
        out = tmp_path / name
        argv = ["--checkpoint", str(path), "--out", str(out), "--quiet", "--method", "proof", "--no-theorems"]
        assert cli.main([*argv, "--budget-boxes", "10", *extra]) == 0
        return json.loads((out / "metrics.json").read_text())

    plain = certify("plain")
    left_out = np.flatnonzero(((~right) & (census_cover(plain, tokens, right) == 0)).any(1))
    assert len(left_out) >= 2, "the budget should leave wrong inputs out of the census"
    typed, found = (tokens[k].tolist() for k in left_out[[0, -1]])
    worst = {"model_wrong": True, "digits": " ".join(map(str, found))}
    (tmp_path / "tol").mkdir()
    (tmp_path / "tol" / "metrics.json").write_text(
        json.dumps(
            {
                "analysis": "tolerance",
                "thresholds": [],
                # the vote search's input has another length: it does not apply here, so it is left out
                "worst_case": {
                    "logit_margin": worst,
                    "vote_margin": {"model_wrong": True, "digits": "0 1 2"},
                },
            }
        )
    )
    doc = certify("suspects", "--suspect", "".join(map(str, typed)), "--tolerance", str(tmp_path / "tol"))
    assert doc["settings"]["suspects"] == [typed, found] and plain["settings"]["suspects"] == []
    covered = census_cover(doc, tokens, right)
    assert covered.max() <= 1
    for suspect in (typed, found):
        assert covered[tokens.tolist().index(suspect)].any(), f"no census region holds {suspect}"
    assert doc["per_digit"]["lower"] <= right.sum() / right.size <= doc["per_digit"]["upper"]
    for bad, problem in (
        ("0120", "4 digits, the certificate's inputs have 5"),
        ("01x20", "not a sequence of digits"),
        ("01230", "digit 3 is not below C = 3"),
    ):
        assert cli.main(["--checkpoint", str(path), "--out", str(tmp_path / "x"), "--suspect", bad]) == 2
        err = capsys.readouterr().err
        assert err == f"error: --suspect {bad!r}: {problem}\n"
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match=r"suspect \[0, 1\]: not 5 digits in \[0, 3\)"):
        certificate.run(model, suspects=[[0, 1]], max_boxes=1, theorems=False)


def test_recheck_keeps_only_inputs_the_forward_gets_wrong(small):
    _, model = small
    tokens, right = exhaustive(model)
    r, p = map(int, np.argwhere(right)[0])
    w, q = map(int, np.argwhere(~right)[0])
    examples = [{"tokens": tokens[r].tolist(), "position": p}, {"tokens": tokens[w].tolist(), "position": q}]
    confirmed, unconfirmed = recheck_examples(model, examples)
    assert confirmed == [examples[1]] and unconfirmed == 1


def test_tolerance_thresholds_are_read_from_its_metrics_json(tmp_path):
    threshold = {"mean": 0.31, "ci_low": 0.3, "ci_high": 0.33, "below_range": False, "above_range": False}
    doc = {
        "analysis": "tolerance",
        "thresholds": [
            {
                "family": "temperature",
                "level": 0.99,
                "statistic": "accuracy",
                "status": "crossed",
                "flip_mass": threshold,
            },
            {
                "family": "temperature",
                "level": 0.99,
                "statistic": "sequence_accuracy",
                "status": "crossed",
                "flip_mass": threshold,
            },
        ],
    }
    (tmp_path / "metrics.json").write_text(json.dumps(doc))
    thresholds, source = load_tolerance(tmp_path)
    assert thresholds == [
        {"family": "temperature", "level": 0.99, "flip_mass": threshold, "status": "crossed"}
    ]
    assert source == str((tmp_path / "metrics.json").absolute())
    (tmp_path / "metrics.json").write_text(json.dumps({"analysis": "flip_alignment"}))
    with pytest.raises(UserError, match="not the metrics.json of python -m analyses.tolerance"):
        load_tolerance(tmp_path / "metrics.json")


def test_bounds_are_printed_on_their_safe_side():
    assert numbers.bound(0.9999999, "lower", 6) == "0.999999"  # rounding to nearest would claim 1.000000
    assert numbers.bound(0.9999991, "upper", 6) == "1.000000"
    assert numbers.bound(0.1234567, "lower", 3) == "0.123" and numbers.bound(0.1234567, "upper", 3) == "0.124"
    assert numbers.bound(0.5, "upper", 3) == "0.500" and numbers.bound(0.5, "lower", 3) == "0.500"
    assert numbers.bound(0.1, "upper", 1) == "0.2"  # the float 0.1 is above 1/10: its ceiling is 0.2
    assert numbers.bounds(0.25, 0.25) == "0.25 (exact)"
    assert numbers.bounds(0.12345, 0.5, 2) == "[0.12, 0.50]"
    assert numbers.bound(None, "lower") == "n/a"
    assert numbers.share(998, 1000, "lower", 3) == numbers.share(998, 1000, "upper", 3) == "0.998"
    assert numbers.share(998, 1000, "lower", 2) == "0.99" and numbers.share(998, 1000, "upper", 2) == "1.00"
    assert numbers.share(1, 3, "upper", 4) == "0.3334" and numbers.share(0, 7, "upper", 0) == "0"
    assert numbers.bound(0.0, "lower", 9) == "0.000000000" and numbers.bound(1.0, "upper", 3) == "1.000"


def test_a_region_reads_as_a_sentence():
    region = {"position": 3, "constraints": {"12": [3, 7], "3": [7]}, "count": 2 * 10**13}
    assert describe_region(region, 16) == "output 3 wrong when t[3] = 7, t[12] ∈ {3, 7}; 14 free positions"


def synthetic(cells: list[dict], tolerance=None) -> CertificateResult:
    """A proof certificate document with hand-made theorem columns, N = 2, C = 2."""
    cert = {
        "method": "proof", "seq_len": 2, "num_categories": 2, "inputs": 4, "pairs": 8,
        "per_digit": {"lower": 0.5, "upper": 0.75}, "sequence": {"lower": 0.25, "upper": 0.5},
        "per_digit_lower": 0.5, "per_digit_upper": 0.75, "sequence_lower": 0.25, "sequence_upper": 0.5,
        "sequence_right_lower": 1, "sequence_right_upper": 2,
        "wrong_count_lower": 2, "wrong_count_upper": 4,
        "resolved": False, "wrong_regions": [], "regions_complete": True, "wrong_examples": [],
        "cells": cells,
        "unsupported": None, "seconds": 1.0, "boxes": 10, "flops": 100.0, "brute_force_flops": 400.0,
        "speedup": 4.0, "arithmetic": "float64 with outward rounding", "details": {},
    }  # fmt: skip
    return CertificateResult(cert, "proof", 5.0, [], 0, tolerance, "t.json" if tolerance else None, {})


def cell(i, a, b, w, m, right=1, wrong=0, inert=None):
    return {
        "position": i, "own": a, "flipped": b, "inputs": 1, "right": right, "wrong": wrong,
        "unresolved": 1 - right - wrong,
        "status": "right", "guarantee_weight": w, "min_weight": m, "inert_positions": inert,
    }  # fmt: skip


def test_the_theorem_block_counts_cells_whose_weight_reaches_the_guarantee(tmp_path):
    cells = [
        cell(0, 0, 0, 0.4, 0.6, inert=[0]),  # proven: 0.6 ≥ 0.4; key 0 is offset 0 − (2 − 1 − 0) = −1
        cell(0, 0, 1, 0.7, 0.5),  # weight below the guarantee
        cell(0, 1, 0, None, 0.9, right=0, wrong=0),  # no guarantee at all
        cell(0, 1, 1, 0.55, 0.55),  # exactly at the guarantee: proven
        cell(1, 0, 0, 0.2, 0.3),
        cell(1, 0, 1, 0.2, 0.1),
        cell(1, 1, 0, 0.9, 0.95),
        cell(1, 1, 1, 0.3, 0.35),
    ]
    tolerance = [
        {"family": "temperature", "level": 0.99, "status": "crossed",
         "flip_mass": {"mean": 0.35, "ci_low": 0.3, "ci_high": 0.4,
                       "below_range": False, "above_range": False}},
    ]  # fmt: skip
    result = synthetic(cells, tolerance)
    theorem = result.theorem()
    assert theorem["computed"] and theorem["cells"] == 8 and theorem["proven_cells"] == 5
    assert theorem["cells_without_guarantee"] == 1
    assert theorem["largest_guarantee"]["guarantee_weight"] == 0.9 and theorem["smallest_min_weight"] == 0.1
    assert theorem["inert_offsets_somewhere"] == [-1]
    assert theorem["inert_offsets_everywhere"] == []  # N = 2: no key besides i and N−1−i
    sentence = theorem_sentence(theorem)
    assert "in 5 of 8" in sentence and "not a theorem there" in sentence and REGIMES["proof"] in sentence
    matrix = cell_matrix(cells, 2, 2, "guarantee_weight")
    assert matrix[0, 1 * 2 + 0] == 0.7 and np.isnan(matrix[0, 0 * 2 + 1])  # [i, b·C + a]
    captions = make_figures(result, tmp_path)
    assert set(captions) == {"cells", "theorem"} and (tmp_path / "theorem.png").is_file()
    assert "tolerance's sampled 99% thresholds" in captions["theorem"]
    doc = result.to_dict()
    assert (
        "(budget: 5 s)" in doc["verdict"]["bounds"]
        and "[0.500000000, 0.750000000]" in doc["verdict"]["bounds"]
    )


def test_the_report_section_and_summary_row_escape_what_they_show(auto_run):
    from analyses.frame.html import read_captions, render_section
    from reports.full_report import certificate_row
    from reports.summary import key_metrics

    doc = json.loads((auto_run / "metrics.json").read_text())
    doc["arithmetic"] = "<script>alert(1)</script>"
    doc["census"]["regions"][0]["description"] = "<b>region</b>"
    html = str(
        render_section(
            doc, auto_run / "figures", read_captions(auto_run / "figures"), id_prefix="certificate--"
        )
    )
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert" not in html
    assert "&lt;b&gt;region&lt;/b&gt;" in html
    metrics = key_metrics({"certificate": doc})["certificate"]
    assert metrics["per_digit"] == doc["per_digit"] and metrics["method"] == "enumeration"
    row = certificate_row(metrics)
    right = doc["pairs"] - doc["census"]["wrong_pairs"]["lower"]
    assert row["value"] == f"exactly {right:,}/{doc['pairs']:,} pairs" and row["href"] == "certificate"
    assert certificate_row(None)["estimate"] is None
    open_ = certificate_row(
        {**metrics, "resolved": False, "per_digit": {"lower": 0.1234567, "upper": 0.9999991}}
    )
    assert open_["value"] == "bounds [0.123456, 1.000000]" and "left undecided" in open_["text"]


def test_reports_build_runs_the_certificate_with_its_budget(small, tmp_path):
    from reports import pipeline
    from reports.build import build_report

    path, _ = small
    page = build_report(path, tmp_path / "report", only=["certificate"], certificate_budget=7.5)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    cert = summary["metrics"]["certificate"]
    assert cert["budget_seconds"] == 7.5 and cert["method"] == "enumeration"
    assert cert["max_boxes"] == pipeline.CERTIFICATE_BOXES  # the default box budget stays with seconds
    doc = json.loads((tmp_path / "report" / "certificate" / "metrics.json").read_text())
    prov = doc["provenance"]
    assert doc["theorem"]["reason"].startswith("the theorem columns were left out")
    assert prov["run_kwargs"] == {
        "method": "auto",
        "budget_seconds": 7.5,
        "max_boxes": pipeline.CERTIFICATE_BOXES,
        "theorems": False,
    }
    html = page.read_text()
    assert "Certified accuracy over all inputs (per digit)" in html and 'id="certificate"' in html
    # the same budget again reuses the folder; another budget recomputes it
    logs: list[str] = []
    build_report(path, tmp_path / "report", only=["certificate"], certificate_budget=7.5, log=logs.append)
    assert any("certificate: reusing" in line for line in logs)
    logs.clear()
    build_report(path, tmp_path / "report", only=["certificate"], certificate_budget=8.0, log=logs.append)
    assert not any("reusing" in line for line in logs)


def test_a_two_layer_model_gets_a_not_applicable_section():
    from reports import pipeline

    cfg = make_model(seed=1, n_layers=2, d_vocab=C, n_ctx=N, d_model=8).cfg
    reason = pipeline.ANALYSES["certificate"].not_applicable(cfg)
    assert reason.startswith("the certificate covers 1-layer models only; this model has 2 layers")
    assert pipeline.ANALYSES["certificate"].not_applicable(make_model(d_vocab=C, n_ctx=N).cfg) is None


def test_zoo_summary_certify_adds_the_certified_bounds_per_run_and_over_seeds(tmp_path, capsys):
    from analyses.zoo_summary import __main__ as zs_cli
    from models import load_model
    from models.zoo import cli as zoo

    tiny = "--train-size 256 --val-size 32 --test-size 32 --max-steps 10".split()
    spec = zoo.ZooSpec(
        seeds=2,
        heads=(1,),
        layers=(1, 2),
        positional_embeddings=("sinusoidal",),
        d_models=(8,),
        seq_lens=(N,),
        num_categories=(C,),
        train_args=tiny,
        accelerator="cpu",
        devices="1",
    )
    zoo_dir = tmp_path / "zoo"
    records = zoo.run_zoo(zoo_dir, spec, engine=zoo.ZooEngine(engine="sequential", ensemble=False))
    assert {r["status"] for r in records} == {"trained"}
    out = tmp_path / "summary"
    base = [str(zoo_dir), "--out", str(out), "--engine", "sequential", "--num-sequences", "64", "--quiet"]
    assert zs_cli.main([*base, "--certify-budget", "5"]) == 2
    assert (
        capsys.readouterr().err.strip() == "error: --certify-budget is the budget of --certify: add --certify"
    )
    assert zs_cli.main([*base, "--certify-boxes", "5"]) == 2
    assert (
        capsys.readouterr().err.strip() == "error: --certify-boxes is the budget of --certify: add --certify"
    )
    assert zs_cli.main([*base, "--certify", "--certify-budget", "5", "--certify-boxes", "400"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["provenance"]["certify_budget"] == 5.0 and doc["certified"]
    two_layers = [r for r in doc["runs"] if r["architecture"].startswith("sinusoidal L2")]
    assert len(two_layers) == 2
    for run in two_layers:  # said, not certified
        assert run["certified"]["certified_lower"] is None
        assert run["certified"]["reason"].startswith("the certificate covers 1-layer models only")
    for run in (r for r in doc["runs"] if r not in two_layers):
        model = load_model(zoo_dir / run["name"] / "model.pt")
        _, right = exhaustive(model)
        c = run["certified"]
        assert c["method"] == "enumeration" and c["budget_seconds"] == 5.0 and c["max_boxes"] == 400
        margin = c["tolerance_margin"]
        assert margin["family"] == "uniform" and margin["level"] == 0.99
        assert margin["status"] in ("crossed", "never_crossed", "starts_below")
        assert (margin["mean"] is None) == (margin["status"] != "crossed")
        exact = Fraction(int(right.sum()), right.size)
        assert Fraction(c["certified_lower"]) <= exact <= Fraction(c["certified_upper"])
        assert c["certified_upper"] <= math.nextafter(c["certified_lower"], 1.0)
    grid = next(a for a in doc["architectures"] if a["name"].startswith("sinusoidal L1"))
    values = [r["certified"]["certified_lower"] for r in doc["runs"] if r["architecture"] == grid["name"]]
    stats = grid["stats"]["certified_lower"]
    assert stats["n"] == 2 and stats["values"] == values and stats["mean"] == pytest.approx(np.mean(values))
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert {r["run"] for r in rows if r["metric"] == "certified_upper" and r["scope"] == "run"} == {
        r["name"] for r in doc["runs"]
    }
    html = (out / "report.html").read_text()
    assert "certified per-digit accuracy (all inputs)" in html
    association = doc["certified_association"]
    assert association["budget"] == "400 boxes and 5 s"
    assert {(r["scalar"], r["outcome"]) for r in association["rows"]} == {
        (x, y)
        for x in ("flip_mass", "neighbour_mass", "tolerance_margin")
        for y in ("certified_lower", "certified_gap")
    }
    certified = sum(r["certified"]["certified_lower"] is not None for r in doc["runs"])
    assert certified == len(doc["runs"]) - 2  # every run but the two 2-layer ones
    assert all(r["n"] == certified for r in association["rows"])
    assert str(markupsafe.escape(association["answer"])) in html
    assert association["answer"] in capsys.readouterr().out
    assert (out / "figures" / "certified_vs_mechanism.png").is_file()
    assert any(r["scope"] == "association" for r in rows)


def test_inert_offsets_everywhere_need_the_key_inert_in_every_cell_where_it_exists():
    # N = 4, C = 1: query i reads j = 3 − i; the other keys sit at offsets p − j
    inert = {0: [1, 2], 1: [0], 2: [0, 3], 3: [1, 2]}  # query 1's key 3 (offset +1) can matter
    cells = [cell(i, 0, 0, 0.5, 0.6, inert=inert[i]) for i in range(4)]
    result = synthetic(cells)
    result.certificate["seq_len"], result.certificate["num_categories"] = 4, 1
    theorem = result.theorem()
    assert theorem["inert_offsets_everywhere"] == [-2, -1, 2]
    assert theorem["inert_offsets_somewhere"] == [-2, -1, 1, 2]
    assert (
        "offsets -2, -1, +2 from the flipped key provably never change whether any output"
        in theorem_sentence(theorem)
    )


def test_a_seq_len_beyond_the_encoding_is_the_frames_one_line(tmp_path, capsys):
    path = save_model(make_model(positional_embedding="learned", d_vocab=C, n_ctx=N), tmp_path / "learned.pt")
    assert cli.main(["--checkpoint", str(path), "--seq-len", str(N + 1), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == (
        f"error: --seq-len {N + 1} exceeds what the model's learned positional encoding supports "
        f"({N} positions)"
    )
    assert not (tmp_path / "o").exists()


def test_progress_lines_are_throttled_and_round_the_bounds_on_their_safe_side():
    from analyses.certificate.measure import progress_lines

    lines: list[str] = []
    report = progress_lines(lines.append, every=10.0)
    state = {"boxes": 1600, "pending": 16000, "right": 1, "wrong": 1, "pairs": 3}
    for seconds in (0.5, 4.0, 10.6, 12.0):
        report({**state, "seconds": seconds})
    assert len(lines) == 2  # at 0.5 s and 10.6 s
    assert lines[0] == (
        "proof: 0 s, 1,600 regions bounded, 16,000 pending; per-digit accuracy in [0.333333, 0.666667] so far"
    )
