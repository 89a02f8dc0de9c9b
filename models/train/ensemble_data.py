"""The data of a seed ensemble (``models.train.ensemble``): the members' splits stacked on a leading
model axis.

A training batch is ``[M, batch, pos]`` whose row m is exactly the batch ``ReverseDataModule(seed_m)``
would give member m at that step (its own splits, its own shuffling order per epoch, the last
incomplete batch dropped); validation batches are slices of the stacked val split.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from models.encoder.data import ReverseSplits, make_splits
from models.train.args import TrainArgs
from models.train.datamodule import EVAL_BATCH_SIZE, SliceBatchSampler, _as_is
from models.train.lightning_import import pl

__all__ = ["EnsembleData"]


class _StackedSampler(Sampler):
    """One ``SliceBatchSampler`` per member, advanced together: yields ``[M, batch]`` index tensors."""

    def __init__(self, samplers: list[SliceBatchSampler]):
        self.samplers = samplers

    def set_epoch(self, epoch: int) -> None:
        for sampler in self.samplers:
            sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.samplers[0])

    def __iter__(self) -> Iterator[Tensor]:
        for indices in zip(*self.samplers):
            yield torch.stack(indices)


class _StackedTokens(Dataset):
    """``dataset[idx [M, b]] = tokens[m, idx[m]]`` for every member m: ``[M, b, pos]``."""

    def __init__(self, tokens: Tensor):
        self.tokens = tokens  # [M, n, pos]

    def __len__(self) -> int:
        return self.tokens.shape[1]

    def __getitem__(self, indices: Tensor | slice) -> Tensor:
        if isinstance(indices, slice):
            return self.tokens[:, indices]
        return self.tokens[torch.arange(len(self.tokens)).unsqueeze(1), indices]


class EnsembleData(pl.LightningDataModule):
    """The members' splits stacked: ``[M, n, pos]`` per split; training batches ``[M, batch, pos]``
    where row m is the batch ``ReverseDataModule(seed_m)`` would give at that step (same permutation
    per epoch, last incomplete batch dropped)."""

    def __init__(self, seeds: Sequence[int], args: TrainArgs, eval_batch_size: int = EVAL_BATCH_SIZE):
        super().__init__()
        cfg = args.encoder_config()
        self.seeds, self.batch_size, self.eval_batch_size = list(seeds), args.batch_size, eval_batch_size
        self.members: list[ReverseSplits] = [
            make_splits(seed, cfg.n_ctx, cfg.d_vocab, args.train_size, args.val_size, args.test_size)
            for seed in self.seeds
        ]
        self.train_tokens = torch.stack([s.train for s in self.members])
        self.val_tokens = torch.stack([s.val for s in self.members])

    @property
    def steps_per_epoch(self) -> int:
        return self.train_tokens.shape[1] // self.batch_size

    def train_dataloader(self) -> DataLoader:
        n = self.train_tokens.shape[1]
        samplers = [SliceBatchSampler(n, self.batch_size, True, seed, drop_last=True) for seed in self.seeds]
        return DataLoader(
            _StackedTokens(self.train_tokens),
            sampler=_StackedSampler(samplers),
            batch_size=None,
            collate_fn=_as_is,
        )

    def val_dataloader(self) -> DataLoader:
        sampler = SliceBatchSampler(self.val_tokens.shape[1], self.eval_batch_size, shuffle=False)
        return DataLoader(
            _StackedTokens(self.val_tokens), sampler=sampler, batch_size=None, collate_fn=_as_is
        )
