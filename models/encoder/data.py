"""Deterministic data for the reverse task (no Lightning here: analyses import this module).

A sequence is ``seq_len`` digits drawn uniformly from ``0..num_categories-1``; its target is the
same sequence reversed, ``targets = tokens.flip(-1)``, i.e. ``targets[i] = tokens[N-1-i]``.

The tutorial draws its three datasets from the global RNG; here every split has its own seed, derived
from the run's seed and the split's name, so the splits differ from one another and the same seed
always gives the same tensors, whatever else the process has drawn before.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from machine.scalars import as_int

# The tutorial's sizes: 50,000 / 1,000 / 10,000 sequences of 16 digits from 10 categories.
TRAIN_SIZE, VAL_SIZE, TEST_SIZE = 50_000, 1_000, 10_000
SEQ_LEN, NUM_CATEGORIES = 16, 10
SPLITS: tuple[str, ...] = ("train", "val", "test")


def _check_positive(name: str, value: object) -> None:
    as_int(value, name, minimum=1)


def make_reverse_data(
    num_sequences: int, seq_len: int = SEQ_LEN, num_categories: int = NUM_CATEGORIES, seed: int = 0
) -> Int[Tensor, "n seq_len"]:
    """``num_sequences`` uniform random digit sequences from a ``torch.Generator`` seeded with ``seed``."""
    _check_positive("num_sequences", num_sequences)
    _check_positive("seq_len", seq_len)
    _check_positive("num_categories", num_categories)
    generator = torch.Generator().manual_seed(as_int(seed, "seed", minimum=0))
    return torch.randint(0, num_categories, (num_sequences, seq_len), generator=generator)


def reverse_targets(tokens: Int[Tensor, "... pos"]) -> Int[Tensor, "... pos"]:
    """The reverse task's labels: ``targets[..., i] = tokens[..., N-1-i]``."""
    return tokens.flip(-1)


def split_seed(seed: int, split: str) -> int:
    """Seed of one split, derived from the run's seed: sha256("<seed>/<split>") cut to 63 bits.

    A hash rather than ``seed + k`` so that run seed 1's train split is not run seed 0's val split.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    digest = hashlib.sha256(f"reverse-task/{seed}/{split}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass(frozen=True)
class ReverseSplits:
    """The three token tensors of one run; targets are ``tokens.flip(-1)`` and are not stored."""

    train: Int[Tensor, "n_train seq_len"]
    val: Int[Tensor, "n_val seq_len"]
    test: Int[Tensor, "n_test seq_len"]

    def __getitem__(self, split: str) -> Tensor:
        if split not in SPLITS:
            raise KeyError(f"split must be one of {SPLITS}, got {split!r}")
        return getattr(self, split)


def make_splits(
    seed: int = 0,
    seq_len: int = SEQ_LEN,
    num_categories: int = NUM_CATEGORIES,
    train_size: int = TRAIN_SIZE,
    val_size: int = VAL_SIZE,
    test_size: int = TEST_SIZE,
) -> ReverseSplits:
    """Train / val / test token tensors, each from its own derived seed (see :func:`split_seed`)."""
    sizes = {"train": train_size, "val": val_size, "test": test_size}
    return ReverseSplits(
        **{
            split: make_reverse_data(size, seq_len, num_categories, split_seed(seed, split))
            for split, size in sizes.items()
        }
    )


def make_split(
    split: str,
    num_sequences: int | None = None,
    seed: int = 0,
    seq_len: int = SEQ_LEN,
    num_categories: int = NUM_CATEGORIES,
) -> Int[Tensor, "n seq_len"]:
    """One split alone (e.g. the test set for an analysis), identical to ``make_splits(...)[split]``."""
    seed_of_split = split_seed(seed, split)  # validates the split's name first
    if num_sequences is None:
        num_sequences = {"train": TRAIN_SIZE, "val": VAL_SIZE, "test": TEST_SIZE}[split]
    return make_reverse_data(num_sequences, seq_len, num_categories, seed_of_split)
