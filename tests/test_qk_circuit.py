"""The QK-circuit analysis: hand-built models with known answers, agreement with direct computations,
the swap experiment, the verdict rules, determinism, outputs, and the CLI with its errors."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_model, numbers

from analyses import qk_circuit as qk
from analyses.frame import sequences
from analyses.qk_circuit import __main__ as qk_cli
from analyses.qk_circuit import measure as qk_measure
from analyses.qk_circuit.statistics import (
    BETA_MAX,
    _spearman_p,
    bootstrap_ratio_means,
    fit_temperature,
    fit_temperatures,
    offset_profile,
    row_jsd,
    similarity_law,
    spearman,
)
from interp.circuits import positional_encodings, positional_scores, swap_effect
from interp.rollout import attention_rollout
from interp.stats import bootstrap_distribution
from models import HookedReverseEncoder
from models.storage.checkpoints import save_model, sha256_file

SMALL = dict(num_sequences=40, batch_size=16, bootstrap_resamples=30)


def reflection(n: int, d: int) -> torch.Tensor:
    """R with PE_i R = PE_{n−1−i} for the sinusoidal table (a reflection in each frequency's plane)."""
    omega = torch.exp(torch.arange(0, d, 2).float() * (-math.log(10000.0) / d))
    c, s = torch.cos(omega * (n - 1)), torch.sin(omega * (n - 1))
    R = torch.zeros(d, d)
    for k in range(d // 2):
        R[2 * k, 2 * k], R[2 * k + 1, 2 * k] = -c[k], s[k]
        R[2 * k, 2 * k + 1], R[2 * k + 1, 2 * k + 1] = s[k], c[k]
    return R


def similarity_model(beta: float) -> HookedReverseEncoder:
    """Layer 0 scores exactly β·cos(PE_{N−1−i}, PE_j): zero token embedding, zero q/k biases,
    W_Q = a·R, W_K = a·I, so S = a² PE_{N−1−i}·PE_j / √16 = 2a² cos (every row of PE has norm² 8)."""
    model = make_model(seed=11, d_model=16)
    a = math.sqrt(beta / 2)
    with torch.no_grad():
        model.embed.proj.weight.zero_()
        model.embed.proj.bias.zero_()
        qkv = model.blocks[0].attn.qkv_proj
        qkv.bias[:32].zero_()
        qkv.weight[:16] = (a * reflection(16, 16)).T
        qkv.weight[16:32] = a * torch.eye(16)
    return model


class Reverser(HookedReverseEncoder):
    """Runs the real forward (so every hook fires) but predicts the reversed sequence perfectly."""

    def forward(self, tokens):
        super().forward(tokens)
        tokens = self.validate_tokens(tokens)
        return F.one_hot(tokens.flip(-1), self.cfg.d_vocab).float() * 10


class NeighbourReader(HookedReverseEncoder):
    """Predicts at i the digit at key N−1−i+1 (clamped), so it follows swaps at offset +1."""

    def forward(self, tokens):
        tokens = self.validate_tokens(tokens)
        n = tokens.shape[1]
        keys = (torch.arange(n - 1, -1, -1) + 1).clamp(max=n - 1)
        return F.one_hot(tokens[:, keys], self.cfg.d_vocab).float() * 10


# --- pure statistics --------------------------------------------------------------------------------
def test_row_jsd_known_values():
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.3, 0.7]])
    q = torch.tensor([[0.0, 1.0], [0.5, 0.5], [0.3, 0.7]])
    expected_mid = 0.5 * math.log2(1 / 0.75) + 0.5 * (
        0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)
    )
    torch.testing.assert_close(row_jsd(p, q), torch.tensor([1.0, expected_mid, 0.0]))


def test_temperatures_of_many_patterns_at_once_bounds_and_no_similarity():
    rng = np.random.default_rng(1)
    sim = rng.uniform(-1, 1, size=(2, 5, 5))  # [head, query, key]
    betas = np.array([[0.5, 3.0], [12.0, 40.0], [7.5, 0.25]])  # [pattern, head]
    observed = torch.from_numpy(betas[..., None, None] * sim).softmax(-1).numpy()
    # Rows of unequal mass (a mean pattern need not sum to 1 per row): each row's optimum is still β.
    observed = observed * np.array([1.0, 1.0, 1.0, 1.0, 10.0])[:, None]
    np.testing.assert_allclose(fit_temperatures(sim, observed), betas, rtol=1e-12, atol=0)
    assert fit_temperatures(sim, observed)[2, 1] == fit_temperature(sim[1], observed[2, 1])
    # Attention that avoids the similar keys: the optimum is the lower bound, exactly 0.
    assert fit_temperature(sim[0], torch.from_numpy(-5 * sim[0]).softmax(-1).numpy()) == 0.0
    # All mass on each row's most similar key: the likelihood rises for ever, so the upper bound,
    # exactly (bisection alone stops an ulp below 7.3).
    argmax = (sim[0] == sim[0].max(-1, keepdims=True)).astype(float)
    assert fit_temperature(sim[0], argmax) == BETA_MAX
    assert fit_temperature(sim[0], argmax, beta_max=7.3) == 7.3
    # No β is better than another, or the pattern is not one: NaN.
    assert np.isnan(fit_temperature(np.full((4, 4), 0.3), np.eye(4)))  # no similarity
    assert np.isnan(fit_temperature(np.arange(4.0)[:, None] * np.ones((4, 4)), np.eye(4)))  # constant rows
    for bad in (np.nan, np.inf, -0.1):
        broken = observed[0, 0].copy()
        broken[1, 2] = bad
        assert np.isnan(fit_temperature(sim[0], broken)), bad
    assert np.isnan(fit_temperature(sim[0], np.zeros((5, 5))))
    for beta_max in (0.0, -5.0, np.inf, np.nan):
        with pytest.raises(ValueError, match="beta_max"):
            fit_temperature(sim[0], observed[0, 0], beta_max=beta_max)


def test_temperature_of_a_noisy_pattern_with_unequal_rows_is_the_likelihoods_maximum():
    from scipy import optimize

    rng = np.random.default_rng(3)
    sim = rng.uniform(-1, 1, size=(6, 6))
    noise = rng.normal(scale=0.5, size=(6, 6))
    observed = torch.from_numpy(5 * sim + noise).softmax(-1).numpy() * rng.uniform(0.1, 5, (6, 1))

    def loss(beta: float) -> float:
        return -(observed * torch.from_numpy(beta * sim).log_softmax(-1).numpy()).sum()

    reference = optimize.minimize_scalar(loss, bounds=(0, 1000), method="bounded", options={"xatol": 1e-12}).x
    beta = fit_temperature(sim, observed)
    assert beta == pytest.approx(reference, abs=1e-6)  # scipy's search stops within ~1e-8 relative
    assert loss(beta) <= loss(reference) + 1e-12
    # Weighting the rows matters: with every row rescaled to mass 1 the optimum is elsewhere.
    assert abs(fit_temperature(sim, observed / observed.sum(-1, keepdims=True)) - beta) > 0.1


def test_spearman_and_its_p_value_equal_scipy_ties_included():
    from scipy import stats

    rng = np.random.default_rng(2)
    for n, tied in ((9, False), (16, True), (31, True)):
        x = rng.integers(0, 4, size=n).astype(float) if tied else rng.normal(size=n)
        y = rng.integers(0, 3, size=(5, n)).astype(float) if tied else rng.normal(size=(5, n))
        for row in y:
            expected = stats.spearmanr(x, row)
            assert spearman(x, row) == pytest.approx(expected.statistic, rel=1e-12)
            assert _spearman_p(x, row) == expected.pvalue
        np.testing.assert_array_equal(spearman(x, y), [spearman(x, row) for row in y])
    assert np.isnan(_spearman_p(np.arange(5.0), np.ones(5)))


def test_spearman_and_temperature_and_offset_profile():
    x = np.arange(10.0)
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert np.isnan(spearman(x, np.ones(10)))
    rng = np.random.default_rng(0)
    sim = rng.uniform(-1, 1, size=(6, 6))
    observed = torch.from_numpy(7.0 * sim).softmax(-1).numpy()
    assert fit_temperature(sim, observed) == pytest.approx(7.0, abs=1e-12)  # the maximum likelihood
    flip = torch.eye(5).flip(-1).view(1, 5, 5)
    profile = offset_profile(flip)[0]
    assert profile[4] == 1.0 and profile.sum() == 1.0  # offset 0 sits at index N − 1


def test_similarity_law_known_answer():
    g = torch.Generator().manual_seed(0)
    sim = torch.rand(2, 6, 6, generator=g, dtype=torch.float64)
    scores = 3.0 * sim + torch.randn(2, 6, 1, generator=g, dtype=torch.float64)  # + a row constant
    slope, r2 = similarity_law(scores, sim)
    torch.testing.assert_close(slope, torch.full((2,), 3.0, dtype=torch.float64))
    torch.testing.assert_close(r2, torch.ones(2, dtype=torch.float64))
    _, r2_noise = similarity_law(torch.randn(2, 6, 6, generator=g, dtype=torch.float64), sim)
    assert (r2_noise < 0.5).all()


def test_bootstrap_ratio_means_matches_interp_stats():
    g = torch.Generator().manual_seed(0)
    num = torch.rand(30, 2, 3, generator=g, dtype=torch.float64)
    den = torch.randint(1, 5, (30, 1), generator=g).double()
    means = bootstrap_ratio_means({"x": (num, den)}, resamples=40, seed=[3, 1])["x"]
    assert means.shape == (41, 2, 3)
    np.testing.assert_allclose(means[0], (num.sum(0) / den.sum()).numpy())
    flat = num.reshape(30, -1).numpy()
    point, reps = bootstrap_distribution(flat, np.broadcast_to(den.numpy(), flat.shape), 40, seed=[3, 1])
    np.testing.assert_allclose(means[1:].reshape(40, -1), reps)


# --- the analysis on hand-built models --------------------------------------------------------------
def test_similarity_model_is_recovered_exactly():
    """Known answer: scores ARE β·cos(PE_flip, PE_key), so the literal test fits with that β."""
    model = similarity_model(beta=30.0)
    result = qk.run(model, **SMALL)
    (head,) = result.heads
    assert result.decomposition_max_abs_error < 1e-4
    assert head.variance_share["pos_pos"].mean == pytest.approx(1.0, abs=1e-9)
    for term in ("tok_pos", "pos_tok", "tok_tok", "bias"):
        assert head.variance_share[term].mean == 0.0
    assert head.temperature.mean == pytest.approx(30.0, abs=1e-2)
    assert head.predictions["pe_similarity"].jsd_bits.mean < 1e-7
    assert head.predictions["positions_only"].jsd_bits.mean < 1e-10
    assert head.pos_pos_gap_share[1].mean == pytest.approx(1.0)
    assert head.law_slope.mean == pytest.approx(30.0, rel=1e-4) and head.law_r2.mean == pytest.approx(1.0)
    # exp(gap) is the attention ratio between the flipped key and its neighbour, row by row.
    cos1 = float(result.raw_pe_cosine_by_distance[1])
    assert head.gap[1].mean == pytest.approx(30.0 * (1 - cos1), rel=1e-3)
    assert result.verdict.label == "right"
    assert "right" in result.verdict.sentences[0]


def test_anti_similar_attention_is_not_supported(tiny_model):
    """Planted scores: a large bonus on the flipped key, and the other keys ranked *against* similarity."""
    P = positional_encodings(tiny_model, 16)
    flip = torch.arange(15, -1, -1)
    cos = F.normalize(P[flip], dim=-1) @ F.normalize(P, dim=-1).T
    planted = 8.0 * torch.eye(16).flip(-1) - 4.0 * cos

    def plant(scores, hook):
        return planted.expand_as(scores).clone()

    with tiny_model.hooks(fwd_hooks=[("blocks.0.attn.hook_attn_scores", plant)]):
        result = qk.run(tiny_model, **SMALL)
    (head,) = result.heads
    assert head.observed.flip_mass.mean > 0.5
    assert head.similarity["raw_pe"].spearman_positions.mean < 0
    assert result.verdict.label == "not supported"


def test_verdict_not_applicable_without_a_flip_or_without_encodings(tiny_model):
    result = qk.run(tiny_model, **SMALL)  # random weights: attention near uniform
    assert result.verdict.label == "not applicable"
    assert "does not attend" in result.verdict.sentences[0]
    none = qk.run(make_model(positional_embedding="none"), **SMALL)
    assert none.verdict.label == "not applicable"
    assert none.heads[0].variance_share["pos_pos"].mean == 0.0


def test_perfect_reverser_follows_the_flipped_key_only():
    result = qk.run(Reverser(make_model().cfg), **SMALL)
    assert result.accuracy.mean == 1.0
    assert (result.swap[0]["follows"].mean, result.swap[0]["changed"].mean) == (1.0, 1.0)
    # logits 10·one_hot: log p(answer) goes from −log(1 + 9e^−10) to −10 − log(1 + 9e^−10).
    assert result.swap[0]["logprob_drop"].mean == pytest.approx(10.0, abs=1e-4)
    for o in (-2, -1, 1, 2):
        assert (result.swap[o]["follows"].mean, result.swap[o]["changed"].mean) == (0.0, 0.0)
        assert result.swap[o]["logprob_drop"].mean == 0.0
        assert result.swap[o]["swaps"] == 40 * (16 - abs(o))


def test_swap_effect_on_a_neighbour_reader(tokens):
    model = NeighbourReader(make_model().cfg)
    effect = swap_effect(model, tokens, (-1, 0, 1), torch.Generator().manual_seed(0), chunk_size=5)
    plus, minus = effect.offsets.index(1), effect.offsets.index(-1)
    assert effect.follows[:, :, plus][effect.valid[:, :, plus]].all()
    assert not effect.changed[:, :, minus].any()
    assert (effect.target_logprob_drop[:, :, minus] == 0).all()
    # New digits differ from the old one, and from the target for neighbours; −1 where no key.
    n = tokens.shape[1]
    for o_idx, o in enumerate(effect.offsets):
        for i in range(n):
            j = n - 1 - i + o
            r = effect.replacement[:, i, o_idx]
            if not 0 <= j < n:
                assert (r == -1).all()
                continue
            assert (r != tokens[:, j]).all()
            if o:
                assert (r != tokens[:, n - 1 - i]).all()
    with pytest.raises(ValueError, match="offsets"):
        swap_effect(model, tokens, (16,))
    with pytest.raises(ValueError, match="at least 3 digits"):
        swap_effect(make_model(d_vocab=2), torch.zeros(2, 16, dtype=torch.long), (1,))


def test_run_agrees_with_direct_computations(multi_model):
    result = qk.run(multi_model, **SMALL)
    tokens = torch.cat(list(sequences.token_batches(40, 16, 10, seed=0, batch_size=40)))
    _, cache = multi_model.run_with_cache(tokens)
    pattern = cache["blocks.0.attn.hook_pattern"].double().mean(0)
    pos = positional_scores(multi_model, 16)
    rollout = attention_rollout([cache[f"blocks.{i}.attn.hook_pattern"] for i in range(2)]).double().mean(0)
    assert result.decomposition_max_abs_error < 1e-5
    for h in result.heads:
        np.testing.assert_allclose(h.observed.pattern, pattern[h.head].numpy(), atol=1e-6)
        np.testing.assert_allclose(h.mean_terms["pos_pos"], pos[h.head].numpy(), atol=1e-5)
        assert sum(e.mean for e in h.variance_share.values()) == pytest.approx(1.0)
        assert h.observed.flip_mass.ci_low <= h.observed.flip_mass.mean <= h.observed.flip_mass.ci_high
        # softmax(mean scores) is the 'positions + mean token terms' prediction.
        mean_scores = sum(h.mean_terms.values())
        expected = torch.from_numpy(mean_scores).softmax(-1).numpy()
        np.testing.assert_allclose(h.predictions["positions_and_mean_tokens"].pattern, expected, atol=1e-9)
    np.testing.assert_allclose(result.rollout["mean"], rollout.numpy(), atol=1e-6)
    assert result.singular_values.shape == (2, 4, 4)


def test_pre_ln_models_use_the_frozen_scale():
    result = qk.run(make_model(seed=2, normalization="pre"), **SMALL)
    assert result.frozen_scale and result.decomposition_max_abs_error < 1e-5
    assert "frozen" in result.summary()


def test_same_seed_same_numbers_and_block_bootstrap(tiny_model, monkeypatch):
    a = numbers(qk.run(tiny_model, **SMALL))  # without the provenance timestamp, which may tick between runs
    b = numbers(qk.run(tiny_model, **{**SMALL, "batch_size": 7}))
    a["settings"].pop("batch_size"), b["settings"].pop("batch_size")
    assert json.dumps(a) == json.dumps(b)
    c = qk.run(tiny_model, **{**SMALL, "seed": 1}).to_dict()
    assert c["heads"] != a["heads"]
    monkeypatch.setattr(qk_measure, "MAX_UNITS", 8)
    blocks = qk.run(tiny_model, **SMALL)
    assert blocks.settings["resampling_units"] == 8 and "block" in blocks.settings["resampling_unit"]
    # Point estimates are ratios of total sums, so they do not depend on the units.
    assert blocks.heads[0].observed.flip_mass.mean == pytest.approx(
        a["heads"][0]["observed"]["flip_mass"]["mean"]
    )


def test_bad_arguments_raise_value_errors(tiny_model):
    with pytest.raises(ValueError, match="num_sequences"):
        qk.run(tiny_model, num_sequences=0)
    with pytest.raises(ValueError, match="seq_len must be at least 3"):
        qk.run(tiny_model, num_sequences=4, seq_len=2)
    with pytest.raises(ValueError, match="seq_len 17 exceeds"):
        qk.run(make_model(positional_embedding="learned"), num_sequences=4, seq_len=17)
    with pytest.raises(ValueError, match="swap offsets"):
        qk.run(tiny_model, num_sequences=4, swap_offsets=(20,))


# --- outputs and CLI --------------------------------------------------------------------------------
def _cli(tmp_path, *extra):
    return ["--out", str(tmp_path / "out"), "--num-sequences", "40", "--batch-size", "16",
            "--bootstrap-resamples", "30", *extra]  # fmt: skip


def test_cli_writes_every_output(multi_model, tmp_path, capsys):
    checkpoint = save_model(multi_model, tmp_path / "model.pt")
    assert qk_cli.main(_cli(tmp_path, "--checkpoint", str(checkpoint))) == 0
    out = tmp_path / "out"
    document = json.loads((out / "metrics.json").read_text())
    assert document["schema_version"] == qk.SCHEMA_VERSION and document["analysis"] == "qk_circuit"
    assert document["decomposition_max_abs_error"] < 1e-5
    assert document["provenance"]["checkpoint_sha256"] == sha256_file(checkpoint)
    assert set(document["heads"][0]["variance_share"]) == {"pos_pos", "tok_pos", "pos_tok", "tok_tok", "bias"}
    assert document["rollout"] is not None and document["verdict"]["label"]
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert header == "section,scope,layer,head,metric,index,mean,ci_low,ci_high"
    pngs = sorted(p.stem for p in (out / "figures").glob("*.png"))
    assert not list((out / "figures").glob("*.svg"))  # SVG only when asked for (--svg)
    assert len(pngs) == 8  # 7 figures + rollout for a two-layer model
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 8
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "Verdict" in html and "wrote" in capsys.readouterr().out


def test_report_escapes_strings_and_handles_a_model_without_encodings(tmp_path):
    result = qk.run(make_model(positional_embedding="none"), **SMALL)
    assert math.isnan(result.heads[0].temperature.mean)
    result.provenance = {"checkpoint": "<script>alert(1)</script>", "command": "a & b"}
    qk.write_outputs(result, tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "a &amp; b" in html
    document = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert document["heads"][0]["temperature"]["mean"] is None  # NaN → null, strict JSON


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--checkpoint", "MISSING"], "missing.pt"),
        (["--checkpoint", "GARBAGE"], "garbage.pt"),
        (["--checkpoint", "MODEL", "--seq-len", "2"], "seq_len must be at least 3"),
        (["--checkpoint", "MODEL", "--device", "nonsense"], "--device"),
        (["--checkpoint", "MODEL", "--num-sequences", "0"], "positive integer"),
    ],
)
def test_cli_errors_are_one_line_exit_2_and_write_nothing(tiny_model, tmp_path, capsys, extra, message):
    save_model(tiny_model, tmp_path / "model.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    paths = {
        "MISSING": tmp_path / "missing.pt",
        "GARBAGE": tmp_path / "garbage.pt",
        "MODEL": tmp_path / "model.pt",
    }
    extra = [str(paths.get(x, x)) for x in extra]
    try:
        code = qk_cli.main(_cli(tmp_path, *extra))
    except SystemExit as e:  # argparse mistakes exit from inside parse_args
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SHA256SUMS", "garbage.pt", "model.pt"]
