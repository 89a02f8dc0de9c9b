"""Reference lines for the reverse task: chance, and the best any model can do without positions.

**Why a model without positional information is limited.** Without positional encoding the encoder
is permutation-equivariant (token embedding, attention over a set of keys, position-wise MLPs and
LayerNorms): permuting the input permutes the output. Two consequences: (1) positions holding the same
token get the same output (swap them: the input is unchanged, so the outputs are equal); (2) any two
sequences with the same multiset of tokens are permutations of each other. So the output at position
i can only be a function g(a, M) of its own token a = t_i and the multiset M (counts n_0..n_{C−1}).

**The best such predictor.** Sequences are i.i.d. uniform, so given M every arrangement is equally
likely. For a predictor g, the expected number of correct positions in a sequence with multiset M is
Σ_a E[K(a, g(a, M)) | M] with K(a, c) = #{i : t_i = a, t_{N−1−i} = c}; it is maximised by choosing, for
each a, the c with the largest E[K(a, c) | M]. For a position i ≠ N−1−i (all of them when N is even)

    P(t_i = a, t_{N−1−i} = c | M) = n_a (n_c − [a = c]) / (N (N − 1)),

and the middle position of an odd N has P(t_i = a = c | M) = n_a / N. Summing over positions:

    E[K(a, c) | M] = 2⌊N/2⌋ · n_a (n_c − [a = c]) / (N (N − 1)) + (N mod 2) · [a = c] · n_a / N.

So for even N the best guess for a position holding a is the most frequent token among the *other*
N − 1 tokens (M minus one copy of a); for odd N it is the most frequent token of M. The ceiling is

    accuracy* = E_M[ (1/N) Σ_{a : n_a > 0} max_c E[K(a, c) | M] ],

an exact rational number, computed here by summing over the partitions of N into at most C parts (the
value depends on M only through its sorted counts; a partition λ stands for C!/∏_v m_v! count vectors,
m_v = how many of the C counts equal v, each of probability N!/(∏_c n_c!)/C^N). The same sum gives the
best cross entropy: the optimal predictive distribution for a position holding a is
q(c | a, M) = E[K(a, c) | M] / n_a, and loss* = E_M[(1/N) Σ_{a,c} E[K(a, c) | M] (−log q(c | a, M))].

:func:`no_position_ceiling_brute_force` re-derives both numbers without this algebra, by enumerating
every sequence of a small case and taking the best output for each (own token, multiset) group;
:func:`no_position_ceiling_monte_carlo` applies :func:`no_position_predictions` to random sequences.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor

from interp.stats import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, Estimate, UnitSums, bootstrap_ci
from machine.scalars import as_int

BRUTE_FORCE_LIMIT = 2_000_000  # sequences × positions enumerated at most


@dataclass(frozen=True)
class NoPositionBound:
    """The best accuracy (exact fraction) and the lowest cross entropy (nats) reachable without
    positional information, for sequences of ``seq_len`` i.i.d. uniform tokens from ``num_categories``."""

    seq_len: int
    num_categories: int
    accuracy: Fraction
    loss: float

    def to_dict(self) -> dict[str, object]:
        return {
            "seq_len": self.seq_len,
            "num_categories": self.num_categories,
            "accuracy": float(self.accuracy),
            "accuracy_fraction": f"{self.accuracy.numerator}/{self.accuracy.denominator}",
            "loss": self.loss,
        }


def chance_accuracy(num_categories: int) -> float:
    """1/C: a guess that ignores the input."""
    _check_sizes(1, num_categories)
    return 1.0 / num_categories


def _check_sizes(seq_len: int, num_categories: int) -> None:
    for name, value in (("seq_len", seq_len), ("num_categories", num_categories)):
        as_int(value, name, minimum=1)


def _partitions(n: int, max_parts: int, largest: int | None = None) -> Iterator[tuple[int, ...]]:
    """Partitions of n into at most ``max_parts`` parts, each part ≤ ``largest``, parts non-increasing."""
    largest = n if largest is None else largest
    if n == 0:
        yield ()
        return
    if max_parts == 0:
        return
    for first in range(min(n, largest), 0, -1):
        for rest in _partitions(n - first, max_parts - 1, first):
            yield (first, *rest)


def expected_pair_counts(counts: tuple[int, ...], seq_len: int) -> list[list[Fraction]]:
    """E[K(a, c) | M] (see module doc) for the count vector ``counts`` of M."""
    n = seq_len
    pairs, middle = 2 * (n // 2), n % 2
    out = []
    for a, n_a in enumerate(counts):
        row = []
        for c, n_c in enumerate(counts):
            same = int(a == c)
            value = Fraction(pairs * n_a * (n_c - same), n * (n - 1)) if pairs else Fraction(0)
            row.append(value + Fraction(middle * same * n_a, n))
        out.append(row)
    return out


def no_position_ceiling(seq_len: int, num_categories: int) -> NoPositionBound:
    """Exact ceiling (and loss floor) by summing over partitions of ``seq_len`` (see module doc)."""
    _check_sizes(seq_len, num_categories)
    n, c = seq_len, num_categories
    accuracy, loss = Fraction(0), 0.0
    for parts in _partitions(n, c):
        counts = parts + (0,) * (c - len(parts))
        arrangements = math.factorial(c)
        for m in Counter(counts).values():
            arrangements //= math.factorial(m)
        probability = Fraction(arrangements * math.factorial(n), c**n)
        for v in counts:
            probability /= math.factorial(v)
        expected = expected_pair_counts(counts, n)
        hits, nats = Fraction(0), 0.0
        for a, row in enumerate(expected):
            if counts[a] == 0:
                continue
            hits += max(row)
            nats += sum(-float(k) * math.log(float(k) / counts[a]) for k in row if k > 0)
        accuracy += probability * hits / n
        loss += float(probability) * nats / n
    return NoPositionBound(n, c, accuracy, loss)


def no_position_ceiling_brute_force(seq_len: int, num_categories: int) -> NoPositionBound:
    """The same bound from first principles: enumerate all C^N sequences, group positions by what a
    position-blind model can see (own token, multiset) and predict each group's most common target."""
    _check_sizes(seq_len, num_categories)
    n, c = seq_len, num_categories
    if c**n * n > BRUTE_FORCE_LIMIT:
        raise ValueError(
            f"brute force over {c}^{n} sequences is too large (limit {BRUTE_FORCE_LIMIT} positions)"
        )
    groups: dict[tuple, Counter] = defaultdict(Counter)
    for sequence in itertools.product(range(c), repeat=n):
        multiset = tuple(sorted(sequence))
        for i, token in enumerate(sequence):
            groups[(token, multiset)][sequence[n - 1 - i]] += 1
    total = c**n * n
    hits = sum(max(targets.values()) for targets in groups.values())
    nats = 0.0
    for targets in groups.values():
        size = sum(targets.values())
        nats += sum(-k * math.log(k / size) for k in targets.values())
    return NoPositionBound(n, c, Fraction(hits, total), nats / total)


def no_position_predictions(
    tokens: Int[Tensor, "batch pos"], num_categories: int
) -> Int[Tensor, "batch pos"]:
    """The optimal position-blind prediction g*(t_i, M) at every position (ties → smallest token).

    Even N: argmax_c (n_c − [c = t_i]); odd N: argmax_c n_c (see module doc).
    """
    if tokens.ndim != 2:
        raise ValueError(f"tokens must have shape [batch, pos], got {tuple(tokens.shape)}")
    _check_sizes(tokens.shape[1], num_categories)
    counts = torch.nn.functional.one_hot(tokens, num_categories).sum(1)  # [batch, C]
    score = counts.unsqueeze(1).expand(-1, tokens.shape[1], -1).clone()  # [batch, pos, C]
    if tokens.shape[1] % 2 == 0:
        score.scatter_add_(-1, tokens.unsqueeze(-1), -torch.ones_like(tokens).unsqueeze(-1))
    # argmax returns the first maximum, i.e. the smallest token among ties.
    return score.argmax(-1)


def no_position_ceiling_monte_carlo(
    seq_len: int,
    num_categories: int,
    num_sequences: int = 100_000,
    seed: int = 0,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Estimate:
    """Accuracy of :func:`no_position_predictions` on ``num_sequences`` random sequences drawn from
    ``numpy.random.default_rng(seed)``, with a percentile-bootstrap CI over sequences (over blocks of
    sequences beyond ``interp.stats.MAX_UNITS``: memory independent of ``num_sequences``)."""
    _check_sizes(seq_len, num_categories)
    num_sequences = as_int(num_sequences, "num_sequences", minimum=1)
    rng = np.random.default_rng(seed)
    units = UnitSums(num_sequences)
    for start in range(0, num_sequences, 65536):
        size = min(65536, num_sequences - start)
        tokens = torch.from_numpy(rng.integers(0, num_categories, size=(size, seq_len), dtype=np.int64))
        hits = no_position_predictions(tokens, num_categories) == tokens.flip(-1)
        units.add({"accuracy": hits.double().mean(-1)})
    values, denominators = units.table("accuracy")
    return bootstrap_ci(values, denominators, resamples=resamples, confidence=confidence, seed=seed)[0]
