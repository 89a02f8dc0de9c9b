"""The reverse task as a ``LightningDataModule`` whose batches are slices of one token tensor.

The tutorial's ``Dataset`` returns one sequence per index and the ``DataLoader`` stacks 128 of them
per batch: 128 Python calls and a collate for a [128, 16] tensor. Here the sampler yields the indices
of a whole batch (a slice of a shuffled permutation) and the dataset answers with ``tokens[indices]``,
one gather per batch. The order is a pure function of (seed, epoch), so a resumed run sees the same
batches as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch
from jaxtyping import Int
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from models.encoder.data import NUM_CATEGORIES, SEQ_LEN, TEST_SIZE, TRAIN_SIZE, VAL_SIZE, make_splits
from models.train.lightning_import import pl

EVAL_BATCH_SIZE = 1024  # evaluation has no gradient: bigger batches, fewer Python round trips


def _epoch_seed(seed: int, epoch: int) -> int:
    digest = hashlib.sha256(f"reverse-task-shuffle/{seed}/{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class SliceBatchSampler(Sampler):
    """Yields one batch of indices at a time: consecutive slices of a permutation (or of 0..n-1).

    With ``shuffle`` the permutation of epoch e comes from a ``torch.Generator`` seeded from
    (seed, e); Lightning calls :meth:`set_epoch` before every epoch, and iterating without it
    moves on to the next epoch's order by itself. :meth:`resume_at` makes the next pass over epoch e
    start after the batches a killed run had already consumed.
    """

    def __init__(
        self, num_items: int, batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False
    ):
        self.num_items, self.batch_size = num_items, batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.epoch = 0
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, consumed: int) -> None:
        """Skip the first ``consumed`` batches the next time epoch ``epoch`` is iterated."""
        self._resume = (epoch, consumed)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_items // self.batch_size
        return -(-self.num_items // self.batch_size)

    def __iter__(self) -> Iterator[Tensor | slice]:
        # A generator: this body runs at the first next(), after Lightning's set_epoch.
        first = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            first, self._resume = self._resume[1], None
        if self.shuffle:
            generator = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.num_items, generator=generator)
        for i in range(first, len(self)):
            start, stop = i * self.batch_size, min((i + 1) * self.batch_size, self.num_items)
            # Unshuffled batches are plain slices: views of the token tensor, no copy at all.
            yield order[start:stop] if self.shuffle else slice(start, stop)
        self.epoch += 1


class TokenBatches(Dataset):
    """A dataset indexed by whole batches: ``dataset[idx] = (tokens[idx], tokens[idx].flip(-1))``."""

    def __init__(self, tokens: Int[Tensor, "n pos"]):
        self.tokens = tokens

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, indices: Tensor | slice) -> tuple[Int[Tensor, "b pos"], Int[Tensor, "b pos"]]:
        batch = self.tokens[indices]
        return batch, batch.flip(-1)


def _as_is(batch):
    return batch  # the dataset already returns a finished batch: nothing to collate


def slice_loader(
    tokens: Int[Tensor, "n pos"], batch_size: int, shuffle: bool, seed: int = 0, drop_last: bool = False
) -> DataLoader:
    """A ``DataLoader`` over whole-batch slices of ``tokens`` (no per-item collation, no workers)."""
    sampler = SliceBatchSampler(len(tokens), batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
    return DataLoader(TokenBatches(tokens), sampler=sampler, batch_size=None, collate_fn=_as_is)


class ReverseDataModule(pl.LightningDataModule):
    """Train / val / test splits of the reverse task (see :mod:`models.encoder.data`), batched by slicing.

    The defaults are the tutorial's: 50,000 / 1,000 / 10,000 sequences of 16 digits from 10
    categories, training batches of 128 with the last incomplete batch dropped (390 steps per epoch).
    """

    def __init__(
        self,
        num_categories: int = NUM_CATEGORIES,
        seq_len: int = SEQ_LEN,
        train_size: int = TRAIN_SIZE,
        val_size: int = VAL_SIZE,
        test_size: int = TEST_SIZE,
        batch_size: int = 128,
        eval_batch_size: int = EVAL_BATCH_SIZE,
        seed: int = 0,
        drop_last: bool = True,
    ):
        super().__init__()
        for name, value in [
            ("num_categories", num_categories),
            ("seq_len", seq_len),
            ("train_size", train_size),
            ("val_size", val_size),
            ("test_size", test_size),
            ("batch_size", batch_size),
            ("eval_batch_size", eval_batch_size),
        ]:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if drop_last and batch_size > train_size:
            raise ValueError(
                f"batch_size={batch_size} is larger than train_size={train_size}: an epoch would be empty"
            )
        self.save_hyperparameters()
        self.splits = None
        self._train_sampler: SliceBatchSampler | None = None
        self._resume: tuple[int, int] | None = None

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one epoch on one device (what the cosine schedule's max_iters counts)."""
        hp = self.hparams
        return hp.train_size // hp.batch_size if hp.drop_last else -(-hp.train_size // hp.batch_size)

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            hp = self.hparams
            self.splits = make_splits(
                hp.seed, hp.seq_len, hp.num_categories, hp.train_size, hp.val_size, hp.test_size
            )

    def _tokens(self, split: str) -> Tensor:
        self.setup()
        return self.splits[split]

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        loader = slice_loader(self._tokens("train"), hp.batch_size, True, hp.seed, hp.drop_last)
        self._train_sampler = loader.sampler
        if self._resume is not None:
            self._train_sampler.resume_at(*self._resume)
        return loader

    # Exact resumption. Lightning restarts an interrupted epoch's loader from its first batch (it
    # cannot know how far a plain DataLoader had got); these hooks, saved in every checkpoint, record
    # how many batches of the current epoch were consumed so that the resumed run sees exactly the
    # batches the uninterrupted run would have. Single process only: under a distributed sampler
    # Lightning's own behaviour applies.
    def state_dict(self) -> dict[str, int]:
        trainer = self.trainer
        if trainer is None or trainer.world_size != 1 or trainer.state.fn != "fit":
            return {}
        epoch, per_epoch = trainer.current_epoch, int(trainer.num_training_batches)
        return {"epoch": epoch, "consumed": trainer.global_step - epoch * per_epoch}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        if "epoch" in state_dict and "consumed" in state_dict:
            self._resume = (int(state_dict["epoch"]), int(state_dict["consumed"]))
            if self._train_sampler is not None:
                self._train_sampler.resume_at(*self._resume)

    def val_dataloader(self) -> DataLoader:
        return slice_loader(self._tokens("val"), self.hparams.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return slice_loader(self._tokens("test"), self.hparams.eval_batch_size, shuffle=False)
