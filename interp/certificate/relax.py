"""Linear relaxations of everything after attention, back-substituted (CROWN-style) to the attention
output and minimised exactly over the reachable set.

The variable is z ∈ R^{H·d_head}, the heads' attention outputs (concatenated as ``o_proj`` reads them);
Z is the exact set of z over a region's contexts (:class:`Contexts`) or, for the guarantee theorem,
every mixture with a given weight on the flipped key (:class:`Mixtures`). The computation after
attention is a :class:`Graph` of ops, each ``out = M·(sources) + bias + e`` with e in a local box
[lo, hi] that covers both the op's relaxation and its float32 rounding: Linear layers (M = W; rounding
γ_{in+1}(|W|·|x| + |b|)), residual sums (rounding u·|sum|), LayerNorm as centring (exact; rounding
widens it) then a per-region diagonal scale w·r_mid with r = 1/√(var + eps) in a *proven* interval
(variance bounded below by the squared distance of the centred box from 0 and by the squared lower bound
of the centred vector along its own centre direction; never assumed), ReLU by the zonotope slope
s = ub/(ub − lb) with error [0, −s·lb]. A bound on Λ·node is found by back-substitution:
Λ·node ≥ (Λ_z)·z + Σ_ops (Λ_op·bias + Σ min(Λ_op·lo, Λ_op·hi)), then min over Z of Λ_z·z, exact
for one head (:mod:`ratio`). Magnitudes used by the rounding bounds come from concrete bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from interp.certificate.floats import ABSOLUTE, RELATIVE_SLACK, U32, gamma, gamma64, layer_norm_relative_error
from interp.certificate.network import MUTATIONS, Linear, Norm
from interp.certificate.ratio import min_ratio


class Counter:
    """FLOPs spent (an estimate: multiply-adds count 2)."""

    def __init__(self) -> None:
        self.flops = 0.0

    def add(self, flops: float) -> None:
        self.flops += float(flops)


class Contexts:
    """Z for a batch of R regions: z_h = Σ_p w_hp(t_p) v_hp(t_p) / Σ_p w_hp(t_p) over every choice of
    digits t_p the region allows (``allowed`` [R, N, C]); ``weights`` [R, H, N, C], ``values`` [H, N, C, dh].
    With several heads the same choice feeds every head; the bound of a linear function Σ_h α_h·z_h is
    the sum of the heads' separate minima (sound; exact for one head)."""

    def __init__(self, weights: Tensor, values: Tensor, allowed: Tensor, counter: Counter):
        self.weights, self.values, self.allowed, self.counter = weights, values, allowed, counter
        self.heads, _, _, self.d_head = values.shape

    def subset(self, index: Tensor) -> Contexts:
        """The reachable sets of regions ``index`` [M] (repeats allowed), in that order."""
        return Contexts(self.weights[index], self.values, self.allowed[index], self.counter)

    def lower(self, a: Tensor) -> Tensor:
        """min over Z of a·z for a [R, K, H·dh] → [R, K] (a lower bound; exact for 1 head)."""
        return self.extremes(a)[0]

    def extremes(self, a: Tensor) -> tuple[Tensor, Tensor]:
        """(min, max) over Z of a·z for a [R, K, H·dh] → [R, K] each (sound bounds; exact for 1 head up to
        float64 rounding, which they include).

        The projections' own float64 rounding, |fl(a_h·v) − a_h·v| ≤ γ₆₄(dh)·‖a_h‖₁·max|v_h|, moves a
        convex combination of them by at most as much: it widens both bounds."""
        r, k, _ = a.shape
        alpha = a.reshape(r, k, self.heads, self.d_head)
        bound = alpha.abs().sum(-1) * self.values.abs().amax(dim=(1, 2, 3))  # [R, K, H] ≥ |a_h·v|
        # Both signs in one product (a matmul: cheaper than negating and concatenating its output).
        proj = torch.einsum("rkhe,hnce->rkhnc", torch.cat([alpha, -alpha], 1), self.values)
        low, _, steps = min_ratio(
            proj,
            self.weights[:, None],
            self.allowed[:, None, None],
            magnitude=(bound * (1 + 2 * gamma64(self.d_head))).repeat(1, 2, 1),
        )
        self.counter.add(proj.numel() * (2 * self.d_head + 5 * (steps + 1)))
        rounding = gamma64(self.d_head) * bound
        return (low[:, :k] - rounding).sum(-1), (-low[:, k:] + rounding).sum(-1)


class Mixtures:
    """Z_π for one head: z = π' v_j(b) + (1 − π') ẑ, π' ∈ [π, 1], ẑ any convex combination of the values
    of the other key types the region allows (``others`` [R, N, C]; ``flipped_value`` [R, dh]).
    min a·z = min(a·v_j, π·a·v_j + (1 − π)·min_{(p,t)} a·v) (linear in π' and in ẑ)."""

    def __init__(self, flipped_value: Tensor, values: Tensor, others: Tensor, pi: Tensor, counter: Counter):
        self.flipped_value, self.values, self.others = flipped_value, values, others
        self.pi, self.counter = pi, counter

    def lower(self, a: Tensor) -> Tensor:
        """min over Z_π of a·z for a [R, K, dh] → [R, K], widened by the float64 rounding of the
        projections (γ₆₄(dh)·‖a‖₁·max|v|, as in :meth:`Contexts.extremes`)."""
        at_flipped = torch.einsum("rke,re->rk", a, self.flipped_value)
        proj = torch.einsum("rke,nce->rknc", a, self.values[0])
        proj = torch.where(self.others[:, None], proj, torch.tensor(float("inf"), dtype=proj.dtype))
        worst = proj.flatten(2).amin(-1)
        self.counter.add(proj.numel() * 2 * a.shape[-1])
        pi = self.pi[:, None]
        v_max = torch.maximum(self.values.abs().amax(), self.flipped_value.abs().amax())
        rounding = gamma64(a.shape[-1]) * a.abs().sum(-1) * v_max
        return torch.minimum(at_flipped, pi * at_flipped + (1 - pi) * worst) - 2 * rounding

    def subset(self, index: Tensor) -> Mixtures:
        """The sets Z_π of regions ``index`` [M], in that order."""
        return Mixtures(
            self.flipped_value[index], self.values, self.others[index], self.pi[index], self.counter
        )

    def extremes(self, a: Tensor) -> tuple[Tensor, Tensor]:
        """(min, max) over Z_π of a·z for a [R, K, dh]."""
        both = self.lower(torch.cat([a, -a], 1))
        k = a.shape[1]
        return both[:, :k], -both[:, k:]


@dataclass
class Op:
    """out = M·sources + bias + e, e ∈ [lo, hi] ([R, out] each). ``kind``: ``dense`` (M = ``mat`` [out, in],
    shared), ``diag`` (M = diag(``mat`` [R, out])), ``ln`` (M = diag(w)·(r0·I − (r0³/d)·c0 c0ᵀ), ``mat`` =
    (r0 [R], c0 [R, d], w [d]): LayerNorm's Jacobian at c0), ``centre`` (M = I − 11ᵀ/d), ``sum``."""

    sources: tuple[int, ...]
    kind: str
    mat: Tensor | tuple[Tensor, ...] | None
    bias: Tensor
    lo: Tensor
    hi: Tensor


class Graph:
    """The ops after attention for a batch of R regions; node 0 is z."""

    def __init__(self, reach: Contexts | Mixtures, d_z: int, regions: int, counter: Counter):
        self.reach, self.counter, self.regions = reach, counter, regions
        self.ops: list[Op | None] = [None]
        self.sizes = [d_z]

    def add(self, op: Op) -> int:
        self.ops.append(op)
        self.sizes.append(op.bias.shape[-1])
        return len(self.ops) - 1

    def backward(self, node: int, lam: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Back-substitute rows ``lam`` [R, K, size(node)] to z: (Λ_z [R, K, d_z], lower const, upper const)
        with Λ·node ∈ [Λ_z·z + lower, Λ_z·z + upper] for every value the model can take."""
        lams = {node: lam}
        low = torch.zeros(lam.shape[:2], dtype=lam.dtype)
        high = torch.zeros_like(low)
        for k in range(node, 0, -1):
            if k not in lams:
                continue
            m = lams.pop(k)
            op = self.ops[k]
            assert op is not None
            # Λ·(bias + e), e ∈ [lo, hi]: Λ·(bias + mid) ± |Λ|·rad.
            shift = torch.einsum("rko,ro->rk", m, op.bias + (op.lo + op.hi) / 2)
            spread = torch.einsum("rko,ro->rk", m.abs(), (op.hi - op.lo) / 2)
            low = low + shift - spread
            high = high + shift + spread
            if op.kind == "dense":
                back = m @ op.mat
                self.counter.add(2 * m.numel() * op.mat.shape[1])
            elif op.kind == "diag":
                back = m * op.mat[:, None]
            elif op.kind == "ln":  # diag(w)·(r0·I − (r0³/d)·c0 c0ᵀ)
                r0, c0, w = op.mat
                mw = m * w
                back = r0[:, None, None] * mw - (r0.pow(3) / c0.shape[-1])[:, None, None] * (
                    torch.einsum("rko,ro->rk", mw, c0)[..., None] * c0[:, None]
                )
            elif op.kind == "centre":
                back = m - m.mean(-1, keepdim=True)
            else:
                back = m
            for s in op.sources:
                lams[s] = lams[s] + back if s in lams else back
        return lams[0], low, high

    def box(self) -> tuple[Tensor, Tensor]:
        """Exact [min, max] [R, d_z] of every coordinate of z over Z (computed once)."""
        if not hasattr(self, "_box"):
            d_z = self.sizes[0]
            eye = torch.eye(d_z, dtype=torch.float64).expand(self.regions, d_z, d_z)
            self._box = self.reach.extremes(eye)
        return self._box

    def bounds(
        self, node: int, rows: Tensor | None = None, exact: bool = True, crossing_only: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Sound [lower, upper] [R, K] of ``rows``·node (default: every coordinate) over Z: the linear part
        minimised exactly over Z (``exact``), or over the box of z (cheaper, looser). ``crossing_only``
        (with ``exact``): the box bound for every row, the exact one only for rows whose box bound
        contains 0 (what a ReLU's relaxation needs; both bounds are sound, the tighter is kept)."""
        if rows is None:
            size = self.sizes[node]
            rows = torch.eye(size, dtype=torch.float64).expand(self.regions, size, size)
        lam_z, low, high = self.backward(node, rows)
        if exact and not crossing_only:
            z_low, z_high = self.reach.extremes(lam_z)
        else:
            z_min, z_max = self.box()
            mid, rad = (z_min + z_max) / 2, (z_max - z_min) / 2
            centre = torch.einsum("rkd,rd->rk", lam_z, mid)
            spread = torch.einsum("rkd,rd->rk", lam_z.abs(), rad)
            z_low, z_high = centre - spread, centre + spread
            if exact:
                cross = (z_low + low < 0) & (z_high + high > 0)
                region, row = cross.nonzero(as_tuple=True)
                if len(region):
                    sub_low, sub_high = self.reach.subset(region).extremes(lam_z[region, row][:, None])
                    z_low = z_low.index_put((region, row), torch.maximum(z_low[region, row], sub_low[:, 0]))
                    z_high = z_high.index_put(
                        (region, row), torch.minimum(z_high[region, row], sub_high[:, 0])
                    )
        slack = RELATIVE_SLACK * (low.abs() + high.abs() + z_low.abs() + z_high.abs()) + ABSOLUTE
        return z_low + low - slack, z_high + high + slack


def _expand(t: Tensor, regions: int) -> Tensor:
    return t.expand(regions, t.shape[-1]) if t.dim() == 1 else t


def linear(g: Graph, x: int, layer: Linear, mag: Tensor) -> tuple[int, Tensor]:
    """W x + b with float32 rounding γ_{in+1}(|W|·mag + |b|) (mag [R, in] bounds |x|); returns the node
    and a bound on its magnitude."""
    w = layer.weight
    err = gamma(w.shape[1] + 1) * (mag @ w.abs().T + layer.bias.abs()) + ABSOLUTE
    node = g.add(Op((x,), "dense", w, _expand(layer.bias, g.regions), -err, err))
    return node, mag @ w.abs().T + layer.bias.abs() + err


def add(g: Graph, x: int, y: int, mag: Tensor) -> int:
    """x + y with float32 rounding u·mag (mag bounds |x + y|)."""
    err = U32 * mag + ABSOLUTE
    return g.add(Op((x, y), "sum", None, torch.zeros_like(mag), -err, err))


def relu(g: Graph, x: int, lower: Tensor, upper: Tensor) -> int:
    """ReLU: identity where lower ≥ 0, zero where upper ≤ 0, else s·x + [0, −s·lower], s = upper/(upper −
    lower) (ReLU rounds nothing)."""
    s = torch.where(upper <= 0, 0.0, torch.where(lower >= 0, 1.0, upper / (upper - lower).clamp(min=1e-300)))
    extra = torch.where((lower < 0) & (upper > 0), -s * lower, 0.0)
    return g.add(Op((x,), "diag", s, torch.zeros_like(s), torch.zeros_like(s), extra))


def variance_bounds(g: Graph, c: int, exact: bool = True) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Bounds on a centred node c [R, d] and on its variance V = mean(c²) over the set: (lower, upper [R, d],
    V_lo, V_hi [R]). V_hi = mean(max(lb², ub²)); V_lo = max(mean(dist(0, [lb, ub])²), L₊²/d), L the lower
    bound of ĝ·c with ĝ the unit centre of c's box (‖c‖ ≥ ĝ·c): proven, never assumed."""
    d = g.sizes[c]
    lower, upper = g.bounds(c, exact=exact)
    var_hi = torch.maximum(lower.pow(2), upper.pow(2)).mean(1)
    gap = torch.where(lower > 0, lower, torch.where(upper < 0, -upper, 0.0))
    var_lo = gap.pow(2).mean(1)
    centre = (lower + upper) / 2
    direction = centre / centre.norm(dim=1, keepdim=True).clamp(min=1e-300)
    along, _ = g.bounds(c, direction[:, None])
    var_lo = torch.maximum(var_lo, along[:, 0].clamp(min=0).pow(2) / d)
    if "assume_ln_variance" in MUTATIONS:  # mutation: a floor (half the upper bound) assumed, not proven
        var_lo = torch.maximum(var_lo, var_hi / 2)
    return lower, upper, var_lo * (1 - RELATIVE_SLACK), var_hi * (1 + RELATIVE_SLACK)


def layer_norm(g: Graph, x: int, norm: Norm, mag: Tensor, exact: bool = True) -> tuple[int, Tensor, Tensor]:
    """LayerNorm of node x (mag [R, d] bounds |x|). Returns (node, lower, upper) of its output.

    c = x − mean x, exact, widened by the float32 centring ε_c = γ_{d+1}·mean(mag) + u·|c|. V = mean(c²) ∈
    [V_lo, V_hi]: V_hi = mean(max(lb², ub²)), V_lo = max(mean(dist(0, [lb, ub])²), L₊²/d) with L = min of
    ĝ·c over the set, ĝ the unit centre of c's box: proven, with eps added after. r ∈ [r_lo, r_hi].
    h = w∘(c·r(c)) + b is linearised at the box centre c0 (LayerNorm's Jacobian) with a proven
    second-order remainder (see below), plus float32 rounding ρ_LN·|w|·max|c|·r_hi + u·|h|."""
    d = g.sizes[x]
    eps_c = gamma(d + 1) * mag.mean(1, keepdim=True) + U32 * (mag + mag.mean(1, keepdim=True)) + ABSOLUTE
    c = g.add(Op((x,), "centre", None, torch.zeros_like(mag), -eps_c, eps_c))
    lower, upper, var_lo, var_hi = variance_bounds(g, c, exact)
    s_lo, s_hi = var_lo + norm.eps, var_hi + norm.eps
    r_lo, r_hi = s_hi.rsqrt()[:, None], s_lo.rsqrt()[:, None]
    c_mag = torch.maximum(lower.abs(), upper.abs())
    # First order at the box centre c0 with a proven second-order remainder: f(c) = c·r(c) =
    # f(c0) + J(c − c0) + R, J = r0·I − (r0³/d)·c0 c0ᵀ, R = δ·Δr + c0·(−½ r0³|δ|²/d + rem),
    # δ = c − c0, Δr = r(c) − r0, 0 ≤ rem ≤ (3/8)·s_min^(−5/2)·Δs² (s = var + eps).
    c0 = (lower + upper) / 2
    delta = (upper - lower) / 2
    s0 = c0.pow(2).mean(1) + norm.eps
    r0 = s0.rsqrt()
    dr = torch.maximum((r_hi[:, 0] - r0).abs(), (r0 - r_lo[:, 0]).abs())
    ds = torch.maximum((s_hi - s0).abs(), (s0 - s_lo).abs())
    s_min = torch.minimum(s_lo, s0)
    second = 0.5 * r0.pow(3) * delta.pow(2).mean(1) + 0.375 * s_min.pow(-2.5) * ds.pow(2)
    remainder = delta * dr[:, None] + c0.abs() * second[:, None]
    h_mag = norm.w.abs() * c_mag * r_hi + norm.b.abs()
    rounding = norm.w.abs() * layer_norm_relative_error(d) * c_mag * r_hi
    rounding = rounding + U32 * (h_mag + rounding) + RELATIVE_SLACK * h_mag + ABSOLUTE
    linearisation = norm.w.abs() * remainder
    err = (
        rounding
        + linearisation * (1 + RELATIVE_SLACK)
        + RELATIVE_SLACK * norm.w.abs() * c0.abs() * r0[:, None]
    )
    bias = norm.w * (r0.pow(3) * c0.pow(2).mean(1))[:, None] * c0 + norm.b
    node = g.add(Op((c,), "ln", (r0, c0, norm.w), bias, -err, err))
    # Concrete bounds of the output from those of c and r (interval product).
    products = torch.stack([lower * r_lo, lower * r_hi, upper * r_lo, upper * r_hi])
    low = torch.where(norm.w >= 0, products.amin(0) * norm.w, products.amax(0) * norm.w)
    high = torch.where(norm.w >= 0, products.amax(0) * norm.w, products.amin(0) * norm.w)
    return node, low + norm.b - rounding, high + norm.b + rounding
