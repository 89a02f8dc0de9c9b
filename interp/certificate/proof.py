"""The proof method: branch and bound over cells, sound for the model's float32 forward.

For a cell (query i, own digit a = t_i, flipped digit b = t_j, j = N−1−i) the other N−2 digits are
free. A *region* fixes some of them (in :func:`influence_order`: the keys whose digit moves the attention
first). For a batch of regions, :func:`margins` bounds every logit margin logit_b − logit_c over every
input of the region: the attention output z ranges over the exact set of its contexts (each free key
picks its digit independently; :class:`relax.Contexts`), everything after attention is relaxed
linearly in z (:mod:`relax`) and minimised exactly over that set. A region is *proven right* when every
margin's lower bound is > 0, *proven wrong* when some margin's upper bound is ≤ 0 (ties are wrong),
and split on its next position otherwise, until the budget runs out; a region holds C^(N − fixed)
inputs, counted exactly. Float32 rounding of the forward is inside every bound (see ``ARITHMETIC``).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from interp.certificate.census import branch_order
from interp.certificate.enumerate import cell_sizes, right_positions
from interp.certificate.floats import EXP_ULPS
from interp.certificate.model_parts import check_supported, flops_per_position
from interp.certificate.network import Network, build_network
from interp.certificate.relax import Contexts, Counter, Graph, Mixtures, Op, add, layer_norm, linear, relu
from interp.certificate.result import Cell, Certificate, CertificateUnsupported, Region, cell_status, fraction

# Intermediate bounds minimised exactly over Z (tighter) rather than over the box of z (cheaper), per
# stage: LayerNorm inputs, MLP pre-activations, the head's ReLU inputs.
EXACT_STAGES = frozenset({"ln", "mlp"})

ARITHMETIC = (
    "float64 bounds on the exact function of the model's float32 weights (the embedding reproduced "
    "bit-exactly in float32), with every float32 operation of the forward covered by a propagated "
    "error bound: sums of n products within gamma_n = n*u/(1-n*u) of their sum of |terms| for any "
    "summation order (u = 2^-24), elementwise ops and sqrt within u, exp within "
    f"{EXP_ULPS} ulp, softmax, LayerNorm (variance proven >= a lower bound, eps included) and the "
    "residual adds as in floats.py; the proof's own float64 rounding covered by a 2^-30 relative "
    "allowance; right iff every margin's lower bound > 0, wrong iff some margin's upper bound <= 0 "
    "(argmax ties count as wrong); valid for the float32 forward on any IEEE-754 CPU"
)


def margins(
    net: Network,
    reach: Contexts | Mixtures,
    query: Tensor,
    own: Tensor,
    flipped: Tensor,
    counter: Counter,
    exact: frozenset[str] | None = None,
) -> tuple[Tensor, Tensor]:
    """Bounds [R, C] on logit_b − logit_c over the regions' reachable attention outputs (reach), for
    queries (i, a) = (query, own) [R] and b = flipped [R]; the b column is +inf in both. Intermediate
    bounds (ReLU slopes, LayerNorm variances) minimise exactly over Z in the stages named in ``exact``
    (default ``EXACT_STAGES``), else over the box of z; the margins always exactly."""
    exact = EXACT_STAGES if exact is None else exact
    ln_exact = "ln" in exact
    r = len(query)
    dz = net.n_heads * net.d_head
    o = net.o_proj
    g = Graph(reach, dz, r, counter)
    resid = net.resid[query, own]  # [R, d]
    err = net.mid_error[query, own]
    mid = g.add(Op((0,), "dense", o.weight, o.bias + resid, -err, err))
    v_mag = net.values.abs().amax(dim=(1, 2)).reshape(dz)
    mid_mag = resid.abs() + v_mag @ o.weight.abs().T + o.bias.abs() + err
    if net.normalization == "post":
        h, h_lo, h_hi = layer_norm(g, mid, net.ln1, mid_mag, ln_exact)
        h_mag = torch.maximum(h_lo.abs(), h_hi.abs())
        out, out_mag = _mlp(net, g, h, h_mag, "mlp" in exact)
        y_mag = h_mag + out_mag
        y = add(g, h, out, y_mag)
        x, x_lo, x_hi = layer_norm(g, y, net.ln2, y_mag, ln_exact)
        x_mag = torch.maximum(x_lo.abs(), x_hi.abs())
    else:
        h, h_lo, h_hi = layer_norm(g, mid, net.ln2, mid_mag, ln_exact)
        out, out_mag = _mlp(net, g, h, torch.maximum(h_lo.abs(), h_hi.abs()), "mlp" in exact)
        x_mag = mid_mag + out_mag
        x = add(g, mid, out, x_mag)
    p, p_mag = linear(g, x, net.head_in, x_mag)
    q, q_lo, q_hi = layer_norm(g, p, net.head_ln, p_mag, ln_exact)
    exact_lo, exact_hi = g.bounds(q, exact="head" in exact)
    q_lo, q_hi = torch.maximum(q_lo, exact_lo), torch.minimum(q_hi, exact_hi)
    act = relu(g, q, q_lo, q_hi)
    logits, _ = linear(g, act, net.head_out, q_hi.clamp(min=0))
    # Margins logit_b − logit_c: differences of the float32 logits themselves (no rounding).
    eye = torch.eye(net.num_categories, dtype=torch.float64)
    rows = eye[flipped][:, None, :] - eye[None]  # [R, C, C]: row c = e_b − e_c
    lower, upper = g.bounds(logits, rows)
    own_column = torch.nn.functional.one_hot(flipped, net.num_categories).bool()
    inf = torch.tensor(math.inf, dtype=torch.float64)
    return torch.where(own_column, inf, lower), torch.where(own_column, inf, upper)


def _mlp(net: Network, g: Graph, h: int, h_mag: Tensor, exact: bool) -> tuple[int, Tensor]:
    """MLP(h) = W_out ReLU(W_in h + b_in) + b_out: its node and a bound on its magnitude."""
    pre, _ = linear(g, h, net.mlp_in, h_mag)
    # Exact bounds only where the box bound leaves the unit's sign open: a stable unit's relaxation is
    # exact whatever its bounds (most units of a trained model in a small region are stable).
    pre_lo, pre_hi = g.bounds(pre, exact=exact, crossing_only=True)
    post = relu(g, pre, pre_lo, pre_hi)
    return linear(g, post, net.mlp_out, pre_hi.clamp(min=0))


def region_margin_bounds(model: Any, digits: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
    """Bounds [R, C] on the logit margins logit_b − logit_c at output ``query`` [R] over every input of
    each region ``digits`` [R, N] (−1: free; the query's own and flipped positions must be fixed), under
    the float32 forward, without branching; the b column is +inf."""
    n = check_supported(model, digits.shape[1])
    c = model.cfg.d_vocab
    rows = torch.arange(len(query))
    own, flipped = digits[rows, query], digits[rows, n - 1 - query]
    if bool((own < 0).any() or (flipped < 0).any()):
        raise ValueError("each region must fix its query's own and flipped positions")
    net = build_network(model, n)
    counter = Counter()
    with torch.no_grad():
        reach = Contexts(net.weights[query, own], net.values, _allowed(digits, c), counter)
        return margins(net, reach, query, own, flipped, counter)


def decide(lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """(right, wrong) [R]: every margin's lower bound > 0; some margin's upper bound ≤ 0."""
    return (lower > 0).all(-1), (upper <= 0).any(-1)


def _allowed(digits: Tensor, c: int) -> Tensor:
    """[R, N, C] bool from digits [R, N] (−1: free)."""
    free = (digits < 0).unsqueeze(-1)
    fixed = torch.nn.functional.one_hot(digits.clamp(min=0), c).bool()
    return free | fixed


def _cells(n: int, c: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Every cell as a region: query [R], own [R], flipped [R], digits [R, N]."""
    rows = [(i, a, b) for (i, a, b) in cell_sizes(n, c)]
    query = torch.tensor([r[0] for r in rows])
    own = torch.tensor([r[1] for r in rows])
    flipped = torch.tensor([r[2] for r in rows])
    digits = torch.full((len(rows), n), -1, dtype=torch.int64)
    digits[torch.arange(len(rows)), query] = own
    digits[torch.arange(len(rows)), n - 1 - query] = flipped
    return query, own, flipped, digits


def prove(
    model: Any,
    seq_len: int | None = None,
    *,
    budget_seconds: float = 600.0,
    max_boxes: int | None = None,
    max_examples: int = 20,
    max_regions: int = 10_000,
    theorems: bool = True,
    batch_size: int = 8192,
    progress: Callable[[dict[str, Any]], None] | None = None,
    seeds: Sequence[Sequence[int]] = (),
) -> Certificate:
    """Certify ``model`` over all C^N inputs by branch and bound (see the module docstring).

    Two budgets, whichever runs out first (``details["stopped_by"]`` says which: ``"done"``,
    ``"seconds"`` or ``"max_boxes"``): ``budget_seconds`` of wall time, and ``max_boxes`` regions bounded
    (seeds' dives included). The regions are processed in a fixed order that depends on the model and
    ``batch_size`` only, so the same model and ``max_boxes`` give the same bounds on one machine whatever
    its load (same torch thread count), and a larger ``max_boxes`` never gives looser bounds: the batch
    that reaches ``max_boxes`` is bounded whole, exactly as an unlimited run bounds it, and only its first
    regions up to ``max_boxes`` are counted.

    ``seeds``: inputs suspected wrong (e.g. an adversary's); for each seed and output position the proof
    first dives along the seed's path (its digits fixed in branch order, one position more per step) to
    the largest region proven wrong around it, so the census finds them whatever the budget; such a
    region is counted once, whether or not the breadth-first search reaches it.

    ``progress``, if given, is called after every batch with ``{"seconds", "boxes", "pending",
    "right", "wrong", "pairs"}`` (pairs proven right / wrong so far, of ``pairs`` = N·C^N).

    Regions are processed breadth first (all cells, then their undecided children, ...) in batches of
    ``batch_size``; when ``budget_seconds`` of wall time are spent, what is left is unresolved.
    """
    start = time.perf_counter()
    n = check_supported(model, seq_len)
    cfg = model.cfg
    c = cfg.d_vocab
    counter = Counter()
    net = build_network(model, n)
    # Regions per batch: the largest Dinkelbach tensor ([R, 2K, H, N, C], K ≤ max(d_mlp, d_model) rows)
    # stays near 2^22 float64 numbers (32 MiB), whatever the model.
    rows = 2 * max(cfg.d_mlp, cfg.d_model, c)
    batch_size = max(1, min(batch_size, (1 << 22) // (rows * cfg.n_heads * n * c)))
    order = influence_order(net)  # [N, C, N]: positions in branch order per (query, own digit)
    n_cells = n * c * c
    right_count = torch.zeros(n_cells, dtype=torch.int64)  # inputs proven right per cell (≤ C^(N−2))
    wrong_count = torch.zeros(n_cells, dtype=torch.int64)
    constrained = torch.zeros(n_cells, n, dtype=torch.bool)  # positions some decided leaf restricts
    wrong_allowed: list[Tensor] = []
    wrong_query: list[Tensor] = []
    stored_wrong = 0
    boxes = 0
    query, own, flipped, digits = _cells(n, c)
    pending: deque[tuple[Tensor, Tensor, Tensor, Tensor]] = deque()
    allowed_cells = _allowed(digits, c)
    for s in range(0, len(query), batch_size):
        sl = slice(s, s + batch_size)
        pending.append((query[sl], own[sl], flipped[sl], allowed_cells[sl]))
    if max_boxes is not None and max_boxes < 0:
        raise CertificateUnsupported(f"max_boxes must be >= 0, got {max_boxes}")
    max_depth = 0
    unresolved_final = 0
    budget_exhausted = False
    stopped_by = "done"
    dives, dived = _dive(net, seeds, order, c, counter, batch_size) if seeds else ({}, 0)
    boxes += dived
    ancestors: dict[tuple[int, tuple[int, ...]], list[tuple[int, tuple[int, ...]]]] = {}
    for key in dives:
        i, prefix = key
        for k in range(1, len(prefix) + 1):
            ancestors.setdefault((i, prefix[:k]), []).append(key)
    dive_cells = {(i * c + prefix[0]) * c + prefix[1 if len(prefix) > 1 else 0] for i, prefix in dives}
    covered: set[tuple[int, tuple[int, ...]]] = set()
    with torch.no_grad():
        while pending:
            if time.perf_counter() - start > budget_seconds:
                budget_exhausted, stopped_by = True, "seconds"
                break
            if max_boxes is not None and boxes >= max_boxes:
                budget_exhausted, stopped_by = True, "max_boxes"
                break
            q_, a_, b_, allowed = _next_batch(pending, batch_size)
            reach = Contexts(net.weights[q_, a_], net.values, allowed, counter)
            lower, upper = margins(net, reach, q_, a_, b_, counter)
            if max_boxes is not None and boxes + len(q_) > max_boxes:
                # The whole batch was bounded as an unlimited run bounds it (same shapes, same floats);
                # only its first regions are counted, the rest go back to the queue, left undecided.
                keep = max_boxes - boxes
                pending.appendleft((q_[keep:], a_[keep:], b_[keep:], allowed[keep:]))
                q_, a_, b_, allowed = q_[:keep], a_[:keep], b_[:keep], allowed[:keep]
                lower, upper = lower[:keep], upper[:keep]
            boxes += len(q_)
            right, wrong = decide(lower, upper)
            wrong = wrong & ~right
            cell = (q_ * c + a_) * c + b_
            if (
                dives
            ):  # regions on a dive's path: a dive region itself is wrong (proven); never split below it
                for r_ in [r for r, k in enumerate(cell.tolist()) if k in dive_cells]:
                    key = _prefix_key(allowed[r_], int(q_[r_]), order)
                    if key in dives:
                        wrong[r_], right[r_] = True, False
                    if bool(right[r_] or wrong[r_]) and key in ancestors:
                        if bool(right[r_]):
                            raise RuntimeError(
                                "soundness check failed: a region proven right holds a dive's wrong region"
                            )
                        covered.update(ancestors[key])
            sizes_ = allowed.sum(-1)  # [R, N] digits allowed per position
            count = sizes_.prod(-1)  # inputs per region (≤ C^N, fits int64 for C^N < 9.2e18)
            restricted = sizes_ < c
            max_depth = max(max_depth, int(restricted.sum(-1).max()))
            right_count.index_add_(0, cell[right], count[right])
            wrong_count.index_add_(0, cell[wrong], count[wrong])
            decided = right | wrong
            if decided.any():  # OR of the decided leaves' restricted positions, per cell
                hits = torch.zeros(n_cells, n, dtype=torch.int64)
                hits.index_add_(0, cell[decided], restricted[decided].long())
                constrained |= hits > 0
            if wrong.any() and stored_wrong <= max_regions:
                wrong_allowed.append(allowed[wrong])
                wrong_query.append(q_[wrong])
                stored_wrong += int(wrong.sum())
            open_ = ~decided
            single = open_ & (count == 1)
            unresolved_final += int(single.sum())
            split = open_ & (count > 1)
            if split.any():
                # A whole cell is split on its two most influential keys at once (C² children): alone,
                # one key almost never decides a region of a trained model, and evaluating those C
                # intermediate regions per cell cost most of a short budget.
                whole = split & (restricted.sum(-1) <= 2)
                for mask, times in ((split & ~whole, 1), (whole, 2)):
                    if not mask.any():
                        continue
                    children, cq, ca, cb = allowed[mask], q_[mask], a_[mask], b_[mask]
                    for step in range(times):
                        free = (children.sum(-1) > 1).any(-1)  # a region with no free position stays
                        if step and not free.all():
                            pending.append((cq[~free], ca[~free], cb[~free], children[~free]))
                            children, cq, ca, cb = children[free], cq[free], ca[free], cb[free]
                        children = _split(children, cq, ca, order)
                        cq, ca, cb = (t.repeat_interleave(c) for t in (cq, ca, cb))
                    pending.append((cq, ca, cb, children))
            if progress is not None:
                progress(
                    {
                        "seconds": time.perf_counter() - start,
                        "boxes": boxes,
                        "pending": sum(len(p[0]) for p in pending),
                        "right": int(right_count.sum()),
                        "wrong": int(wrong_count.sum()),
                        "pairs": n * c**n,
                    }
                )
    for key, dive in dives.items():  # dive regions no decided breadth-first region holds: count them
        if key not in covered:
            i, prefix = key
            right_cell = (i * c + prefix[0]) * c + prefix[1 if len(prefix) > 1 else 0]
            wrong_count[right_cell] += dive["count"]
            wrong_allowed.append(dive["allowed"][None])
            wrong_query.append(torch.tensor([i]))
            stored_wrong += 1
    left = sum(len(p[0]) for p in pending)
    sizes = cell_sizes(n, c)
    cell_right = [int(x) for x in right_count.tolist()]
    cell_wrong = [int(x) for x in wrong_count.tolist()]
    cells = []
    min_weight, guarantee = (None, None)
    unsupported = None
    if theorems and cfg.n_heads == 1:
        min_weight, guarantee = _theorems(net, n, c, counter, batch_size)
    elif theorems:
        unsupported = (
            f"the theorem columns are computed for 1 head only; this model has {cfg.n_heads} heads, and one "
            "head's weight on the flipped key does not determine the output when other heads also write it"
        )
    for index, ((i, a, b), size) in enumerate(sizes.items()):
        k = (i * c + a) * c + b
        r_count, w_count = cell_right[k], cell_wrong[k]
        status = cell_status(size, r_count, w_count)
        if status == "unresolved":
            inert: tuple[int, ...] = ()
        elif status in ("right", "wrong"):
            inert = tuple(sorted(p for p in range(n) if p not in (i, n - 1 - i)))
        else:
            inert = tuple(p for p in range(n) if not bool(constrained[k, p]))
        cells.append(
            Cell(
                i, a, b, size, r_count, w_count, status,
                guarantee_weight=None if guarantee is None or math.isnan(guarantee[index])
                else guarantee[index],
                min_weight=None if min_weight is None else min_weight[index],
                inert_positions=inert,
            )
        )  # fmt: skip
    total = c**n
    right_at = [0] * n
    wrong_at = [0] * n
    for cell_ in cells:
        right_at[cell_.position] += cell_.right
        wrong_at[cell_.position] += cell_.wrong
    right_pairs = sum(right_at)
    wrong_pairs = sum(wrong_at)
    seq_right_lower = max(0, total - sum(total - r for r in right_at))
    seq_right_upper = total - max(wrong_at)
    regions = _regions(wrong_allowed, wrong_query, n, c, max_regions)
    complete = stored_wrong <= max_regions and sum(r.count for r in regions) == wrong_pairs
    examples = _examples(model, regions[:max_examples], n)
    brute = n * total * flops_per_position(cfg, n)
    return Certificate(
        method="proof",
        seq_len=n,
        num_categories=c,
        inputs=total,
        per_digit_lower=fraction(right_pairs, n * total, "down"),
        per_digit_upper=fraction(n * total - wrong_pairs, n * total, "up"),
        sequence_lower=fraction(seq_right_lower, total, "down"),
        sequence_upper=fraction(seq_right_upper, total, "up"),
        wrong_count_lower=wrong_pairs,
        wrong_count_upper=n * total - right_pairs,
        wrong_regions=tuple(regions),
        regions_complete=complete,
        wrong_examples=tuple(examples),
        cells=tuple(cells),
        unsupported=unsupported,
        seconds=time.perf_counter() - start,
        boxes=boxes,
        flops=counter.flops,
        brute_force_flops=brute,
        arithmetic=ARITHMETIC,
        sequence_right_lower=seq_right_lower,
        sequence_right_upper=seq_right_upper,
        details={
            "budget_seconds": budget_seconds,
            "budget_exhausted": budget_exhausted,
            "max_boxes": max_boxes,
            "stopped_by": stopped_by,
            "max_depth": max_depth,
            "regions_left": left,
            "undecided_single_inputs": unresolved_final,
            "right_per_position": right_at,
            "wrong_per_position": wrong_at,
        },
    )


def _regions(allowed: list[Tensor], query: list[Tensor], n: int, c: int, max_regions: int) -> list[Region]:
    """The stored proven-wrong regions as readable :class:`Region` s (at most ``max_regions``)."""
    out: list[Region] = []
    if not allowed:
        return out
    all_allowed, all_query = torch.cat(allowed)[:max_regions], torch.cat(query)[:max_regions]
    for mask, i in zip(all_allowed.tolist(), all_query.tolist()):
        sets = {p: [t for t in range(c) if row[t]] for p, row in enumerate(mask) if not all(row)}
        out.append(Region.make(i, sets, n, c))
    return out


def _prefix_key(allowed: Tensor, query: int, order: Tensor) -> tuple[int, tuple[int, ...]]:
    """(query, digits of the fixed positions in branch order) of a region [N, C] fixed along its order
    (``order`` [N, C, N], per query and own digit; the own digit is the region's)."""
    digits = []
    own = int(allowed[query].float().argmax())
    for p in order[query, own].tolist():
        row = allowed[p]
        if int(row.sum()) != 1:
            break
        digits.append(int(row.float().argmax()))
    return query, tuple(digits)


def _dive(
    net: Network, seeds: Sequence[Sequence[int]], order: Tensor, c: int, counter: Counter, batch_size: int
) -> tuple[dict[tuple[int, tuple[int, ...]], dict[str, Any]], int]:
    """For every seed and output position, the shallowest region along the seed's path (positions fixed in
    branch order) proven wrong, if any before one is proven right: ({key: {"allowed", "count"}}, regions
    evaluated)."""
    n = net.seq_len
    rows, keys = [], []
    for seed in seeds:
        tokens = [int(t) for t in seed]
        if len(tokens) != n or not all(0 <= t < c for t in tokens):
            raise CertificateUnsupported(f"seed {tokens} is not a sequence of {n} digits 0..{c - 1}")
        for i in range(n):
            path = order[i, tokens[i]].tolist()
            start = 1 if path[0] == n - 1 - i else 2
            for k in range(start, n + 1):
                allowed = torch.ones(n, c, dtype=torch.bool)
                for p in path[:k]:
                    allowed[p] = False
                    allowed[p, tokens[p]] = True
                rows.append(allowed)
                keys.append((i, tuple(tokens[p] for p in path[:k])))
    out: dict[tuple[int, tuple[int, ...]], dict[str, Any]] = {}
    if not rows:
        return out, 0
    allowed_all = torch.stack(rows)
    query = torch.tensor([k[0] for k in keys])
    verdicts = []
    for s in range(0, len(rows), batch_size):
        sl = slice(s, s + batch_size)
        q, al = query[sl], allowed_all[sl]
        own = al[torch.arange(len(q)), q].float().argmax(-1)
        flipped = al[torch.arange(len(q)), n - 1 - q].float().argmax(-1)
        lower, upper = margins(
            net, Contexts(net.weights[q, own], net.values, al, counter), q, own, flipped, counter
        )
        right, wrong = decide(lower, upper)
        verdicts += list(zip(right.tolist(), wrong.tolist()))
    done: set[tuple[int, tuple[int, ...]]] = set()  # decided regions: nothing below them is dived
    for key, allowed, (right, wrong) in zip(keys, rows, verdicts):
        i, prefix = key
        if any((i, prefix[:k]) in done for k in range(1, len(prefix) + 1)):
            continue
        if wrong and not right:
            out[key] = {"allowed": allowed, "count": int(allowed.sum(-1).prod())}
        if wrong or right:
            done.add(key)
    return out, len(rows)


def _next_batch(
    pending: deque[tuple[Tensor, Tensor, Tensor, Tensor]], batch_size: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Up to ``batch_size`` regions from the front of the queue (pieces merged or cut)."""
    parts = []
    total = 0
    while pending and total < batch_size:
        piece = pending.popleft()
        room = batch_size - total
        if len(piece[0]) > room:
            pending.appendleft(tuple(t[room:] for t in piece))  # type: ignore[arg-type]
            piece = tuple(t[:room] for t in piece)  # type: ignore[assignment]
        parts.append(piece)
        total += len(piece[0])
    return tuple(torch.cat(ts) for ts in zip(*parts))  # type: ignore[return-value]


def _split(allowed: Tensor, query: Tensor, own: Tensor, order: Tensor) -> Tensor:
    """C children per region [R, N, C] → [R·C, N, C]: the first position in the branch order of the
    region's (query, own digit) (``order`` [N, C, N], :func:`influence_order`) that is still free takes
    each digit in turn (splitting a whole position beat halving digit sets on the default model: 586
    against 1020 regions to resolve six cells)."""
    r, n, c = allowed.shape
    path = order[query, own]  # [R, N]
    ordered = allowed.gather(1, path.unsqueeze(-1).expand(-1, -1, c))  # positions in branch order
    first = (ordered.sum(-1) > 1).float().argmax(-1)  # index in the order of the first free position
    position = path[torch.arange(r), first].repeat_interleave(c)  # [R·C]
    children = allowed.repeat_interleave(c, 0)
    digit = torch.arange(c).repeat(r)
    children[torch.arange(r * c), position] = torch.nn.functional.one_hot(digit, c).bool()
    return children


def influence_order(net: Network) -> Tensor:
    """Branch order [N, C, N] per (query i, own digit a): i and the flipped key j = N−1−i first (the
    cell's constraints), then the other keys by decreasing influence
    I_p = Σ_h (max_t w_hp(t) − min_t w_hp(t)) / Σ_q max_t w_hq(t) (w = exp(score) of query (i, a);
    how far key p's digit alone can move the attention's weights), ties in :func:`census.branch_order`.

    The order depends on (i, a) only, so a region is always a prefix of its path (the dives and the
    census rely on it). On 112 undecided depth-2 regions of the default model, splitting on the most
    influential free key proved 1,119 of their 1,120 children right, the nearest neighbour of j 1,078:
    attention also spills to keys far from j (e.g. query 15 to keys 6, 7)."""
    n, c = net.seq_len, net.num_categories
    w = net.weights  # [N, C, H, N, C]
    spread = w.amax(-1) - w.amin(-1)  # [N, C, H, N]
    influence = (spread / w.amax(-1).sum(-1, keepdim=True)).sum(2)  # [N, C, N]
    out = torch.empty(n, c, n, dtype=torch.int64)
    for i in range(n):
        base = branch_order(i, n)
        head = base[: 1 if i == n - 1 - i else 2]
        rank = {p: k for k, p in enumerate(base)}
        for a in range(c):
            score = influence[i, a].tolist()
            rest = sorted(base[len(head) :], key=lambda p: (-score[p], rank[p]))
            out[i, a] = torch.tensor(head + rest)
    return out


def example_tokens(region: Region, n: int) -> list[int]:
    """An input of ``region``: each free position takes the digit of the nearest constrained one (the
    lower position on a tie), so that the example reads like the region (e.g. ``7777773773777777``)."""
    fixed = {p: digits[0] for p, digits in region.constraints}
    return [fixed[p] if p in fixed else fixed[min(fixed, key=lambda q: (abs(q - p), q))] for p in range(n)]


def _examples(model: Any, regions: list[Region], n: int) -> list[dict[str, Any]]:
    """One input per region, re-checked with the model's own forward (a disagreement is a bug, raised)."""
    if not regions:
        return []
    tokens = torch.tensor([example_tokens(r, n) for r in regions])
    device = next(model.parameters()).device
    with torch.inference_mode():
        right = right_positions(model(tokens.to(device)).float().cpu(), tokens)
    examples = []
    for row, region in zip(tokens.tolist(), regions):
        if bool(right[len(examples), region.position]):
            raise RuntimeError(
                f"soundness check failed: the proof says output {region.position} of {row} is wrong, the "
                "model's forward says right; please report this model"
            )
        examples.append({"tokens": row, "position": region.position})
    return examples


def _theorems(
    net: Network, n: int, c: int, counter: Counter, batch_size: int
) -> tuple[list[float], list[float]]:
    """Per cell (in ``cell_sizes`` order), 1 head: the minimum weight on the flipped key over the cell's
    contexts, and the smallest weight w* (bisection, 14 steps) such that every attention with weight ≥ w*
    on the flipped key, the rest spread over the other allowed keys' values in any way, is proven right
    (NaN when even w* = 1 is not proven).

    Arithmetic: both speak of the *exact* attention weight (softmax of the exact scores of the float32
    weights). The minimum is w_j(b)/(w_j(b) + Σ_other max_t w_p(t)) on ``Network.weights`` (exp of exact
    scores in float64): exact up to float64 rounding, with no float32 allowance (the float32 forward's
    weight differs by its softmax rounding). w* is proven for the float32 forward: the Z_π sets hold
    exact mixtures, and ``margins`` adds ``mid_error`` (softmax, weighted sum, o_proj rounding) and every
    later float32 rounding, as for the regions."""
    query, own, flipped, digits = _cells(n, c)
    allowed = _allowed(digits, c)
    weights = net.weights[query, own, 0]  # [R, N, C]
    j = n - 1 - query
    r = len(query)
    # Exact minimum of the flipped key's weight: every other position takes its largest weight.
    masked = torch.where(allowed, weights, torch.zeros((), dtype=weights.dtype))
    flipped_w = weights[torch.arange(r), j, flipped]
    others = masked.amax(-1).sum(-1) - flipped_w
    min_weight = (flipped_w / (flipped_w + others)).tolist()
    # Guarantee by bisection on π over the nested sets Z_π (larger π, smaller set: proven stays proven).
    others_mask = allowed.clone()
    others_mask[torch.arange(r), j] = False
    middle = query == j  # the middle query of an odd N: the own key is the flipped key
    flipped_value = net.values[0, j, flipped]  # [R, dh]

    def proven(pi: Tensor) -> Tensor:
        out = []
        for s in range(0, r, batch_size):
            sl = slice(s, s + batch_size)
            reach = Mixtures(flipped_value[sl], net.values, others_mask[sl], pi[sl], counter)
            lower, upper = margins(net, reach, query[sl], own[sl], flipped[sl], counter)
            out.append(decide(lower, upper)[0])
        return torch.cat(out)

    ones = torch.ones(r, dtype=torch.float64)
    ok_at_one = proven(ones)
    low, high = torch.zeros(r, dtype=torch.float64), ones.clone()
    for _ in range(14):
        mid = (low + high) / 2
        ok = proven(mid)
        high = torch.where(ok, mid, high)
        low = torch.where(ok, low, mid)
    if bool(middle.any()):
        # With only free positions besides the flipped key, an empty "others" set means z = v_j exactly.
        empty = ~others_mask.flatten(1).any(-1)
        high = torch.where(empty & ok_at_one, torch.zeros_like(high), high)
    guarantee = torch.where(ok_at_one, high, torch.full_like(high, math.nan)).tolist()
    return min_weight, guarantee
