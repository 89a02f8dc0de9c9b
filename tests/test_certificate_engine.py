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
from interp.certificate.proof import region_margin_bounds
from interp.certificate.relax import Contexts, Counter, Graph, Op, variance_bounds
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
    return {
        name: certify(m, method="proof", budget_seconds=120, max_regions=100_000)
        for name, m in models_.items()
    }


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
    assert truth.wrong_count_lower == truth.wrong_count_upper == len(wrong)
    assert truth.per_digit_lower <= 1 - len(wrong) / truth.pairs <= truth.per_digit_upper
    assert truth.per_digit_upper - truth.per_digit_lower <= 2e-16
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
        assert cert.per_digit_lower <= 1 / 3 <= cert.per_digit_upper
        assert cert.per_digit_lower == pytest.approx(1 / 3, abs=1e-15)
        assert cert.wrong_count_lower == cert.wrong_count_upper == 5 * 3**5 * 2 // 3
        assert cert.sequence_right_lower <= 1 <= cert.sequence_right_upper  # the union bound is not exact
    assert certify(constant_output_model(1, **kw), method="enumeration").sequence_right_lower == 1
    tie = certify(constant_output_model(None, **kw), method="enumeration")
    assert tie.per_digit_upper == 0.0 and tie.sequence_upper == 0.0 and tie.wrong_count_lower == 5 * 3**5
    proof = certify(constant_output_model(None, **kw), method="proof", budget_seconds=30)
    assert proof.per_digit_lower == 0.0  # never "proven right" on a tie


def test_theorem_columns_against_enumeration(models_):
    """min_weight is the smallest flipped-key weight the model puts over the cell's inputs, in exact
    arithmetic (equal to the float64 forward's to 1e-12, not the float32 forward's); with guarantee_weight
    on the flipped key and the rest of the attention anywhere else (vertices and random mixtures,
    patterns patched into the float32 forward), every output is right; an inert position never changes
    whether the output is right."""
    from interp.ablation import replace_pattern

    model = models_["post_sin_trained"]
    n, c = 6, 3
    proof = certify(model, method="proof", budget_seconds=60)
    tokens = all_inputs(0, c**n, n, c)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
        right = right_positions(model(tokens), tokens)
    pattern = cache["blocks.0.attn.hook_pattern"][:, 0]  # [inputs, query, key]
    # Exact arithmetic after the embedding, which the engine takes bit-exactly as float32 computes it.
    with torch.no_grad():
        _, cache32 = model.run_with_cache(tokens, names_filter="blocks.0.hook_resid_pre")
        resid32 = cache32["blocks.0.hook_resid_pre"].double()
        model64 = copy.deepcopy(model).double()
        with model64.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", lambda x, hook: resid32)]):
            _, cache64 = model64.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
    pattern64 = cache64["blocks.0.attn.hook_pattern"][:, 0]
    assert float((pattern.double() - pattern64).abs().max()) > 1e-12  # float32 is not what min_weight is
    guarantee = torch.full((len(tokens), n), float("nan"))
    for cell in proof.cells:
        i, j = cell.position, n - 1 - cell.position
        members = (tokens[:, i] == cell.own) & (tokens[:, j] == cell.flipped)
        weight = pattern[members, i, j].double()
        assert cell.min_weight == pytest.approx(float(weight.min()), abs=1e-5)
        # min_weight is the exact-arithmetic minimum (no float32 allowance): the float64 forward's weight.
        exact_weight = pattern64[members, i, j]
        assert cell.min_weight == pytest.approx(float(exact_weight.min()), rel=1e-12)
        assert cell.guarantee_weight is not None and 0 < cell.guarantee_weight <= 1
        guarantee[members, i] = cell.guarantee_weight
        assert cell.inert_positions is not None
        for p in cell.inert_positions:
            sub, outcome = tokens[members], right[members, i]
            groups: dict[tuple[int, ...], set[bool]] = {}
            for k, o in zip(torch.cat([sub[:, :p], sub[:, p + 1 :]], 1).tolist(), outcome.tolist()):
                groups.setdefault(tuple(k), set()).add(o)
            assert all(len(v) == 1 for v in groups.values()), (cell, p)
    assert all(cell.inert_positions for cell in proof.cells)  # trained: every cell right, nothing matters
    flip = torch.nn.functional.one_hot(torch.arange(n - 1, -1, -1), n).float()  # [query, key]: e_j
    torch.manual_seed(0)
    rests = [torch.nn.functional.one_hot(torch.full((n,), k), n).float() for k in range(n)]
    rests += [torch.distributions.Dirichlet(torch.ones(n)).sample((n,)) for _ in range(3)]
    for rest in rests:
        rest = rest * (1 - flip)  # the rest of the attention on the other keys only
        rest = torch.where(rest.sum(-1, keepdim=True) > 0, rest, 1 - flip)
        rest = rest / rest.sum(-1, keepdim=True)
        new = (
            guarantee[..., None].float() * flip + (1 - guarantee[..., None].float()) * rest
        )  # [inputs, q, k]
        with replace_pattern(model, 0, 0, lambda _, new=new: new), torch.no_grad():
            assert bool(right_positions(model(tokens), tokens).all())


def test_the_float32_error_bound_covers_the_forward(models_):
    """|float32 resid_mid − float64 resid_mid| ≤ mid_error on every input of a small model (the bound holds
    for any summation order, so also under ATEN_CPU_CAPABILITY=avx2 or default)."""
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


def one_free_regions(n: int, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every region with exactly one free key (digit set to 0 in the listed input, then freed), at every
    query: digits [R, N] (−1 free) and query [R]."""
    rows, queries = [], []
    for t in itertools.product(range(c), repeat=n):
        for i in range(n):
            for f in range(n):
                if f not in (i, n - 1 - i) and t[f] == 0:
                    rows.append([-1 if p == f else t[p] for p in range(n)])
                    queries.append(i)
    return torch.tensor(rows), torch.tensor(queries)


def margin_violations(model, n: int) -> int:
    """How many (region, digit, completion) margins of the float32 forward fall outside the engine's bounds,
    over every one-free-key region (small sets: the bounds are tight, so a wrong bound shows)."""
    c = model.cfg.d_vocab
    digits, query = one_free_regions(n, c)
    lower, upper = region_margin_bounds(model, digits, query)
    tokens = all_inputs(0, c**n, n, c)
    with torch.no_grad():
        logits = model(tokens).double()
    margins = logits.gather(-1, tokens.flip(-1).unsqueeze(-1)) - logits  # [inputs, N, C]
    powers = c ** torch.arange(n - 1, -1, -1)
    bad = 0
    for v in range(c):
        completed = torch.where(digits < 0, v, digits)
        m = margins[(completed * powers).sum(-1), query]
        other = ~torch.nn.functional.one_hot(completed[torch.arange(len(query)), n - 1 - query], c).bool()
        bad += int((((m < lower) | (m > upper)) & other).sum())
    return bad


@pytest.mark.parametrize("mutation", ["drop_softmax_term", "ignore_bias"])
def test_mutations_of_the_bound_break_soundness(mutation):
    """Dropping the query's own key from the softmax, or the attention output bias, gives margin bounds that
    the model's forward violates; the engine's own bounds hold on every one of them."""
    model = make_model(seed=7, d_vocab=3, n_ctx=5, d_model=8)
    assert margin_violations(model, 5) == 0
    MUTATIONS.add(mutation)
    try:
        assert margin_violations(model, 5) > 0
    finally:
        MUTATIONS.discard(mutation)


def test_the_layer_norm_variance_bound_is_proven_not_assumed():
    """The variance lower bound holds at every point of a set whose variance varies 10^4-fold; assuming a
    floor (half the upper bound) breaks it."""
    values = torch.tensor(
        [
            [
                [[1.0, -1.0, 2.0, -2.0], [0.02, 0.01, -0.01, -0.02]],
                [[0.01, 0.0, 0.0, -0.01], [0.0, 0.0, 0.0, 0.0]],
            ]
        ],
        dtype=torch.float64,
    )  # [H=1, N=2, C=2, d=4]
    weights = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    allowed = torch.ones(1, 2, 2, dtype=torch.bool)
    points = torch.stack([(values[0, 0, a] + values[0, 1, b]) / 2 for a in range(2) for b in range(2)])
    centred = points - points.mean(-1, keepdim=True)
    true_min, true_max = centred.pow(2).mean(-1).min(), centred.pow(2).mean(-1).max()
    assert true_max / true_min > 1e3

    def bounds() -> tuple[float, float]:
        g = Graph(Contexts(weights, values, allowed, Counter()), 4, 1, Counter())
        zero = torch.zeros(1, 4, dtype=torch.float64)
        x = g.add(Op((0,), "dense", torch.eye(4, dtype=torch.float64), zero, zero, zero))
        c = g.add(Op((x,), "centre", None, zero, zero, zero))
        _, _, var_lo, var_hi = variance_bounds(g, c)
        return float(var_lo), float(var_hi)

    var_lo, var_hi = bounds()
    assert var_lo <= true_min and true_max <= var_hi
    MUTATIONS.add("assume_ln_variance")
    try:
        assert bounds()[0] > true_min
    finally:
        MUTATIONS.discard("assume_ln_variance")


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
    # The float32 CPU forward is what the proof covers: another dtype, a submodule left training or a
    # forward hook computes another function (a bf16 model was once "proven" wrong where it was right).
    with pytest.raises(CertificateUnsupported, match="float32 models on the CPU"):
        certify(make_model(d_vocab=3, n_ctx=4, d_model=8).to(torch.bfloat16))
    partly = make_model(d_vocab=3, n_ctx=4, d_model=8)
    partly.head.train()
    with pytest.raises(CertificateUnsupported, match="training mode"):
        certify(partly)
    hooked = make_model(d_vocab=3, n_ctx=4, d_model=8)
    hooked.blocks[0].attn.hook_pattern.add_hook(lambda pattern, hook: pattern * 0.5)
    with pytest.raises(CertificateUnsupported, match="forward hooks"):
        certify(hooked)
    hooked.reset_hooks()
    assert certify(hooked, method="enumeration").method == "enumeration"


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


def test_progress_reports_every_batch(models_):
    seen: list[dict] = []
    certify(models_["post_sin_trained"], method="proof", theorems=False, batch_size=16, progress=seen.append)
    assert len(seen) > 1 and all(a["boxes"] < b["boxes"] for a, b in zip(seen, seen[1:]))
    assert all(0 <= s["right"] + s["wrong"] <= s["pairs"] == 6 * 3**6 for s in seen)


def test_seeds_put_suspected_inputs_in_the_census_once(models_, proofs):
    """Dives from wrong inputs find proven-wrong regions around them with no budget for the search; with
    the full search the counts are those without seeds (no region counted twice)."""
    model = models_["post_sin_early"]
    wrong = sorted(wrong_set(model, 6))
    seeds = [list(t) for t, _ in wrong[::200]]
    quick = certify(model, method="proof", budget_seconds=0.0, theorems=False, seeds=seeds)
    census = region_set(quick.wrong_regions, 6, 3)
    assert census and census <= set(wrong) and quick.wrong_count_lower == len(census)
    assert any(pair[0] in {tuple(s) for s in seeds} for pair in census)
    full = certify(model, method="proof", theorems=False, seeds=seeds, max_regions=100_000)
    alone = proofs["post_sin_early"]
    assert (full.wrong_count_lower, full.wrong_count_upper) == (
        alone.wrong_count_lower,
        alone.wrong_count_upper,
    )
    assert region_set(full.wrong_regions, 6, 3) == region_set(alone.wrong_regions, 6, 3)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_short_sequences_where_cells_have_few_free_keys(n):
    """Cells with zero, one or two free keys (the first split takes two positions when it can)."""
    model = make_model(seed=1, d_vocab=3, n_ctx=n, d_model=8)
    truth, proof = certify(model, method="enumeration"), certify(model, method="proof")
    assert proof.wrong_count_lower <= truth.wrong_count_lower <= proof.wrong_count_upper
    assert proof.sequence_right_lower <= truth.sequence_right_lower <= proof.sequence_right_upper


def test_tutorial_checkpoint_formats_certify_like_the_model(models_, proofs, tmp_path):
    """The early model saved in the tutorial's PyTorch Lightning format and (LayerNorm eps 1e-6) in its
    Flax format, loaded through models.load_model, certifies with the same counts / inside enumeration."""
    from test_checkpoints import tutorial_checkpoint

    from models import load_model
    from models.storage.checkpoints import to_flax_tree, to_tutorial_state_dict, write_flax_msgpack

    model = models_["post_sin_early"]
    ckpt = tutorial_checkpoint(to_tutorial_state_dict(model), n_heads=1, n_layers=1)
    ckpt["hyper_parameters"].update(input_dim=3, model_dim=16, num_classes=3)
    torch.save(ckpt, tmp_path / "tutorial.ckpt")
    with pytest.warns(UserWarning, match="near chance"):  # checked at the default length 16; early model
        loaded = load_model(tmp_path / "tutorial.ckpt")
    proof, reference = certify(loaded, seq_len=6, method="proof"), proofs["post_sin_early"]
    assert (proof.wrong_count_lower, proof.wrong_count_upper) == (
        reference.wrong_count_lower,
        reference.wrong_count_upper,
    )
    flax_model = copy.deepcopy(model)
    flax_model.cfg.layer_norm_eps = 1e-6
    for norm in (flax_model.blocks[0].ln1, flax_model.blocks[0].ln2, flax_model.head.ln):
        norm.eps = 1e-6
    write_flax_msgpack(to_flax_tree(flax_model), tmp_path / "tutorial.msgpack")
    with pytest.warns(UserWarning, match="near chance"):
        loaded = load_model(tmp_path / "tutorial.msgpack", n_heads=1)
    truth = certify(loaded, seq_len=6, method="enumeration")
    proof = certify(loaded, seq_len=6, method="proof")
    assert proof.wrong_count_lower <= truth.wrong_count_lower <= proof.wrong_count_upper
    assert proof.wrong_count_upper - proof.wrong_count_lower <= 0.01 * proof.pairs


def test_max_boxes_is_a_deterministic_work_budget(models_):
    """The same max_boxes gives the same bounds and census (whatever the seconds budget left); a larger
    max_boxes never gives looser bounds; the result says which budget stopped the proof."""
    model = models_["post_sin_early"]

    def run(max_boxes):
        cert = certify(model, method="proof", theorems=False, batch_size=64, max_boxes=max_boxes,
                       budget_seconds=1e6)  # fmt: skip
        census = [(c.right, c.wrong) for c in cert.cells], [r.to_dict() for r in cert.wrong_regions]
        return cert, census

    runs = {m: run(m) for m in (150, 150, 301, 700)} | {None: run(None)}
    again = run(150)
    assert again[1] == runs[150][1] and again[0].boxes == 150
    assert (again[0].per_digit_lower, again[0].per_digit_upper) == (
        runs[150][0].per_digit_lower,
        runs[150][0].per_digit_upper,
    )
    assert (again[0].sequence_lower, again[0].sequence_upper) == (
        runs[150][0].sequence_lower,
        runs[150][0].sequence_upper,
    )
    chain = [runs[m][0] for m in (150, 301, 700, None)]
    for small, large in zip(chain, chain[1:]):
        assert small.wrong_count_lower <= large.wrong_count_lower
        assert small.wrong_count_upper >= large.wrong_count_upper
        assert small.per_digit_lower <= large.per_digit_lower
        assert small.per_digit_upper >= large.per_digit_upper
        for a, b in zip(small.cells, large.cells, strict=True):
            assert a.right <= b.right and a.wrong <= b.wrong
    gaps = [c.wrong_count_upper - c.wrong_count_lower for c in chain]
    assert gaps[0] > gaps[-1]  # the budget bites
    assert [c.details["stopped_by"] for c in chain] == ["max_boxes"] * 3 + ["done"]
    assert [c.boxes for c in chain[:3]] == [150, 301, 700] and chain[-1].boxes > 700
    timed_out = certify(model, method="proof", theorems=False, budget_seconds=0.0)
    assert timed_out.details["stopped_by"] == "seconds"
    with pytest.raises(CertificateUnsupported, match="max_boxes"):
        certify(model, method="proof", max_boxes=-1)


def test_dinkelbach_covers_its_own_float64_rounding():
    """Against exact rational arithmetic (every choice enumerated with Fractions) on linear-fractional
    problems whose terms (~10^8) cancel: the bound never exceeds the true minimum; without the float64
    allowance (mutation) it does, for many problems."""
    from fractions import Fraction

    from interp.certificate import ratio

    g = torch.Generator().manual_seed(0)
    count, n, c = 200, 3, 3
    y = (torch.randn(count, n, c, generator=g, dtype=torch.float64) * 1e8).round()
    y = y + torch.rand(count, n, c, generator=g, dtype=torch.float64)
    w = torch.rand(count, n, c, generator=g, dtype=torch.float64) + 0.1
    allowed = torch.ones_like(y, dtype=torch.bool)

    def exact_min(yk, wk):
        yf = [[Fraction(v) for v in row] for row in yk.tolist()]
        wf = [[Fraction(v) for v in row] for row in wk.tolist()]
        return min(
            sum(wf[p][t[p]] * yf[p][t[p]] for p in range(n)) / sum(wf[p][t[p]] for p in range(n))
            for t in itertools.product(range(c), repeat=n)
        )

    truth = [exact_min(y[k], w[k]) for k in range(count)]

    def violations() -> int:
        lower = ratio.min_ratio(y, w, allowed)[0].tolist()
        return sum(Fraction(lo) > t for lo, t in zip(lower, truth))

    assert violations() == 0
    ratio.MUTATIONS.add("drop_dinkelbach_rounding")
    try:
        assert violations() > 10
    finally:
        ratio.MUTATIONS.discard("drop_dinkelbach_rounding")


def variance_trap(scale: float = 10.0) -> HookedReverseEncoder:
    """A pre-LN model (C = 2, N = 4, d = 4) built by hand so that the head's LayerNorm input is an exact
    affine function of the attention output that takes the values A = (3, −1, −1, −1) (variance 3) on
    0000 and B = (0, s, −s, 0) (variance s²/2) on 0110, both in the cell (query 0, own 0, flipped 0):
    uniform attention (q = k = 0), values LN1(e_t), o_proj mapping z(0000) ↦ A, z(0110) ↦ B, no MLP,
    head_in = I, output logit_0 = 2·ReLU(LN(·))_0, logit_1 = 1. Within a region the variance varies
    ~s²/6-fold, so a variance floor that is assumed rather than proven is false there."""
    model = make_model(
        seed=0, d_vocab=2, n_ctx=4, d_model=4, positional_embedding="none", normalization="pre"
    )
    d = 4
    eye = torch.eye(d)
    a_point, b_point = torch.tensor([3.0, -1, -1, -1]), torch.tensor([0.0, scale, -scale, 0])
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.proj.weight.copy_(eye[:, :2])
        model.blocks[0].attn.qkv_proj.weight[2 * d :].copy_(eye)
        for norm in (model.blocks[0].ln1, model.blocks[0].ln2, model.head.ln):
            norm.w.fill_(1.0)
        model.head.fc_in.weight.copy_(eye)
        model.head.fc_out.weight[0, 0] = 2.0
        model.head.fc_out.bias[1] = 1.0
        _, at_a = model.run_with_cache(torch.tensor([[0, 0, 0, 0]]))
        _, at_b = model.run_with_cache(torch.tensor([[0, 1, 1, 0]]))
        z_a, z_b = (c["blocks.0.attn.hook_z"][0, 0].flatten() for c in (at_a, at_b))
        o = torch.outer(b_point - a_point, z_b - z_a) / (z_b - z_a).dot(z_b - z_a)
        model.blocks[0].attn.o_proj.weight.copy_(o)
        model.blocks[0].attn.o_proj.bias.copy_(a_point - eye[0] - o @ z_a)
    return model.eval()


def cell_violations(model) -> int:
    """How many (cell, input, digit) margins of the float32 forward fall outside the engine's bounds for
    the whole cell (every cell of the model, every input enumerated)."""
    from interp.certificate.proof import _cells

    n, c = model.cfg.n_ctx, model.cfg.d_vocab
    query, own, flipped, digits = _cells(n, c)
    lower, upper = region_margin_bounds(model, digits, query)
    tokens = all_inputs(0, c**n, n, c)
    with torch.no_grad():
        logits = model(tokens).double()
    margins = logits.gather(-1, tokens.flip(-1).unsqueeze(-1)) - logits
    bad = 0
    for k in range(len(query)):
        i = int(query[k])
        members = (tokens[:, i] == own[k]) & (tokens[:, n - 1 - i] == flipped[k])
        m = margins[members, i]
        other = torch.arange(c) != flipped[k]
        bad += int((((m < lower[k]) | (m > upper[k])) & other).sum())
    return bad


def test_an_assumed_layer_norm_variance_floor_breaks_the_pipeline():
    """In the full pipeline (region → attention → LayerNorm → ReLU → logits), against enumeration: the
    engine's cell bounds hold on the variance trap; assuming the variance ≥ half its upper bound
    (mutation) gives bounds the forward violates."""
    model = variance_trap()
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.tensor([[0, 0, 0, 0], [0, 1, 1, 0]]))
    pre = cache["head.hook_pre"][:, 0].double()
    variance = (pre - pre.mean(-1, keepdim=True)).pow(2).mean(-1)
    assert variance.tolist() == pytest.approx([3.0, 50.0], rel=1e-5)
    assert cell_violations(model) == 0
    MUTATIONS.add("assume_ln_variance")
    try:
        assert cell_violations(model) > 0
    finally:
        MUTATIONS.discard("assume_ln_variance")


def test_influence_order_branches_on_the_keys_that_move_attention_most(models_):
    """Per (query, own digit): the cell's own and flipped keys first, then every other key once, by
    decreasing spread of its attention weight over its digits (relative to the query's total); the
    proof's bounds with this order are checked against enumeration above."""
    from interp.certificate.proof import influence_order

    model = models_["pre_learned_2heads_odd"]
    n, c = 7, 3
    net = build_network(model, n)
    order = influence_order(net)
    assert order.shape == (n, c, n)
    w = net.weights.double()
    differs = False
    for i, a in itertools.product(range(n), range(c)):
        path = order[i, a].tolist()
        head = [i] if i == n - 1 - i else [i, n - 1 - i]
        assert path[: len(head)] == head and sorted(path) == list(range(n))
        spread = [
            sum(
                float((w[i, a, h, p].max() - w[i, a, h, p].min()) / w[i, a, h].amax(-1).sum())
                for h in range(2)
            )
            for p in range(n)
        ]
        rest = [spread[p] for p in path[len(head) :]]
        assert all(x >= y - 1e-12 for x, y in zip(rest, rest[1:]))  # (summed in another order here)
        differs |= path != branch_order(i, n)
    assert differs  # the order is the model's, not the distance rule
