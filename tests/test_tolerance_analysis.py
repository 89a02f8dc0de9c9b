"""analyses.tolerance on hand-built models whose patterns and readout are known exactly, and its CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import no_figures
from vote_machine import flip_vote_machine, redundant_flip_machine

from analyses import tolerance
from analyses.frame.sequences import token_batches
from analyses.tolerance import __main__ as cli
from interp.tolerance_verdict import LABELS
from models import save_model

N, C = 16, 10
P = 0.6  # the flip vote machine's own weight on the flipped key
SCORE = math.log(P * (N - 1) / (1 - P))
Q = (1 - P) / (N - 1)
MIXES = (0.0, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0)
TEMPERATURES = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
SMALL = dict(
    num_sequences=200,
    batch_size=100,
    bootstrap_resamples=50,
    temperatures=TEMPERATURES,
    mixes=MIXES,
    adversarial_sequences=40,
    beam_width=2,
    beam_steps=2,
)


@pytest.fixture(scope="module")
def machine():
    return flip_vote_machine(SCORE)


@pytest.fixture(scope="module")
def result(machine):
    return tolerance.run(machine, **SMALL)


def test_flip_masses_are_the_closed_forms_of_each_family(result):
    f = {c.name: c for c in result.families}
    assert result.own["flip_mass"].mean == pytest.approx(P, abs=1e-6)
    for s, e in zip(MIXES, f["uniform"].flip_mass):
        assert e.mean == pytest.approx((1 - s) * P + s / N, abs=1e-6)
    for name in ("neighbours", "single_key+1"):
        for s, e in zip(MIXES, f[name].flip_mass):
            assert e.mean == pytest.approx((1 - s) * P, abs=1e-6)
    for tau, e in zip(TEMPERATURES, f["temperature"].flip_mass):
        top, rest = P ** (1 / tau), (N - 1) * Q ** (1 / tau)
        assert e.mean == pytest.approx(top / (top + rest), abs=1e-6)


def test_accuracy_is_the_plurality_vote_computed_by_hand(result):
    """The machine outputs the plurality vote, so the uniform family's accuracy is that of the vote over
    (1 − s) A + s / N, computed here in numpy on the same sequences (s < 1: no tied votes)."""
    tokens = np.concatenate([t.numpy() for t in token_batches(200, N, C, 0, 100)])
    own = np.full((N, N), Q)
    own[np.arange(N), N - 1 - np.arange(N)] = P
    one_hot = np.eye(C)[tokens]  # [seq, key, digit]
    uniform = next(c for c in result.families if c.name == "uniform")
    for s, acc, seq_acc in zip(MIXES, uniform.accuracy, uniform.sequence_accuracy):
        if s == 1.0:
            continue
        votes = np.einsum("qk,bkc->bqc", (1 - s) * own + s / N, one_hot)
        right = votes.argmax(-1) == tokens[:, ::-1]
        assert acc.mean == pytest.approx(right.mean(), abs=1e-12)
        assert seq_acc.mean == pytest.approx(right.all(-1).mean(), abs=1e-12)
        assert acc.ci_low <= acc.mean <= acc.ci_high


def test_the_vote_rule_predicts_the_machine_wherever_votes_cannot_tie(result):
    for family in result.families:
        points = range(len(family.values))
        if family.kind in ("uniform", "neighbours"):  # equal weights at s = 1 tie digits
            points = [i for i in points if family.values[i] < 1]
        for i in points:
            assert family.readout["vote_agreement"][i].mean == 1.0, (family.name, family.values[i])
            assert family.readout["vote_accuracy"][i].mean == family.accuracy[i].mean
    assert result.clean_readout["vote_agreement"].mean == 1.0
    assert result.adversarial.readout["adversarial_vote_agreement"].mean == 1.0


def test_thresholds_verdict_and_headline_agree(result):
    assert result.own["accuracy"].mean == 1.0  # p − q > 15 q: the flipped key always wins
    assert result.verdict.label in LABELS and result.verdict.label != "undetermined"
    for t in result.thresholds:
        if t.status == "crossed":
            assert t.margin.mean == pytest.approx(t.own_flip_mass - t.flip_mass.mean)
            assert t.flip_mass.mean < t.own_flip_mass
    high = [result.threshold(f.name, 0.99) for f in result.families]
    crossed = [t for t in high if t.status == "crossed"]
    need = max(crossed, key=lambda t: t.flip_mass.mean)
    assert f"it needs {need.flip_mass.mean:.3f}" in result.verdict_headline()
    doc = result.to_dict()
    assert doc["verdict"]["label"] == result.verdict.label and doc["verdict"]["headline"]
    assert set(doc) >= {"families", "thresholds", "verdict", "sequence_verdict", "readout", "worst_case"}


def test_same_seed_same_numbers(machine, result):
    again = tolerance.run(machine, **SMALL).to_dict()
    first = result.to_dict()
    for doc in (again, first):
        doc["provenance"].pop("timestamp")
    assert again == first


def test_a_head_that_does_not_reverse_gets_a_stated_verdict_not_a_crash():
    """Zero scores: uniform attention, the output is the sequence's most frequent digit."""
    result = tolerance.run(flip_vote_machine(0.0), **SMALL)
    assert result.own["flip_mass"].mean == pytest.approx(1 / N, abs=1e-6)
    assert result.verdict.label == "wrong" and "below 99%" in result.verdict.text
    assert all(t.status == "starts_below" and t.reason for t in result.thresholds if t.level == 0.99)
    assert "above range" in result.summary()
    assert "nan" not in result.summary().lower()


def test_a_one_point_grid_is_undetermined_with_a_reason(machine):
    result = tolerance.run(machine, **{**SMALL, "temperatures": (1.0,), "mixes": (0.0,)})
    assert result.verdict.label == "undetermined"
    assert "one point" in result.verdict.text


def test_two_heads_the_flip_head_is_found(machine):
    result = tolerance.run(flip_vote_machine(SCORE, n_heads=2), **SMALL)
    assert (result.layer, result.head) == (0, 0) and "largest flip mass" in result.head_choice


def test_two_heads_that_each_suffice_are_redundant_not_tolerant(tmp_path, monkeypatch):
    """Each head alone keeps the model right down to s = 1 (the other head's vote decides); degraded
    together they fail where the one-head machine fails. With a slack (0.3) that every head alone keeps
    (its tightest margin, neighbours, is ≥ 0.36) and the joint degradation does not (0.18),
    the verdict may not say "right" on the strength of one head."""
    model = redundant_flip_machine(SCORE)
    result = tolerance.run(model, **{**SMALL, "slack": 0.3})
    group = result.head_set
    assert group is not None and group.heads == [(0, 0), (0, 1)] and "zero ablation" in group.choice
    uniform = {k: next(t for t in v if t.family == "uniform") for k, v in group.per_head.items()}
    assert all(t.status == "never_crossed" for t in uniform.values())  # each head alone: never below 99%
    joint = next(t for t in group.joint if t.family == "uniform")
    assert joint.status == "crossed" and joint.margin.ci_low < 0.3
    one_head = tolerance.run(flip_vote_machine(SCORE), **{**SMALL, "slack": 0.3})
    alone = next(t for t in one_head.thresholds if t.family == "uniform" and t.level == 0.99)
    assert joint.flip_mass.mean == pytest.approx(alone.flip_mass.mean, abs=1e-6)  # the same vote, doubled
    assert group.redundant and "covering for each other" in group.sentence
    assert result.verdict.label == "partly right" and "redundant, not tolerant" in result.verdict.rule
    assert result.to_dict()["head_set"]["redundant"] is True
    assert result.verdict.sentences[0].startswith("Regime: 200 random sequences of length 16; head 0.0's")
    html = (
        no_figures(monkeypatch, tolerance.OUTPUTS).write(result, tmp_path / "out") / "report.html"
    ).read_text()
    assert "Redundant, not tolerant." in html and "head 0.1 alone" in html and "Which rule predicts" in html
    assert "The readout of a set of heads" in html
    # the main analysis alone (head 0.0 degraded, 0.1 intact) would have called it right
    lone = tolerance.run(model, **{**SMALL, "slack": 0.3, "heads": "none"})
    assert lone.head_set is None and lone.verdict.label == "right"
    readout_of_a_redundant_set(result)


def readout_of_a_redundant_set(result):
    """The machine's output is the plurality of the two heads' summed votes, so the set's vote (its mean
    pattern's) agrees with the model at every point (as the one-head machine's vote does), up to exact
    ties: the neighbours family gives its four neighbour keys equal weight, and the model's float32 sum
    of two heads breaks a tie between two digits held by two neighbours each otherwise than a float64
    argmax (2 of 3,200 positions at s = 0.8). Head 0.0 degraded alone (0.1 intact, which decides): its
    own vote is no longer the output's digit far along the single-key family, and the set's readout, not
    the one head's, is the one the sentence scopes the rule to."""
    group = result.head_set
    for family in result.families:
        for value, e in zip(family.values, group.joint_readout[family.name]["vote_agreement"]):
            assert e.mean == 1.0 or (family.kind == "neighbours" and e.mean >= 0.999), (family.name, value)
        # head 0.0 alone is the main analysis' regime: the same numbers; at the own pattern both heads
        # hold the same pattern, so set, either head and the main analysis read the same
        for rate in ("vote_agreement", "argmax_agreement"):
            assert group.per_head_readout["0.0"][family.name][rate] == family.readout[rate]
            own = family.readout[rate][family.own].mean
            assert group.joint_readout[family.name][rate][family.own].mean == own
            assert group.per_head_readout["0.1"][family.name][rate][family.own].mean == own
    single = result.family("single_key+1").values.index(0.6)
    assert group.per_head_readout["0.0"]["single_key+1"]["vote_agreement"][single].ci_high < 0.2
    rules = result.to_dict()["head_set"]["readout"]["by_family"]
    assert rules["joint"]["uniform"] == {
        "points": 8,
        "vote_better": 3,
        "heaviest_better": 0,
        "largest_gap": rules["joint"]["uniform"]["largest_gap"],
    }
    assert set(rules["per_head"]) == {"0.0", "0.1"}
    sentence = result.readout_sentence()
    assert "heads 0.0, 0.1 degraded together" in sentence and "read the readout of the set" in sentence
    assert result.to_dict()["readout"]["sentence"] == sentence


# --- the command line -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, machine):
    return save_model(machine, tmp_path_factory.mktemp("tol") / "machine.pt")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--level", "1.5"], "error: argument --level: expected a number in (0, 1], got '1.5'"),
        (["--level", "0.4"], "error: breaking_level (0.5) must be below level (0.4)"),
        (["--layer", "0"], "error: give both layer and head, or neither"),
        (["--layer", "0", "--head", "3"], "error: head 3 does not exist: each layer has heads 0..0"),
        (["--mixes", "0.5,2"], "error: the neighbours family's mixing weights must lie in [0, 1]"),
        (["--temperatures", "1,x"], "error: argument --temperatures: expected comma-separated numbers"),
        (["--single-offset", "0"], "error: argument --single-offset: expected a non-zero integer"),
        (["--slack", "-1"], "error: argument --slack: expected a number ≥ 0, got '-1'"),
        (["--heads", "0-1"], "error: argument --heads: expected auto, all, none, layer:L or heads as L.H"),
        (["--heads", "0.4"], "error: head 4 does not exist: each layer has heads 0..0"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(checkpoint, tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    assert cli.main(["--checkpoint", str(checkpoint), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_every_output(checkpoint, tmp_path, capsys, monkeypatch):
    """The folder, metrics and report (the figures are drawn by tests/test_report_build.py's build)."""
    monkeypatch.setattr(cli, "OUTPUTS", no_figures(monkeypatch, tolerance.OUTPUTS))
    out = tmp_path / "tol"
    argv = ["--checkpoint", str(checkpoint), "--out", str(out), "--num-sequences", "50", "--batch-size", "50"]
    argv += ["--bootstrap-resamples", "20", "--temperatures", "0.5,1,2,4", "--mixes", "0,0.3,0.6,1"]
    argv += ["--adversarial-sequences", "10", "--beam-steps", "1", "--beam-width", "2", "--quiet"]
    assert cli.main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "metrics.json", "report.html"]
    html = (out / "report.html").read_text()
    assert "Verdict:" in html and "Worst case found" in html
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["analysis"] == "tolerance" and doc["provenance"]["command"].startswith(
        "python -m analyses.tolerance"
    )
    assert doc["settings"]["mixes"] == [0.0, 0.3, 0.6, 1.0] and doc["head"] == {
        "layer": 0,
        "head": 0,
        "choice": doc["head"]["choice"],
    }
    printed = capsys.readouterr().out
    assert printed.startswith("Tolerance of head 0.0") and "verdict:" in printed
