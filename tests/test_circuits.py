"""interp.circuits (exact split of layer 0's scores, QK/OV FactoredMatrix) and interp.rollout."""

from __future__ import annotations

import pytest
import torch

from interp.circuits import (
    SCORE_TERMS,
    bilinear_score_terms,
    cosine_by_offset,
    decompose_layer0_scores,
    flip_score_gap,
    ov_circuit,
    positional_encodings,
    positional_scores,
    qk_circuit,
)
from interp.rollout import attention_rollout, rollout_from_cache
from tests.conftest import make_model

SIZES = [
    dict(n_layers=1, n_heads=1, d_model=16),
    dict(n_layers=2, n_heads=4, d_model=16),
    dict(n_layers=1, n_heads=2, d_model=32),
    dict(n_layers=2, n_heads=4, d_model=32),
]


@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: f"{s['n_layers']}x{s['n_heads']}-d{s['d_model']}")
def test_terms_sum_exactly_to_hook_attn_scores(sizes, tokens):
    model = make_model(seed=3, **sizes)
    dec = decompose_layer0_scores(model, tokens)
    assert set(dec.terms) == set(SCORE_TERMS)
    assert not dec.frozen_scale
    torch.testing.assert_close(dec.total(), dec.scores, atol=1e-5, rtol=1e-5)
    assert dec.max_abs_error() < 1e-5
    # Random biases everywhere: no term may vanish, or the test would not test it.
    for name, term in dec.terms.items():
        assert term.std() > 1e-3, name
    # Positions alone give the same matrix for every sequence in a post-LN model.
    pos_pos = dec.terms["pos_pos"]
    torch.testing.assert_close(pos_pos, pos_pos[:1].expand_as(pos_pos))


def test_decomposition_matches_the_forward_pattern(tiny_model, tokens):
    dec = decompose_layer0_scores(tiny_model, tokens)
    torch.testing.assert_close(dec.total().softmax(-1), dec.pattern, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("pe", ["learned", "none"])
def test_other_positional_embeddings_sum_exactly(pe, tokens):
    model = make_model(seed=4, positional_embedding=pe)
    with torch.no_grad():
        if pe == "learned":
            model.pos_embed.W_pos.normal_()
    dec = decompose_layer0_scores(model, tokens)
    torch.testing.assert_close(dec.total(), dec.scores, atol=1e-5, rtol=1e-5)
    if pe == "none":
        for name in ("pos_pos", "tok_pos", "pos_tok"):
            assert dec.terms[name].abs().max() == 0


def test_pre_ln_splits_exactly_with_the_frozen_scale(tokens):
    model = make_model(seed=5, normalization="pre", n_layers=2, n_heads=2)
    dec = decompose_layer0_scores(model, tokens)
    assert dec.frozen_scale
    torch.testing.assert_close(dec.total(), dec.scores, atol=1e-5, rtol=1e-5)
    # The frozen scale differs per sequence, so the position term does too.
    assert (dec.terms["pos_pos"] - dec.terms["pos_pos"][:1]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="post-LN"):
        positional_scores(model, 16)


def test_zero_token_embedding_leaves_positions_alone(tokens):
    """Known answer: with W_E = 0, b_E = 0 and b_Q = b_K = 0 the scores ARE the position term."""
    model = make_model(seed=6, n_heads=2)
    with torch.no_grad():
        model.embed.proj.weight.zero_()
        model.embed.proj.bias.zero_()
        model.blocks[0].attn.qkv_proj.bias.zero_()
    dec = decompose_layer0_scores(model, tokens)
    for name in ("tok_pos", "pos_tok", "tok_tok", "bias"):
        assert dec.terms[name].abs().max() == 0, name
    torch.testing.assert_close(dec.terms["pos_pos"], dec.scores, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(positional_scores(model, 16), dec.scores[0], atol=1e-6, rtol=1e-6)


def test_identity_qk_gives_the_encoding_dot_products():
    """Known answer: one head with W_Q = W_K = I scores positions by PE_q · PE_k / √d."""
    model = make_model(seed=7, d_model=16)
    with torch.no_grad():
        w = model.blocks[0].attn.qkv_proj.weight  # [3d, d], rows grouped q | k | v for the one head
        w[:16] = torch.eye(16)
        w[16:32] = torch.eye(16)
    P = positional_encodings(model, 16)
    torch.testing.assert_close(positional_scores(model, 16), (P @ P.T / 4.0).unsqueeze(0))


def test_positional_scores_equal_the_pos_pos_term(multi_model, tokens):
    dec = decompose_layer0_scores(multi_model, tokens)
    expected = dec.terms["pos_pos"][0]
    torch.testing.assert_close(positional_scores(multi_model, 16), expected, atol=1e-6, rtol=1e-5)


def test_factored_matrices_agree_with_the_explicit_products(multi_model):
    for layer in range(2):
        attn = multi_model.blocks[layer].attn
        qk, ov = qk_circuit(multi_model, layer), ov_circuit(multi_model, layer)
        explicit_qk = attn.W_Q.detach() @ attn.W_K.detach().transpose(-1, -2)
        explicit_ov = attn.W_V.detach() @ attn.W_O.detach()
        torch.testing.assert_close(qk.AB, explicit_qk)
        torch.testing.assert_close(ov.AB, explicit_ov)
        d_head = multi_model.cfg.d_head
        top = torch.linalg.svdvals(explicit_qk)[:, :d_head]
        torch.testing.assert_close(qk.S, top, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="layer 2 is out of range"):
        qk_circuit(multi_model, 2)


def test_bilinear_terms_with_three_parts_and_bad_inputs():
    g = torch.Generator().manual_seed(0)
    parts = {name: torch.randn(2, 5, 8, generator=g) for name in ("a", "b", "c")}
    W_Q, W_K = torch.randn(2, 8, 4, generator=g), torch.randn(2, 8, 4, generator=g)
    b_Q, b_K = torch.randn(2, 4, generator=g), torch.randn(2, 4, generator=g)
    terms = bilinear_score_terms(parts, W_Q, W_K, b_Q, b_K)
    assert len(terms) == 10
    x = sum(parts.values())
    q = torch.einsum("bpd,hde->bphe", x, W_Q) + b_Q
    k = torch.einsum("bpd,hde->bphe", x, W_K) + b_K
    expected = torch.einsum("bqhe,bkhe->bhqk", q, k) / 2.0
    torch.testing.assert_close(sum(terms.values()), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="at least one"):
        bilinear_score_terms({}, W_Q, W_K, b_Q, b_K)
    with pytest.raises(ValueError, match="same shape"):
        bilinear_score_terms({"a": parts["a"], "b": parts["b"][:, :3]}, W_Q, W_K, b_Q, b_K)
    with pytest.raises(ValueError, match="reserved"):
        bilinear_score_terms({"bias": parts["a"]}, W_Q, W_K, b_Q, b_K)


def test_cosine_by_offset_known_answers(tiny_model):
    theta = 0.3
    angles = theta * torch.arange(6, dtype=torch.float64)
    circle = torch.stack([angles.cos(), angles.sin()], dim=-1) * 2.5  # norms do not matter
    expected = torch.cos(theta * torch.arange(6, dtype=torch.float64))
    torch.testing.assert_close(cosine_by_offset(circle), expected)
    # The tutorial's sinusoidal table at d_model 32 (the numbers quoted in the issue).
    sim = cosine_by_offset(positional_encodings(make_model(d_model=32), 16))
    assert sim[1].item() == pytest.approx(0.957, abs=5e-3)
    assert sim[2].item() == pytest.approx(0.858, abs=5e-3)
    with pytest.raises(ValueError, match="pos >= 1"):
        cosine_by_offset(torch.zeros(3))
    with pytest.raises(ValueError, match="n_pos"):
        positional_encodings(tiny_model, 0)


def test_flip_score_gap_known_answer():
    n = 7
    q = torch.arange(n).unsqueeze(1)
    k = torch.arange(n).unsqueeze(0)
    scores = -(k - (n - 1 - q)).abs().to(torch.float32) * 1.5  # falls by 1.5 per step from the flip
    for offset in (-2, -1, 1, 2, 6):
        assert flip_score_gap(scores, offset).item() == pytest.approx(1.5 * abs(offset))
    batched = scores.expand(3, 2, n, n)
    assert flip_score_gap(batched, 1).shape == (3, 2)
    with pytest.raises(ValueError, match="offset"):
        flip_score_gap(scores, 0)
    with pytest.raises(ValueError, match="offset"):
        flip_score_gap(scores, 7)
    with pytest.raises(ValueError, match="square"):
        flip_score_gap(scores[:3], 1)


# ---------------------------------------------------------------------------------------------------
def _perm(order: list[int]) -> torch.Tensor:
    return torch.eye(len(order))[order]


def test_rollout_hand_built_cases():
    n = 4
    eye = torch.eye(n).expand(2, 3, n, n)
    torch.testing.assert_close(attention_rollout([eye, eye]), torch.eye(n).expand(2, n, n))
    a, b = _perm([3, 2, 1, 0]), _perm([1, 2, 3, 0])
    # No residual: output i reads layer-1 key b(i), which read input a(b(i)).
    out = attention_rollout([a.expand(1, 1, n, n), b.expand(1, 1, n, n)], residual_weight=0.0)
    torch.testing.assert_close(out[0], b @ a)
    assert out[0, 0].argmax().item() == 2  # b: 0 -> 1, a: 1 -> 2
    # One layer with the paper's r = 0.5 is (A + I) / 2; heads are averaged.
    heads = torch.stack([a, b]).unsqueeze(0)
    out = attention_rollout([heads])
    torch.testing.assert_close(out[0], 0.5 * (a + b) / 2 + 0.5 * torch.eye(n))
    # max over heads then renormalise: rows stay distributions.
    out = attention_rollout([heads], residual_weight=0.0, head_reduction="max")
    torch.testing.assert_close(out[0], (a + b) / 2)


def test_rollout_from_cache_and_bad_inputs(multi_model, tokens):
    _, cache = multi_model.run_with_cache(tokens)
    out = rollout_from_cache(cache, 2)
    manual = attention_rollout([cache["blocks.0.attn.hook_pattern"], cache["blocks.1.attn.hook_pattern"]])
    torch.testing.assert_close(out, manual)
    torch.testing.assert_close(out.sum(-1), torch.ones(8, 16))
    with pytest.raises(ValueError, match="lacks"):
        rollout_from_cache(cache, 3)
    p = torch.full((1, 1, 4, 4), 0.25)
    with pytest.raises(ValueError, match="at least one"):
        attention_rollout([])
    with pytest.raises(ValueError, match="residual_weight"):
        attention_rollout([p], residual_weight=1.5)
    with pytest.raises(ValueError, match="head_reduction"):
        attention_rollout([p], head_reduction="median")
    with pytest.raises(ValueError, match="layer 1"):
        attention_rollout([p, torch.full((1, 1, 3, 3), 1 / 3)])
    with pytest.raises(ValueError, match=r"\[batch, head, pos, pos\]"):
        attention_rollout([torch.ones(4, 4)])
