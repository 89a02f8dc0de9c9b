"""``models.load_model`` as a notebook uses it: the default model, devices, and warnings that catch a
wrongly loaded checkpoint (a Flax file's head count is a guess)."""

from __future__ import annotations

import json
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


@pytest.fixture(scope="module")
def length_6_tutorial_checkpoint(tmp_path_factory):
    """A correct model of length 6 (the fast preset at --seq-len 6, d_model 16, stopped at 100%), saved
    as the tutorial's Lightning checkpoint, which records no sequence length (16 is assumed)."""
    from models.storage.checkpoints import _param_map
    from models.train.cli import train
    from tests.test_checkpoints import tutorial_checkpoint

    root = tmp_path_factory.mktemp("length6")
    argv = ["--preset", "fast", "--seq-len", "6", "--d-model", "16", "--train-size", "4000", "--epochs", "4"]
    run = train([*argv, "--val-size", "200", "--test-size", "200", "--out", str(root), "--no-progress-bar"])
    model = load_model(run, check_accuracy=False)
    assert json.loads((run / "metrics.json").read_text())["val_acc"] == 1.0 and model.cfg.n_ctx == 6
    ours = model.state_dict()
    state = {theirs: ours[name] for name, theirs, _ in _param_map(model.cfg.n_layers, "torch")}
    path = root / "tutorial-length6.ckpt"
    torch.save(tutorial_checkpoint(state, n_heads=1, n_layers=1), path)
    return path


def test_the_trained_check_runs_at_the_length_analysed(length_6_tutorial_checkpoint, tmp_path, capsys):
    """Issue 24: the check ran at the recorded (for a tutorial file, assumed) length 16 whatever
    ``--seq-len`` said, and called a correct length-6 model untrained."""
    from analyses.flip_alignment import __main__ as fa_cli

    path = length_6_tutorial_checkpoint
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = load_model(path, check_length=6)
        assert load_model(path).cfg.n_ctx == 16  # the length a tutorial file is assumed to have ...
    (message,) = messages(record)  # ... at which this model is at chance, and the check says so
    assert "random sequences of length 16 is near chance (0.10)" in message
    tokens = torch.randint(0, 10, (256, 6), generator=torch.Generator().manual_seed(3))
    assert bool((model(tokens).argmax(-1) == tokens.flip(-1)).all())  # and it is right at length 6
    # the analysis at --seq-len 6: no warning, the measured accuracy 1.0 (a length beyond the encoding
    # falls back to the recorded length, where the analysis' own check names the problem)
    argv = ["--checkpoint", str(path), "--seq-len", "6", "--num-sequences", "64", "--quiet", "--out"]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert fa_cli.main([*argv, str(tmp_path / "out")]) == 0
    assert not [m for m in messages(record) if "near chance" in m]
    assert "near chance" not in capsys.readouterr().err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["settings"]["seq_len"] == 6 and metrics["accuracy"]["mean"] == 1.0
