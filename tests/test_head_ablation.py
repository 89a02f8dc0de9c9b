"""The head-ablation analysis: a planted irrelevant head, agreement with direct computation, Holm over
the family of tests, activation-patching ground truth, the output folder and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_model, numbers

from analyses import head_ablation as ha
from analyses.frame import sequences
from analyses.head_ablation import __main__ as ha_cli
from analyses.head_ablation.measure import permutation_seed
from analyses.head_ablation.patching import corrupt, patch_cells, patching_sweep
from interp import paired, patterns
from interp.ablation import ablate_heads, head_means, replace_pattern
from models.storage.checkpoints import save_model

SMALL = dict(
    num_sequences=40,
    batch_size=20,
    bootstrap_resamples=40,
    permutations=3,
    reference_sequences=10,
    patch_sequences=12,
)


def silence_head(model, layer: int, head: int):
    """Zero the head's columns of W_O: its output can no longer reach the residual stream."""
    dh = model.cfg.d_head
    with torch.no_grad():
        model.blocks[layer].attn.o_proj.weight[:, head * dh : (head + 1) * dh] = 0
    return model


@pytest.fixture(scope="module")
def multi_result():
    model = silence_head(make_model(seed=1, n_layers=2, n_heads=4, d_model=16), 1, 2)
    return model, ha.run(model, **SMALL)


def tokens_of(model, n=40, seed=0):
    return torch.cat(list(sequences.token_batches(n, 16, 10, seed, 1000)))


def test_a_silenced_head_has_exactly_no_effect(multi_result):
    _, result = multi_result
    for method in ("zero", "mean", "resample"):
        c = result.conditions[f"{method}/L1H2"]
        assert (c.delta_loss.mean, c.delta_loss.ci_low, c.delta_loss.ci_high) == (0.0, 0.0, 0.0)
        assert c.delta_accuracy.mean == 0 and c.wilcoxon.pvalue == 1.0 and c.p_holm == 1.0
    assert result.conditions["pattern/L1H2/uniform"].delta_loss.mean == 0.0
    assert result.conditions["zero/L0H0"].delta_loss.mean != 0.0


def test_conditions_agree_with_direct_computation(multi_result):
    model, result = multi_result
    tokens = tokens_of(model)
    with torch.no_grad():
        clean = model.loss_fn(model(tokens).double(), tokens, per_token=True).mean(-1)
        means = head_means(model, [tokens])
        with ablate_heads(model, [(0, 1)], "mean", means=means):
            mean_loss = model.loss_fn(model(tokens).double(), tokens, per_token=True).mean(-1)
        with replace_pattern(model, 0, 3, patterns.flip):
            flip_loss = model.loss_fn(model(tokens).double(), tokens, per_token=True).mean(-1)
    assert result.conditions["none"].loss.mean == pytest.approx(clean.mean().item(), rel=1e-6)
    c = result.conditions["mean/L0H1"]
    assert c.delta_loss.mean == pytest.approx((mean_loss - clean).mean().item(), abs=1e-6)
    assert c.wilcoxon.pvalue == pytest.approx(
        paired.wilcoxon_signed_rank(mean_loss.numpy(), clean.numpy()).pvalue, rel=1e-3
    )
    assert result.conditions["pattern/L0H3/flip"].loss.mean == pytest.approx(
        flip_loss.mean().item(), rel=1e-6
    )


def test_holm_runs_over_all_heads_and_methods(multi_result):
    _, result = multi_result
    tested = [c for c in result.conditions.values() if c.wilcoxon is not None]
    assert len(tested) == 2 * 4 * 3
    raw = np.array([c.wilcoxon.pvalue for c in tested])
    assert np.allclose([c.p_holm for c in tested], paired.holm(raw))


def test_permutations_and_their_summary(multi_result):
    _, result = multi_result
    assert {k: len(v) for k, v in result.permutation_accuracy.items()} == {
        f"{layer}.{head}": 3 for layer in range(2) for head in range(4)
    }
    permuted = result.conditions["pattern/L0H0/permuted"].accuracy.mean
    assert permuted == pytest.approx(np.mean(result.permutation_accuracy["0.0"]))
    names = {n.split("/")[-1] for n in result.conditions if n.startswith("pattern/L0H0/")}
    assert names == {
        "flip",
        "flip+1",
        "flip-1",
        "uniform",
        "tau_0.25",
        "tau_0.5",
        "tau_2",
        "tau_4",
        "permuted",
    }


def _permuted_accuracy(model, tokens, k, seed=0):
    """Per-sequence accuracy with head 0.0's rows permuted by permutation k, computed directly."""
    fn = lambda pattern: patterns.permute_rows(pattern, seed=permutation_seed(seed, k))  # noqa: E731
    with torch.no_grad(), replace_pattern(model, 0, 0, fn):
        return (model(tokens).argmax(-1) == tokens.flip(-1)).double().mean(-1)


def test_permutations_run_on_the_first_permutation_sequences(tiny_model):
    small = {**SMALL, "permutations": 2}
    tokens = tokens_of(tiny_model, 40)
    result = ha.run(tiny_model, **small, permutation_sequences=15)
    assert result.to_dict()["settings"]["permutation_sequences"] == 15
    direct = [_permuted_accuracy(tiny_model, tokens[:15], k) for k in range(2)]
    assert result.permutation_accuracy["0.0"] == pytest.approx([float(d.mean()) for d in direct], abs=1e-12)
    # the permuted condition: per sequence the mean over permutations, paired with the clean run on the
    # same 15 sequences
    with torch.no_grad():
        clean = (tiny_model(tokens[:15]).argmax(-1) == tokens[:15].flip(-1)).double().mean(-1)
    permuted = result.conditions["pattern/L0H0/permuted"]
    assert permuted.accuracy.mean == pytest.approx(float(torch.stack(direct).mean()), abs=1e-12)
    assert permuted.delta_accuracy.mean == pytest.approx(float((torch.stack(direct).mean(0) - clean).mean()))
    # every other condition still runs on all 40 sequences
    assert result.conditions["none"].accuracy.mean == pytest.approx(
        float((tiny_model(tokens).argmax(-1) == tokens.flip(-1)).double().mean()), abs=1e-12
    )


def test_permutation_sequences_beyond_num_sequences_is_the_estimator_of_schema_1(tiny_model):
    # Schema 1 ran every permutation on all sequences: with permutation_sequences ≥ num_sequences the
    # numbers are exactly those (the sequences, their batches and the bootstrap resamples are the same).
    tokens = tokens_of(tiny_model, 40)
    everything = ha.run(tiny_model, **{**SMALL, "permutations": 2}, permutation_sequences=10**6)
    assert everything.permutation_sequences == 40
    direct = [float(_permuted_accuracy(tiny_model, tokens, k).mean()) for k in range(2)]
    assert everything.permutation_accuracy["0.0"] == pytest.approx(direct, abs=1e-12)
    forty = ha.run(tiny_model, **{**SMALL, "permutations": 2}, permutation_sequences=40)
    assert numbers(forty) == numbers(everything)


def test_progress_false_and_quiet_hide_the_patching_progress_bars(tiny_model, tmp_path, capfd, monkeypatch):
    ha.run(tiny_model, **SMALL)
    assert "it/s" in capfd.readouterr().err  # TransformerLens' tqdm bars, on by default as before
    ha.run(tiny_model, **SMALL, progress=False)
    assert capfd.readouterr().err == ""
    calls = []

    def stop(model, **kwargs):  # the CLI's run: record what it is asked for, then stop
        calls.append(kwargs)
        raise ValueError("stopped")

    monkeypatch.setattr(ha_cli, "run", stop)
    argv = ["--checkpoint", str(save_model(tiny_model, tmp_path / "model.pt")), "--out", str(tmp_path / "o")]
    assert ha_cli.main([*argv, "--quiet"]) == 2 and ha_cli.main(argv) == 2
    assert [c["progress"] for c in calls] == [False, True]


def test_corruption_changes_one_digit():
    tokens = torch.randint(0, 10, (200, 16), generator=torch.Generator().manual_seed(0))
    bad = corrupt(tokens, 4, 10, seed=0)
    assert (
        (bad[:, 4] != tokens[:, 4]).all()
        and torch.equal(bad[:, :4], tokens[:, :4])
        and torch.equal(bad[:, 5:], tokens[:, 5:])
    )
    assert len(set(bad[:, 4].tolist())) == 10


def test_patching_ground_truth_on_one_layer(tiny_model):
    # Only input p differs, so patching resid_pre at p restores the clean run exactly and patching any
    # other position changes nothing; in one layer, output q depends on position q's residual (clean) and
    # the head's z at q, so patching z at q restores everything and elsewhere nothing.
    tokens = tokens_of(tiny_model, 24)
    sweep = patching_sweep(tiny_model, tokens, position=5, resamples=30)
    q = 10
    resid = np.array(sweep.resid_pre["mean"])[0]
    heads = np.array(sweep.heads_by_position["mean"])[0, :, 0]
    assert resid[5] == pytest.approx(1.0) and np.allclose(np.delete(resid, 5), 0, atol=1e-6)
    assert heads[q] == pytest.approx(1.0, abs=1e-5) and np.allclose(np.delete(heads, q), 0, atol=1e-6)
    assert sweep.output_position == q and sweep.clean_metric.mean != sweep.corrupted_metric.mean


def test_patch_cells_equals_transformer_lens_sweeps(multi_result):
    # The analysis runs TransformerLens' two sweeps without importing transformer_lens.patching: the
    # same patches must give the same numbers, bit for bit, on 2 layers x 4 heads.
    import transformer_lens.patching as tl_patching

    model, _ = multi_result
    tokens = tokens_of(model, 12)
    corrupted = corrupt(tokens, 3, 10, seed=0)
    _, cache = model.run_with_cache(tokens)

    def metric(logits):
        return logits[:, 12].gather(-1, tokens[:, 3:4]).squeeze(-1) - logits[:, 12, 0]

    with torch.no_grad():
        ours = patch_cells(model, corrupted, cache, metric, "attn.hook_z", (2, 16, 4), progress=False)
        theirs = tl_patching.get_act_patch_attn_head_out_by_pos(
            model, corrupted, cache, metric, reduce="none"
        )
        assert torch.equal(ours, theirs.values) and ours.shape == (2, 16, 4, 12)
        ours = patch_cells(model, corrupted, cache, metric, "hook_resid_pre", (2, 16), progress=False)
        theirs = tl_patching.get_act_patch_resid_pre(model, corrupted, cache, metric, reduce="none")
        assert torch.equal(ours, theirs.values)


def test_outputs_and_report(multi_result, tmp_path):
    _, result = multi_result
    result.provenance = {"checkpoint": "<b>x</b>", "command": "a & b"}
    out = ha.write_outputs(result, tmp_path / "out")
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["schema_version"] == ha.SCHEMA_VERSION and doc["analysis"] == "head_ablation"
    for key in ("accuracy", "loss", "logit_diff", "delta_accuracy", "delta_loss", "delta_logit_diff"):
        assert set(doc["conditions"]["zero/L0H0"][key]) == {"mean", "ci_low", "ci_high"}
    assert "p_holm" in doc["conditions"]["resample/L1H3"]["wilcoxon_loss"]
    assert np.array(doc["patching"]["heads_by_position"]["mean"]).shape == (2, 16, 4)
    html = (out / "report.html").read_text()
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "a &amp; b" in html
    figures = sorted(p.stem for p in (out / "figures").glob("*.png"))
    assert figures == [
        "head_method_grid",
        "patching_heads_by_position",
        "patching_resid_pre",
        "pattern_interventions",
        "permutation_distribution",
    ]
    assert html.count("data:image/png;base64,") == len(figures)
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0] == ",".join(ha.CSV_FIELDS) and len(rows) == 1 + 6 * len(doc["conditions"])


def test_cli_runs_and_rejects_bad_input(tmp_path, capsys):
    checkpoint = save_model(make_model(), tmp_path / "model.pt")
    out = tmp_path / "run"
    base = [
        "--checkpoint",
        str(checkpoint),
        "--num-sequences",
        "20",
        "--batch-size",
        "10",
        "--bootstrap-resamples",
        "20",
        "--permutations",
        "2",
        "--reference-sequences",
        "5",
        "--patch-sequences",
        "8",
    ]
    assert ha_cli.main([*base, "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"metrics.json", "metrics.csv", "figures", "report.html"}
    capsys.readouterr()
    bad = tmp_path / "bad"
    assert ha_cli.main([*base, "--patch-position", "16", "--out", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: patch position must be an integer in 0..15, got 16"
    assert not bad.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert ha_cli.main(["--permutations", "-1", "--out", str(bad)]) == 2  # argparse's exit, returned
    assert capsys.readouterr().err.startswith("error: ")


def test_trained_model_needs_its_head_and_its_pattern(trained_fast_run):
    from models.storage.checkpoints import load_model

    result = ha.run(load_model(trained_fast_run), **{**SMALL, "num_sequences": 200, "permutations": 5})
    c = result.conditions
    assert c["none"].accuracy.mean > 0.99
    for method in ("zero", "mean", "resample"):
        assert c[f"{method}/L0H0"].accuracy.mean < 0.3 and c[f"{method}/L0H0"].p_holm < 1e-6
    assert c["pattern/L0H0/flip"].accuracy.mean > 0.99  # the perfect flip is all the head needs
    assert c["pattern/L0H0/permuted"].accuracy.mean < 0.5  # same weights on other keys: lost
    assert c["pattern/L0H0/uniform"].accuracy.mean < 0.5
    sweep = result.patching
    recovery = np.array(sweep.heads_by_position["mean"])[0, :, 0]
    assert recovery[sweep.output_position] > 0.9 and np.delete(recovery, sweep.output_position).max() < 0.1


def test_two_heads_that_cover_for_each_other_show_only_when_zeroed_together():
    """The hand-built machine whose two heads are copies: zeroing either leaves the other's vote in
    charge (accuracy stays 1), zeroing both leaves no vote at all."""
    import math

    from vote_machine import redundant_flip_machine

    score = math.log(0.6 * 15 / 0.4)  # 0.6 of each row on the flipped key
    result = ha.run(redundant_flip_machine(score), **{**SMALL, "num_sequences": 100, "permutations": 0})
    c = result.conditions
    assert c["zero/L0H0"].delta_accuracy.mean == 0 and c["zero/L0H1"].delta_accuracy.mean == 0
    joint = c["joint/L0"]
    assert joint.kind == "joint" and joint.head is None and joint.delta_accuracy.ci_high < -0.5
    (r,) = result.redundancy()
    assert r["covering"] and "cover for each other" in r["sentence"] and r["sentence"] in result.summary()
    assert result.to_dict()["redundancy"] == [r]
    rows = [row for row in result.csv_rows() if row["condition"] == "joint/L0"]
    assert rows and all(row["scope"] == "model" and row["layer"] is None for row in rows)
