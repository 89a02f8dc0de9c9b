"""The certificate engine (issue 26): the proof's bounds against exhaustive enumeration on small models
(post- and pre-LN, sinusoidal/learned/no positional encoding, 1-2 heads, own and tutorial checkpoint
formats, stopped early and trained), hand-built models whose accuracy is known exactly, the theorem
columns against enumeration, and mutations (a dropped softmax term, an unproven LayerNorm variance
floor, an ignored bias) that must make the soundness checks fail."""

from __future__ import annotations

import copy
import itertools
import json

import pytest
import torch
from conftest import make_model

from interp.certificate import CertificateUnsupported, certify, choose_method
from interp.certificate.census import branch_order, compress
from interp.certificate.enumerate import all_inputs, right_positions
from interp.certificate.network import MUTATIONS, build_network
from interp.certificate.proof import cell_margin_bounds
from interp.certificate.result import Region
from models import EncoderConfig, HookedReverseEncoder


def train_tiny(steps: int, seed: int = 0, lr: float = 1e-2, **overrides) -> HookedReverseEncoder:
    """A small encoder trained with Adam on random sequences for ``steps`` steps (plain torch, no
    Lightning: a few seconds); few steps leave some inputs wrong."""
    torch.manual_seed(seed)
    model = HookedReverseEncoder(EncoderConfig(**overrides))
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        tokens = torch.randint(0, model.cfg.d_vocab, (64, model.cfg.n_ctx), generator=g)
        loss = model(tokens, return_type="loss")
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def wrong_set(model, n: int) -> set[tuple[tuple[int, ...], int]]:
    """Every wrong (input, position) pair by running all C^N inputs (independent of the engine)."""
    c = model.cfg.d_vocab
    tokens = all_inputs(0, c**n, n, c)
    with torch.no_grad():
        right = right_positions(model(tokens), tokens)
    rows, positions = (~right).nonzero(as_tuple=True)
    return {(tuple(tokens[r].tolist()), int(p)) for r, p in zip(rows.tolist(), positions.tolist())}


def region_set(regions, n: int, c: int) -> set[tuple[tuple[int, ...], int]]:
    out = set()
    for region in regions:
        fixed = dict(region.constraints)
        choices = [fixed.get(p, tuple(range(c))) for p in range(n)]
        out |= {(t, region.position) for t in itertools.product(*choices)}
    return out


@pytest.fixture(scope="module")
def models_() -> dict[str, HookedReverseEncoder]:
    """Small enumerable models: stopped early (some inputs wrong) and trained, in several shapes."""
    return {
        "post_sin_early": train_tiny(30, d_vocab=3, n_ctx=6, d_model=16),
        "post_sin_trained": train_tiny(150, d_vocab=3, n_ctx=6, d_model=16),
        "pre_learned_2heads_odd": train_tiny(40, seed=1, d_vocab=3, n_ctx=7, d_model=8, n_heads=2,
                                             normalization="pre", positional_embedding="learned"),
        "post_none_c4": train_tiny(25, seed=2, d_vocab=4, n_ctx=6, d_model=12, positional_embedding="none"),
        "random_post_2heads": make_model(seed=3, d_vocab=3, n_ctx=5, d_model=8, n_heads=2),
    }  # fmt: skip


@pytest.fixture(scope="module")
def truths(models_) -> dict[str, object]:
    return {name: certify(m, method="enumeration") for name, m in models_.items()}


@pytest.fixture(scope="module")
def proofs(models_) -> dict[str, object]:
    return {name: certify(m, method="proof", budget_seconds=120) for name, m in models_.items()}


NAMES = ["post_sin_early", "post_sin_trained", "pre_learned_2heads_odd", "post_none_c4", "random_post_2heads"]


@pytest.mark.parametrize("name", NAMES)
def test_proof_bounds_contain_the_enumerated_accuracy(name, models_, truths, proofs):
    model, truth, proof = models_[name], truths[name], proofs[name]
    n = model.cfg.n_ctx
    assert proof.method == "proof" and truth.method == "enumeration"
    wrong = wrong_set(model, n)
    assert truth.wrong_count_lower == truth.wrong_count_upper == len(wrong)
    assert proof.wrong_count_lower <= len(wrong) <= proof.wrong_count_upper
    assert proof.per_digit_lower <= truth.per_digit_lower <= proof.per_digit_upper
    assert proof.sequence_lower <= truth.sequence_lower <= proof.sequence_upper
    assert proof.sequence_right_lower <= truth.sequence_right_lower <= proof.sequence_right_upper
    # Every region proven wrong is wrong everywhere, and each cell's counts are inside the truth's.
    assert region_set(proof.wrong_regions, n, model.cfg.d_vocab) <= wrong
    for p_cell, t_cell in zip(proof.cells, truth.cells, strict=True):
        assert (p_cell.position, p_cell.own, p_cell.flipped) == (t_cell.position, t_cell.own, t_cell.flipped)
        assert p_cell.right <= t_cell.right and p_cell.wrong <= t_cell.wrong
    # Listed examples are wrong under the model's own forward.
    for example in proof.wrong_examples:
        tokens = torch.tensor([example["tokens"]])
        assert not right_positions(model(tokens), tokens)[0, example["position"]]
    json.dumps(proof.to_dict())


def test_where_bounds_meet_the_census_is_the_wrong_set(models_, proofs):
    """In every cell the proof resolves, its regions are exactly the enumerated wrong pairs of that cell;
    the trained model is resolved whole (no wrong pair), the early ones almost (what is left are single
    inputs whose margin is within the float32 error bound)."""
    for name in ("post_sin_early", "post_sin_trained", "post_none_c4", "pre_learned_2heads_odd"):
        model, proof = models_[name], proofs[name]
        n, c = model.cfg.n_ctx, model.cfg.d_vocab
        assert proof.regions_complete
        census, wrong = region_set(proof.wrong_regions, n, c), wrong_set(model, n)
        for cell in proof.cells:
            if cell.status == "unresolved":
                continue

            def in_cell(pair, cell=cell, n=n):
                return (
                    pair[1] == cell.position
                    and pair[0][cell.position] == cell.own
                    and (pair[0][n - 1 - cell.position] == cell.flipped)
                )

            assert {p for p in census if in_cell(p)} == {p for p in wrong if in_cell(p)}, (name, cell)
        left = proof.wrong_count_upper - proof.wrong_count_lower
        assert left <= proof.details["undecided_single_inputs"], name
        assert left <= 0.01 * proof.pairs, name
        if proof.resolved:
            assert census == wrong
    assert proofs["post_sin_early"].wrong_count_lower > 100
    trained = proofs["post_sin_trained"]
    assert trained.resolved and trained.per_digit_lower == trained.per_digit_upper == 1.0
    assert trained.sequence_lower == 1.0


def test_enumeration_matches_an_independent_count(models_, truths):
    model, truth = models_["post_sin_early"], truths["post_sin_early"]
    wrong = wrong_set(model, 6)
    assert truth.inputs == 3**6 and truth.pairs == 6 * 3**6
    assert truth.per_digit_lower == truth.per_digit_upper == pytest.approx(1 - len(wrong) / truth.pairs)
    sequences_wrong = {t for t, _ in wrong}
    assert truth.sequence_right_lower == 3**6 - len(sequences_wrong)
    assert region_set(truth.wrong_regions, 6, 3) == wrong and truth.regions_complete
    assert sum(c.wrong for c in truth.cells) == len(wrong)


def constant_output_model(digit: int | None, **overrides) -> HookedReverseEncoder:
    """The head's last Linear has zero weights: every input gets the same logits, ``bias`` = 5·e_digit
    (or all zero when digit is None: a tie everywhere)."""
    model = make_model(seed=5, **overrides)
    with torch.no_grad():
        model.head.fc_out.weight.zero_()
        model.head.fc_out.bias.zero_()
        if digit is not None:
            model.head.fc_out.bias[digit] = 5.0
    return model


def test_hand_built_models_with_known_accuracy():
    """Output always 1: right exactly where the target is 1 (per-digit 1/C, sequence 1/C^N: all ones).
    All logits equal: every argmax is a tie, which counts as wrong (accuracy 0)."""
    kw = dict(d_vocab=3, n_ctx=5, d_model=8)
    for method in ("enumeration", "proof"):
        cert = certify(constant_output_model(1, **kw), method=method)
        assert cert.per_digit_lower == cert.per_digit_upper == pytest.approx(1 / 3)
        assert cert.sequence_right_lower == cert.sequence_right_upper == 1
        assert cert.wrong_count_lower == 5 * 3**5 * 2 // 3
    tie = certify(constant_output_model(None, **kw), method="enumeration")
    assert tie.per_digit_upper == 0.0 and tie.sequence_upper == 0.0 and tie.wrong_count_lower == 5 * 3**5
    proof = certify(constant_output_model(None, **kw), method="proof", budget_seconds=30)
    assert proof.per_digit_lower == 0.0  # never "proven right" on a tie


def test_theorem_columns_against_enumeration(models_):
    """min_weight is the smallest flipped-key weight the model puts over the cell's inputs; every input
    whose flipped-key weight reaches guarantee_weight is right; an inert position never changes whether
    the output is right."""
    model = models_["post_sin_early"]
    n, c = 6, 3
    proof = certify(model, method="proof", budget_seconds=60)
    tokens = all_inputs(0, c**n, n, c)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
        right = right_positions(model(tokens), tokens)
    pattern = cache["blocks.0.attn.hook_pattern"][:, 0]  # [inputs, query, key]
    checked_guarantee = 0
    for cell in proof.cells:
        i, j = cell.position, n - 1 - cell.position
        members = (tokens[:, i] == cell.own) & (tokens[:, j] == cell.flipped)
        weight = pattern[members, i, j].double()
        assert cell.min_weight == pytest.approx(float(weight.min()), abs=1e-5)
        if cell.guarantee_weight is not None:
            assert cell.guarantee_weight <= 1.0
            strong = weight >= cell.guarantee_weight + 1e-5
            assert bool(right[members, i][strong].all())
            checked_guarantee += int(strong.sum())
        assert cell.inert_positions is not None
        for p in cell.inert_positions:
            sub = tokens[members]
            outcome = right[members, i]
            key = torch.cat([sub[:, :p], sub[:, p + 1 :]], 1)
            groups: dict[tuple[int, ...], set[bool]] = {}
            for k, o in zip(key.tolist(), outcome.tolist()):
                groups.setdefault(tuple(k), set()).add(o)
            assert all(len(v) == 1 for v in groups.values()), (cell, p)
    assert checked_guarantee > 0
    assert any(cell.inert_positions for cell in proof.cells)


def test_the_float32_error_bound_covers_the_forward(models_):
    """|float32 resid_mid − float64 resid_mid| ≤ mid_error on every input of a small model, also on
    this machine's other kernel paths (the bound holds for any summation order)."""
    model = models_["post_sin_early"]
    net = build_network(model, 6)
    tokens = all_inputs(0, 3**6, 6, 3)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter="blocks.0.hook_resid_mid")
        exact = copy.deepcopy(model).double()
        _, cache64 = exact.run_with_cache(tokens, names_filter="blocks.0.hook_resid_mid")
    diff = (cache["blocks.0.hook_resid_mid"].double() - cache64["blocks.0.hook_resid_mid"]).abs()
    bound = net.mid_error[torch.arange(6), tokens]  # [inputs, N, d]
    assert bool((diff <= bound).all())
    assert float((diff / bound).max()) > 1e-4  # the bound is not vacuous by orders of magnitude


MUTATION_CASES = ["drop_softmax_term", "assume_ln_variance", "ignore_bias"]


def mutation_model(mutation: str) -> HookedReverseEncoder:
    """A model on which the mutation matters: attention on the own key (dropped term), a LayerNorm input
    whose variance varies across a cell (variance floor), a large attention output bias (bias)."""
    model = make_model(seed=7, d_vocab=3, n_ctx=5, d_model=8)
    with torch.no_grad():
        if mutation == "ignore_bias":
            model.blocks[0].attn.o_proj.bias.mul_(10)
        if mutation == "drop_softmax_term":
            model.blocks[0].attn.o_proj.weight.mul_(3)
    return model


def true_margin_ranges(model, n: int):
    """Per cell, min and max over its inputs of the float32 margins logit_b − logit_c [cells, C]."""
    c = model.cfg.d_vocab
    tokens = all_inputs(0, c**n, n, c)
    with torch.no_grad():
        logits = model(tokens).double()
    target = tokens.flip(-1)
    margins = logits.gather(-1, target.unsqueeze(-1)) - logits  # [inputs, N, C]
    cell = (torch.arange(n) * c + tokens) * c + target
    lo = torch.full((n * c * c, c), float("inf"), dtype=torch.float64)
    hi = torch.full((n * c * c, c), -float("inf"), dtype=torch.float64)
    flat = cell.flatten()
    lo = lo.scatter_reduce(0, flat[:, None].expand(-1, c), margins.reshape(-1, c), "amin")
    hi = hi.scatter_reduce(0, flat[:, None].expand(-1, c), margins.reshape(-1, c), "amax")
    return lo, hi


def margin_bounds_contain(model, n: int) -> bool:
    cells, lower, upper = cell_margin_bounds(model, n)
    c = model.cfg.d_vocab
    lo, hi = true_margin_ranges(model, n)
    index = (cells[:, 0] * c + cells[:, 1]) * c + cells[:, 2]
    other = ~torch.nn.functional.one_hot(cells[:, 2], c).bool()
    return bool(((lower <= lo[index]) | ~other).all() and ((hi[index] <= upper) | ~other).all())


@pytest.mark.parametrize("mutation", MUTATION_CASES)
def test_mutations_make_the_soundness_checks_fail(mutation):
    model = mutation_model(mutation)
    truth = certify(model, method="enumeration")
    assert margin_bounds_contain(model, 5)
    sound = certify(model, method="proof", budget_seconds=30)
    assert sound.wrong_count_lower <= truth.wrong_count_lower <= sound.wrong_count_upper
    MUTATIONS.add(mutation)
    try:
        assert not margin_bounds_contain(model, 5)
    finally:
        MUTATIONS.discard(mutation)


def test_an_ignored_bias_gives_an_unsound_certificate(models_):
    """A trained model with a large attention output bias is mostly wrong; ignoring the bias "proves" it
    right."""
    model = copy.deepcopy(models_["post_sin_trained"])
    with torch.no_grad():
        model.blocks[0].attn.o_proj.bias.copy_(
            3 * torch.randn(16, generator=torch.Generator().manual_seed(1))
        )
    truth = certify(model, method="enumeration")
    MUTATIONS.add("ignore_bias")
    try:
        mutated = certify(model, method="proof", budget_seconds=30)
    finally:
        MUTATIONS.discard("ignore_bias")
    assert not mutated.wrong_count_lower <= truth.wrong_count_lower <= mutated.wrong_count_upper


def test_unsupported_models_say_why_in_one_line():
    with pytest.raises(CertificateUnsupported) as info:
        certify(make_model(n_layers=2, d_vocab=3, n_ctx=4, d_model=8))
    message = str(info.value)
    assert "\n" not in message and "1-layer" in message and "2 layers" in message
    assert isinstance(info.value, ValueError)
    with pytest.raises(CertificateUnsupported, match="training mode"):
        certify(make_model(d_vocab=3, n_ctx=4, d_model=8).train())
    with pytest.raises(CertificateUnsupported, match="method must be one of"):
        certify(make_model(d_vocab=3, n_ctx=4, d_model=8), method="sampling")
    with pytest.raises(CertificateUnsupported, match="seq_len 9 exceeds"):
        certify(make_model(d_vocab=3, n_ctx=4, d_model=8, positional_embedding="learned"), seq_len=9)


def test_auto_enumerates_small_models_and_proves_large_ones(models_):
    small = models_["post_sin_early"]
    assert choose_method(small, 6) == "enumeration"
    assert certify(small).method == "enumeration"
    assert choose_method(make_model(), 16) == "proof"
    # Multi-head theorem columns are not computed, and the certificate says why in one line.
    proof = certify(models_["random_post_2heads"], method="proof", budget_seconds=30)
    assert proof.unsupported is not None and "1 head" in proof.unsupported
    assert all(cell.guarantee_weight is None and cell.min_weight is None for cell in proof.cells)


def test_regions_and_census_compression():
    region = Region.make(2, {4: [7], 5: [3, 7]}, seq_len=6, num_categories=10)
    assert region.count == 10**4 * 2 and region.pattern(6) == "****7[3,7]"
    assert region.contains([0, 0, 0, 0, 7, 3]) and not region.contains([0, 0, 0, 0, 7, 4])
    assert branch_order(1, 6) == [1, 4, 3, 5, 2, 0]
    assert branch_order(2, 5) == [2, 1, 3, 0, 4]  # the middle query: own key = flipped key
    # A set that is a full subtree plus one stray input compresses to two regions with the right counts.
    full = [[0, a, b, 1] for a in range(2) for b in range(2)]
    stray = [[1, 0, 0, 0]]
    regions = compress(0, torch.tensor(full + stray).numpy(), 2)
    assert sorted(r.count for r in regions) == [1, 4]
    assert region_set(regions, 4, 2) == {(tuple(t), 0) for t in full + stray}
