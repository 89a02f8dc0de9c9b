"""``models.load_model`` as a notebook uses it: the default model, devices, and warnings that catch a
wrongly loaded checkpoint (a Flax file's head count is a guess)."""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch

from models import CheckpointError, load_model
from models.storage.checkpoints import to_flax_tree, write_flax_msgpack
from models.train.default_model import CACHE_ENV, default_model_dir
from tests.conftest import make_model


def flax_file(model, path):
    """Our model in the tutorial's Flax format (which uses LayerNorm eps 1e-6)."""
    model.cfg.layer_norm_eps = 1e-6
    for module in model.modules():
        if hasattr(module, "eps"):
            module.eps = 1e-6
    write_flax_msgpack(to_flax_tree(model), path)
    return path


def messages(record) -> list[str]:
    return [str(w.message) for w in record]


def test_no_path_loads_the_cached_default_model(tmp_path, monkeypatch, trained_fast_run):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    target = default_model_dir()
    shutil.copytree(trained_fast_run, target)  # a finished run (with its SHA256SUMS): no training needed
    model = load_model()
    assert model.checkpoint_path == str(target / "model.pt")
    assert not model.training


def test_a_device_the_machine_lacks_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    from models import save_model

    save_model(make_model(), path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device, reason in (("cuda", "CUDA is not available"), ("tpu", "not a device torch knows")):
        with pytest.raises(CheckpointError, match=reason) as info:
            load_model(path, device=device)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_flax_without_a_head_count_says_it_assumed_one(tmp_path, trained_fast_run):
    path = flax_file(load_model(trained_fast_run), tmp_path / "tutorial.msgpack")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = load_model(path)
    assert model.cfg.n_heads == 1
    assert messages(record) == [
        f"{path}: a Flax checkpoint does not store its head count; assumed n_heads=1 "
        "(pass n_heads= if it was trained with more)"
    ]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        load_model(path, n_heads=1)  # told: nothing to say, and the trained model reverses
    assert record == []


def test_a_wrong_head_count_is_caught_by_the_accuracy_check(tmp_path, trained_fast_run):
    path = flax_file(load_model(trained_fast_run), tmp_path / "tutorial.msgpack")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        load_model(path, n_heads=2)  # trained with one head: the qkv rows are split wrongly
    (message,) = messages(record)
    assert "near chance (0.10)" in message and "is n_heads=2 right?" in message


def test_an_untrained_model_warns_and_the_check_can_be_skipped(tmp_path):
    path = flax_file(make_model(seed=2), tmp_path / "random.msgpack")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        load_model(path)
    assert any("wrong n_heads? Flax files do not store it and 1 was assumed" in m for m in messages(record))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        load_model(path, n_heads=1, check_accuracy=False)
    assert record == []


def test_numpy_and_torch_integers_are_head_counts(tmp_path, trained_fast_run):
    import numpy as np

    path = flax_file(load_model(trained_fast_run), tmp_path / "tutorial.msgpack")
    for n_heads in (np.int64(1), torch.tensor(1)):
        assert load_model(path, n_heads=n_heads).cfg.n_heads == 1
    with pytest.raises(CheckpointError, match="n_heads must be an integer, got True"):
        load_model(path, n_heads=True)


def test_on_the_command_line_the_head_count_note_names_the_flag(tmp_path, trained_fast_run):
    """The CLI says --n-heads (its own flag) in one "note:" line, not a raw warnings line with n_heads=."""
    from analyses.frame.loading import resolve_model

    path = flax_file(load_model(trained_fast_run), tmp_path / "tutorial.msgpack")
    lines: list[str] = []
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        resolve_model(path, log=lines.append)
    assert record == [] and len(lines) == 1
    assert lines[0].startswith("note: ") and "(pass --n-heads if it was trained with more)" in lines[0]
    assert "n_heads=" not in lines[0]
