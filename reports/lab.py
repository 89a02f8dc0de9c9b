"""Data for the report's interventions lab (``reports/static/lab.js``, on the forward pass of ``model.js``).

The lab applies the ablations of :mod:`interp.ablation` and the patterns of :mod:`interp.patterns` in the
page and measures them live on a batch of sequences: the first ``count`` sequences of the evaluation
stream every analysis reads (``analyses.frame.sequences.token_batches`` with the report's seed; the
explorer's examples are the first of them). What the page cannot re-state exactly travels from Python:

- ``head_means``: :func:`interp.ablation.head_means` of every layer over the lab's sequences, the z̄
  that mean ablation puts in place of a head's output (as ``analyses.head_ablation`` does, over the
  sequences it evaluates);
- ``permutations``: the seeded permutations σ of ``ablate_positional_encoding(model, "shuffle", seed=s)``
  (:func:`interp.ablation.shuffled_positions`, torch's generator) for every sequence length the page
  accepts and the seeds ``SHUFFLE_SEEDS`` (those of ``analyses.pe_ablation``);
- ``checkpoint``: the path the "copy as Python" snippet loads the model from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from analyses.frame.loading import evaluating
from interp.ablation import head_means, num_bands, shuffled_positions
from reports.explorer import _encode, example_tokens, max_typed_length

LAB_SEQUENCES = 256
SHUFFLE_SEEDS = range(5)


def lab_data(
    model: Any, seed: int, count: int = LAB_SEQUENCES, checkpoint: str | Path | None = None
) -> dict[str, Any]:
    """The JSON object the lab script reads (see the module docstring)."""
    cfg = model.cfg
    tokens = example_tokens(cfg, seed, count)
    with evaluating(model), torch.no_grad():
        means = head_means(model, [tokens])
    longest = max_typed_length(cfg)
    return {
        "seed": seed,
        "count": count,
        "seq_len": cfg.n_ctx,
        "tokens": tokens.tolist(),
        "head_means": {str(layer): _encode(value) for layer, value in means.items()},
        "permutations": {
            str(s): [shuffled_positions(n, s).tolist() for n in range(1, longest + 1)] for s in SHUFFLE_SEEDS
        },
        "num_bands": num_bands(cfg.d_model) if cfg.positional_embedding == "sinusoidal" else 0,
        "checkpoint": None if checkpoint is None else str(Path(checkpoint).expanduser().absolute()),
    }
