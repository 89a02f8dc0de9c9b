"""Inputs built to be hard for a reversal head: isolated digits, and a beam search for the worst input.

*Isolated-digit sequences* (:func:`isolated_digit_sequences`): every position holds one background
digit w except *probe* positions p (at least ``radius`` + 1 apart) holding other digits, so for each
query i = N − 1 − p the keys f(i) ± 1..radius all hold w ≠ t_f(i): the neighbours' attention weight all
votes for the same wrong digit (:func:`interp.readout.neighbours_agree_wrong` marks those queries).

*Beam search* (:func:`beam_search`) over digit placements minimises a score per sequence (lower =
worse for the model), e.g. :func:`min_vote_margin` (the smallest vote margin μ over the queries, with
the model's own patterns) or :func:`min_logit_margin` (the smallest correct-minus-best-other logit: < 0
means a wrong output). Each step scores every single-position change of every beam member
(N · (C − 1) neighbours each) in one batch and keeps the ``width`` best distinct sequences; it stops
after ``steps`` steps or when the best score stops improving. Deterministic for given start sequences.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.ablation import check_heads
from interp.outcomes import logit_difference
from interp.readout import digit_votes, target_margin
from machine.scalars import as_int

Score = Callable[[Tensor], Tensor]  # tokens [batch, pos] -> score [batch] (lower is worse)


def isolated_digit_sequences(
    num_sequences: int, seq_len: int, num_categories: int, radius: int = 2, seed: int = 0
) -> tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch query"]]:
    """(tokens, probe query mask): background digit w per sequence, probes every ``radius`` + 1
    positions from a random start in 0..radius, each probe a random digit ≠ w. Every probe query is
    adversarial; with radius 1 a background key between two probes that hold one digit is too."""
    num_sequences = as_int(num_sequences, "num_sequences", minimum=1)
    seq_len = as_int(seq_len, "seq_len", minimum=1)
    radius = as_int(radius, "radius", minimum=1)
    num_categories = as_int(num_categories, "num_categories", minimum=2)
    g = torch.Generator().manual_seed(int(seed))
    w = torch.randint(0, num_categories, (num_sequences, 1), generator=g)
    tokens = w.expand(num_sequences, seq_len).clone()
    start = torch.randint(0, radius + 1, (num_sequences, 1), generator=g)
    pos = torch.arange(seq_len).unsqueeze(0)
    probe = (pos >= start) & ((pos - start) % (radius + 1) == 0)
    other = (w + torch.randint(1, num_categories, (num_sequences, seq_len), generator=g)) % num_categories
    tokens = torch.where(probe, other, tokens)
    return tokens, probe.flip(-1)  # query N − 1 − p reads probe p


def min_vote_margin(model: torch.nn.Module, layer: int = 0, head: int = 0) -> Score:
    """Score: min over queries of the vote margin μ_i under the model's own pattern of (layer, head)."""
    ((layer, head),) = check_heads(model, [(layer, head)])
    name = f"blocks.{layer}.attn.hook_pattern"

    @torch.no_grad()
    def score(tokens: Tensor) -> Tensor:
        _, cache = model.run_with_cache(tokens, names_filter=name)
        votes = digit_votes(cache[name][:, head].double(), tokens, model.cfg.d_vocab)
        return target_margin(votes, tokens.flip(-1)).min(-1).values

    return score


def min_logit_margin(model: torch.nn.Module) -> Score:
    """Score: min over positions of ℓ_target − max_{c ≠ target} ℓ_c (< 0: the model is wrong there)."""

    @torch.no_grad()
    def score(tokens: Tensor) -> Tensor:
        return logit_difference(model(tokens).double(), tokens).min(-1).values

    return score


@dataclass(frozen=True)
class SearchResult:
    """The best sequences found (lowest score first), their scores, and the best score per step."""

    tokens: Int[Tensor, "width pos"]
    scores: Float[Tensor, " width"]
    history: list[float]
    evaluated: int  # sequences scored in total

    @property
    def best(self) -> tuple[Tensor, float]:
        return self.tokens[0], float(self.scores[0])


def single_changes(
    tokens: Int[Tensor, "batch pos"], num_categories: int
) -> Int[Tensor, "batch*pos*other pos"]:
    """Every sequence that differs from a row of ``tokens`` in exactly one position."""
    b, n = tokens.shape
    shift = torch.arange(1, num_categories, device=tokens.device)  # new digit = (t + shift) mod C
    out = tokens.view(b, 1, 1, n).repeat(1, n, num_categories - 1, 1)
    pos = torch.arange(n, device=tokens.device)
    out[:, pos, :, pos] = (tokens[:, pos].T.unsqueeze(-1) + shift) % num_categories
    return out.view(-1, n)


def beam_search(
    score: Score,
    start: Int[Tensor, "batch pos"],
    num_categories: int,
    width: int = 8,
    steps: int = 20,
    chunk: int = 4096,
) -> SearchResult:
    """Minimise ``score`` over sequences by beam search from ``start`` (see the module docstring)."""
    width = as_int(width, "width", minimum=1)
    steps = as_int(steps, "steps", minimum=1)
    chunk = as_int(chunk, "chunk", minimum=1)
    num_categories = as_int(num_categories, "num_categories", minimum=2)
    if start.ndim != 2 or start.shape[0] < 1:
        raise ValueError(f"start must be a non-empty [batch, pos] tensor, got {tuple(start.shape)}")

    def scored(tokens: Tensor) -> Tensor:
        return torch.cat([score(part).double().cpu() for part in tokens.split(chunk)])

    def keep(tokens: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        tokens, inverse = torch.unique(tokens, dim=0, return_inverse=True)
        best = torch.full((len(tokens),), float("inf"), dtype=values.dtype)
        best = best.scatter_reduce(0, inverse, values, reduce="amin")
        order = torch.argsort(best, stable=True)[:width]
        return tokens[order], best[order]

    beam, values = keep(start, scored(start))
    history, evaluated = [float(values[0])], len(start)
    for _ in range(steps):
        candidates = torch.cat([beam, single_changes(beam, num_categories)])
        cand_values = scored(candidates)
        evaluated += len(candidates)
        beam, values = keep(candidates, cand_values)
        history.append(float(values[0]))
        if history[-1] >= history[-2]:
            break
    return SearchResult(beam, values, history, evaluated)
