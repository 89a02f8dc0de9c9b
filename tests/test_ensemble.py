"""Seeds trained together (models.encoder.stacked, models.train.ensemble): the batched forward against
the hooked model, and ensemble members against the same seeds trained alone — equal to the last bit on a
CPU with
one thread (the tolerance the measurement supports: every weight of every member of the default zoo
was equal, see docs/guide/zoo.md), stop at 100% per member included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from interp.metrics import flip_mass
from models import EncoderConfig, HookedReverseEncoder, load_model
from models.encoder.stacked import stacked_logits, stacked_loss
from models.train.args import parse_args
from models.train.ensemble_args import ensemble_blocker, ensemble_key
from models.train.lightning_import import pl

ARCHITECTURES = [
    dict(n_layers=1, n_heads=1),
    dict(n_layers=2, n_heads=4, normalization="pre"),
    dict(n_layers=2, n_heads=2, positional_embedding="learned", d_model=24, n_ctx=12, d_vocab=7),
    dict(n_layers=1, n_heads=2, positional_embedding="none", normalization="pre"),
]


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=lambda a: "-".join(f"{k}={v}" for k, v in a.items()))
def test_stacked_forward_and_gradients_equal_each_hooked_model(arch):
    cfg = EncoderConfig(**arch)
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(HookedReverseEncoder(cfg))
    tokens = torch.randint(0, cfg.d_vocab, (3, 8, cfg.n_ctx), generator=torch.Generator().manual_seed(0))
    names = [name for name, _ in models[0].named_parameters()]
    params = {n: torch.stack([dict(m.named_parameters())[n] for m in models]) for n in names}
    if cfg.positional_embedding == "sinusoidal":
        params["pos_embed.table"] = models[0].pos_embed.table
    logits = stacked_logits(cfg, params, tokens)
    stacked_loss(logits, tokens).sum().backward()
    stacked_grads = [{n: p.grad.clone() for n, p in m.named_parameters()} for m in models]
    with torch.no_grad():  # evaluation computes in place: the same operations, the same bits
        no_grad = stacked_logits(cfg, {k: v.detach() for k, v in params.items()}, tokens)
    torch.testing.assert_close(no_grad, logits.detach(), rtol=0, atol=0)
    for m, model in enumerate(models):
        model.zero_grad()
        alone, loss = model(tokens[m], return_type="both")
        loss.backward()
        torch.testing.assert_close(logits[m], alone, rtol=0, atol=0)
        for name, p in model.named_parameters():
            torch.testing.assert_close(stacked_grads[m][name], p.grad, rtol=0, atol=0, msg=name)


def _argv(seed: int, out: Path, *extra: str) -> list[str]:
    return [
        "--preset",
        "fast",
        "--seed",
        str(seed),
        "--out",
        str(out),
        "--name",
        f"s{seed}",
        "--no-progress-bar",
        *extra,
    ]


@pytest.fixture(scope="module")
def ensemble_and_alone(tmp_path_factory) -> tuple[list[Path], list[Path]]:
    """Seeds 0 and 1 of the fast preset (they reach 100% at different steps, 120 and 160) trained as
    one ensemble and each alone, on less data (4,096 training and 128 validation sequences: the same
    stopping steps in about half the time)."""
    from models.train.cli import train
    from models.train.ensemble import train_ensemble

    root = tmp_path_factory.mktemp("ensemble")
    extra = ("--train-size", "4096", "--val-size", "128", "--test-size", "500", "--epochs", "3")
    together = train_ensemble([_argv(s, root / "together", *extra) for s in (0, 1)], callbacks=[_AtTheEnd()])
    alone = [train(_argv(s, root / "alone", *extra)) for s in (0, 1)]
    return together, alone


class _AtTheEnd(pl.Callback):
    """Records, when training ends, each member's Adam step count and whether its live weights are
    still those of its best validation."""

    seen: dict = {}

    def on_train_end(self, trainer, module):
        optimizer = module.optimizers().optimizer
        for m, member in enumerate(module.members):
            first = next(member.parameters())
            best = module.best_state[m]
            _AtTheEnd.seen[m] = {
                "adam_steps": int(optimizer.state[first]["step"]),
                "unchanged_since_best": all(torch.equal(v, best[k]) for k, v in member.state_dict().items()),
            }


def test_members_equal_the_seeds_trained_alone(ensemble_and_alone):
    together, alone = ensemble_and_alone
    tokens = torch.randint(0, 10, (256, 16), generator=torch.Generator().manual_seed(1))
    for member, single in zip(together, alone):
        a, b = load_model(member, check_accuracy=False), load_model(single, check_accuracy=False)
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)
        _, cache_a = a.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
        _, cache_b = b.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")
        assert torch.equal(
            flip_mass(cache_a["blocks.0.attn.hook_pattern"]), flip_mass(cache_b["blocks.0.attn.hook_pattern"])
        )
        ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (member, single))
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "steps",
                    "first_perfect_step", "stop_reason", "stopped_at_perfect", "max_iters"):  # fmt: skip
            assert ma[key] == mb[key], key
        assert ma["ensemble"] == {"seeds": [0, 1], "member": together.index(member), "size": 2}
        assert (
            json.loads((member / "config.json").read_text())["encoder"]
            == json.loads((single / "config.json").read_text())["encoder"]
        )


def test_a_member_at_100_percent_stops_while_the_other_trains_on(ensemble_and_alone):
    together, _ = ensemble_and_alone
    steps = [json.loads((p / "metrics.json").read_text())["steps"] for p in together]
    assert steps[0] != steps[1]  # seed 0 and seed 1 reach 100% at different validations
    # the member that finished first took no Adam step after it, and its weights did not move
    assert [_AtTheEnd.seen[m]["adam_steps"] for m in (0, 1)] == steps
    assert _AtTheEnd.seen[0]["unchanged_since_best"] and _AtTheEnd.seen[1]["unchanged_since_best"]
    for p in together:
        metrics = json.loads((p / "metrics.json").read_text())
        assert metrics["stop_reason"] == "perfect" and metrics["val_acc"] == 1.0
        assert torch.load(p / "model.pt", weights_only=True)["metadata"]["step"] == metrics["steps"]
        log = (p / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
        assert log[0] == "epoch,step,train_acc,train_loss,val_acc,val_loss" and len(log) > 5


def test_the_same_command_gives_the_same_weights(tmp_path):
    from models.train.ensemble import train_ensemble

    tiny = (
        "--d-model",
        "16",
        "--train-size",
        "640",
        "--val-size",
        "64",
        "--test-size",
        "64",
        "--max-steps",
        "15",
    )
    runs = [train_ensemble([_argv(s, tmp_path / f"try{t}", *tiny) for s in (3, 4, 5)]) for t in (1, 2)]
    for a, b in zip(*runs):
        assert (a / "model.pt").read_bytes() != b"" and json.loads((a / "metrics.json").read_text())[
            "steps"
        ] == 15
        sa = torch.load(a / "model.pt", weights_only=True)["state_dict"]
        sb = torch.load(b / "model.pt", weights_only=True)["state_dict"]
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_which_runs_may_share_an_ensemble(tmp_path):
    base = parse_args(_argv(0, tmp_path)).resolve()
    assert ensemble_blocker(base) is None
    assert ensemble_key(base) == ensemble_key(parse_args(_argv(7, tmp_path / "elsewhere")).resolve())
    assert ensemble_key(base) != ensemble_key(parse_args(_argv(7, tmp_path, "--lr", "0.01")).resolve())
    for extra, reason in (
        (("--dropout", "0.1"), "dropout"),
        (("--save-every-log-steps", "4"), "--save-every-log-steps"),
        (("--max-time", "60"), "--max-time"),
        (("--devices", "2"), "--devices/--strategy/--num-nodes"),
    ):
        assert ensemble_blocker(parse_args(_argv(0, tmp_path, *extra)).resolve()) == reason


def test_train_ensemble_refuses_bad_members(tmp_path):
    from models.train.ensemble import train_ensemble

    with pytest.raises(ValueError, match="differ in more than --seed"):
        train_ensemble([_argv(0, tmp_path), _argv(1, tmp_path, "--lr", "0.01")])
    with pytest.raises(ValueError, match="dropout is not supported"):
        train_ensemble([_argv(0, tmp_path, "--dropout", "0.1"), _argv(1, tmp_path, "--dropout", "0.1")])
    with pytest.raises(ValueError, match="share a run name"):
        train_ensemble([_argv(0, tmp_path), [*_argv(1, tmp_path)[:-3], "--name", "s0", "--no-progress-bar"]])
    (tmp_path / "s0").mkdir()
    (tmp_path / "s0" / "junk").write_text("x")
    with pytest.raises(ValueError, match="exists and is not empty"):
        train_ensemble([_argv(0, tmp_path), _argv(1, tmp_path)])
    assert not (tmp_path / "s1").exists()
