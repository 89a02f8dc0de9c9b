"""The evaluation sequences every analysis reads: uniform random digits, deterministic in the seed.

Sequences come in fixed blocks of ``DATA_BLOCK``, block b drawn from ``numpy.random.default_rng([seed,
b])``, so the data do not depend on the batch size, and two analyses with the same seed read the same
sequences (the report's attention explorer shows the first ones).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from machine.scalars import as_int

DATA_BLOCK = 4096
_PATTERN_ELEMENTS = 1 << 22


def token_batches(
    num_sequences: int, seq_len: int, num_categories: int, seed: int, batch_size: int
) -> Iterator[torch.Tensor]:
    """Uniform random digit sequences ``[batch, seq_len]`` (int64), ``num_sequences`` in total.

    Deterministic in ``seed`` and independent of ``batch_size``: sequences come in fixed blocks, block
    b drawn from ``numpy.random.default_rng([seed, b])``. Memory is one block plus one batch; batches of
    long sequences are made smaller than ``batch_size`` so their attention patterns fit in memory.
    """
    num_sequences = as_int(num_sequences, "num_sequences", minimum=1)
    seq_len = as_int(seq_len, "seq_len", minimum=1)
    batch_size = as_int(batch_size, "batch_size", minimum=1)
    # Attention patterns grow as batch × N²: long sequences come in smaller batches so one batch's
    # [batch, head, N, N] stays near 16 MB per head (no effect at N = 16; batch 1 from N ≈ 2,048).
    batch_size = max(1, min(batch_size, _PATTERN_ELEMENTS // (seq_len * seq_len)))
    pending: list[torch.Tensor] = []
    have = 0
    for block, start in enumerate(range(0, num_sequences, DATA_BLOCK)):
        size = min(DATA_BLOCK, num_sequences - start)
        rng = np.random.default_rng([seed, block])
        pending.append(
            torch.from_numpy(rng.integers(0, num_categories, size=(size, seq_len), dtype=np.int64))
        )
        have += size
        while have >= batch_size or (have and start + size == num_sequences):
            data = torch.cat(pending) if len(pending) > 1 else pending[0]
            yield data[:batch_size]
            rest = data[batch_size:]
            pending, have = ([rest], len(rest)) if len(rest) else ([], 0)
