"""Seeds trained together (models.encoder.stacked, models.train.ensemble) against the same seeds
trained alone.

The contract (docs/reproducibility.md): the batched forward and gradients equal one model's to float32
rounding, with the tolerance derived in ``tests/rounding.py`` (the batched products sum in another order
than one model's, and by how much that shows depends on the CPU's kernels, so no test here asserts bits
across the two paths); a trained member follows the recipe of the seed trained alone — its trajectory
stays within rounding growth of the solo run's, and it stops on its own validation accuracy; the same
command on the same machine gives the same bits."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from models import EncoderConfig, HookedReverseEncoder
from models.encoder.stacked import eval_logits, layer0_tables, stacked_logits, stacked_loss
from models.train.args import parse_args
from models.train.ensemble_args import ensemble_blocker, ensemble_key
from models.train.lightning_import import pl
from tests.rounding import assert_within_rounding, gradient_path_length, path_length

pytestmark = pytest.mark.rounding

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
    torch.testing.assert_close(no_grad, logits.detach(), rtol=0, atol=0)  # one path: bit for bit
    # Evaluation's path: layer 0 looked up per (token, position), equal to rounding (checked below).
    looked_up = eval_logits(cfg, {k: v.detach() for k, v in params.items()}, tokens)
    with pytest.raises(ValueError, match="layer-0 tables of"):
        eval_logits(cfg, params, tokens[..., :-1], layer0_tables(cfg, params, tokens.shape[-1]))
    batch, pos = tokens.shape[1:]
    n_logits, n_grads = path_length(cfg, pos), gradient_path_length(cfg, batch, pos)
    for m, model in enumerate(models):
        model.zero_grad()
        alone, loss = model(tokens[m], return_type="both")
        loss.backward()
        exact_model = copy.deepcopy(model).double()  # the same function in float64: the reference
        exact_model.zero_grad()
        exact, exact_loss = exact_model(tokens[m], return_type="both")
        exact_loss.backward()
        exact_grads = {n: p.grad for n, p in exact_model.named_parameters()}
        for label, value in (("stacked", logits[m]), ("evaluation", looked_up[m]), ("alone", alone)):
            assert_within_rounding(value, exact, n_logits, f"{label} logits")
        for name, p in model.named_parameters():
            for label, grad in (("stacked", stacked_grads[m][name]), ("alone", p.grad)):
                assert_within_rounding(grad, exact_grads[name], n_grads, f"{label} grad of {name}")


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
        for m, member in enumerate(module.members):
            best = module.best_state[m]
            _AtTheEnd.seen[m] = {
                "adam_steps": module.adam_steps[m],  # read from Adam's state of the member's rows
                "unchanged_since_best": all(torch.equal(v, best[k]) for k, v in member.state_dict().items()),
            }


RECIPE_SEEDS = (3, 4, 5)
RECIPE_ARGS = ("--d-model", "16", "--train-size", "640", "--val-size", "64", "--test-size", "64")
RECIPE_STEPS = 15
# Gradient norms of these seeds' first batches are 0.37-0.69: at 0.5 the clipping acts on some steps
# and members and not on others, so a clipping norm shared by the members changes their updates.
RECIPE_CLIP = 0.5
# How far a member may be from its seed trained alone, relative to how far training moved the weights
# (``_divergence``). Rounding alone: the two paths start 1e-7 apart (the gradients, see above) and Adam's
# 15 steps grow that to 0.6-4.1e-4 (measured on this machine's native, avx2, default and MKL-CBWR
# kernel paths). A member trained with another recipe moves differently from the first steps: 0.09
# and more for each way an ensemble could get the recipe wrong (docs/reproducibility.md lists the
# mutations and their figures). 1e-2 lies a factor 24 above the first and 9 below the second.
RECIPE_DIVERGENCE = 1e-2


def _flat(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.double().flatten() for k, v in sorted(state.items()) if v.is_floating_point()])


def _weights(run: Path) -> torch.Tensor:
    return _flat(torch.load(run / "model.pt", weights_only=True)["state_dict"])


def _distance(a: Path, b: Path) -> float:
    """‖θ_a − θ_b‖: the Euclidean distance between two runs' weights."""
    return float((_weights(a) - _weights(b)).norm())


def _divergence(member: Path, alone: Path, argv: list[str]) -> float:
    """‖θ_member − θ_alone‖ / ‖θ_alone − θ_init‖: the distance of a member's weights from those of its
    seed trained alone, in units of how far training moved that seed from its initialisation."""
    args = parse_args(argv).resolve()
    pl.seed_everything(args.seed, workers=True, verbose=False)  # the initialisation models.train.cli gives it
    init = _flat(HookedReverseEncoder(args.encoder_config()).state_dict())
    a, b = _weights(member), _weights(alone)
    return float((a - b).norm() / (b - init).norm())


@pytest.fixture(scope="module")
def recipe_runs(tmp_path_factory) -> list[tuple[Path, Path, list[str]]]:
    """Seeds 3, 4 and 5 (d_model 16, 640 training sequences, 15 steps of the fast preset, clipping at
    ``RECIPE_CLIP``) trained as one ensemble and each alone: (member, alone, argv) per seed."""
    from models.train import lightning_module
    from models.train.cli import train
    from models.train.ensemble import train_ensemble

    root = tmp_path_factory.mktemp("recipe")
    extra = (*RECIPE_ARGS, "--max-steps", str(RECIPE_STEPS))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lightning_module, "CLIP_NORM", RECIPE_CLIP)
        together = train_ensemble([_argv(s, root / "together", *extra) for s in RECIPE_SEEDS])
        alone = [train(_argv(s, root / "alone", *extra)) for s in RECIPE_SEEDS]
    return [(m, a, _argv(s, root, *extra)) for m, a, s in zip(together, alone, RECIPE_SEEDS)]


def test_members_follow_the_recipe_of_the_seeds_trained_alone(recipe_runs):
    """Statistical equivalence at the start of training, where it is sharp: a member stays within
    rounding growth of its seed trained alone. Catches (each shown by mutation, docs/reproducibility.md)
    a clipping norm shared by the members, a wrong learning rate or schedule for a member, and the members
    drawing their batches in one shared order."""
    divergences = {Path(a).name: _divergence(m, a, argv) for m, a, argv in recipe_runs}
    assert max(divergences.values()) <= RECIPE_DIVERGENCE, divergences
    for member, alone, _ in recipe_runs:
        ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (member, alone))
        assert ma["steps"] == mb["steps"] == RECIPE_STEPS and ma["max_iters"] == mb["max_iters"]


def _first_perfect_validation(run: Path) -> int | None:
    """The step of the first validation in the run's own log whose accuracy is 100%."""
    rows = (p.split(",") for p in (run / "logs" / "version_0" / "metrics.csv").read_text().splitlines()[1:])
    return next((int(r[1]) for r in rows if r[4] and float(r[4]) == 1.0), None)


def test_members_stop_on_their_own_accuracy_like_the_seeds_trained_alone(ensemble_and_alone):
    """A member stops at the first validation where *its own* accuracy is 100% (a member stopping on
    another's accuracy fails this), as its seed trained alone does, and ends as that run ends: perfect
    on validation, its weights nearer that run's than the other seed's by far. Bits are not compared:
    the batched products round differently from one model's, and over 120-160 steps of Adam that
    difference grows, by an amount that depends on the CPU (docs/reproducibility.md)."""
    together, alone = ensemble_and_alone
    interval = parse_args(_argv(0, Path("x"))).resolve().val_check_interval  # steps between validations
    for m, (member, single) in enumerate(zip(together, alone)):
        ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (member, single))
        assert ma["steps"] == ma["first_perfect_step"] == _first_perfect_validation(member)
        # Lightning's logger records the validation after step s at row s − 1; the ensemble's log at s
        assert mb["steps"] == mb["first_perfect_step"] == _first_perfect_validation(single) + 1
        # rounding may move the crossing of 100% to a neighbouring validation, no further
        assert abs(ma["steps"] - mb["steps"]) <= interval, (ma["steps"], mb["steps"])
        for metrics in (ma, mb):
            assert metrics["stop_reason"] == "perfect" and metrics["stopped_at_perfect"]
            assert metrics["val_acc"] == 1.0 and metrics["max_iters"] == ma["max_iters"]
        assert ma["ensemble"] == {"seeds": [0, 1], "member": m, "size": 2}
        assert "ensemble" not in mb or mb["ensemble"] is None
        assert (
            json.loads((member / "config.json").read_text())["encoder"]
            == json.loads((single / "config.json").read_text())["encoder"]
        )
        own, other = _distance(member, single), _distance(member, alone[1 - m])
        assert own < 0.1 * other, (own, other)


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


def test_members_write_snapshots_as_a_run_trained_alone_does(tmp_path):
    """``--save-every-log-steps`` in an ensemble: each member's ``snapshots/`` holds the steps, file
    names and metadata a run trained alone writes, they load with ``models.load_model`` (sha256 checked)
    and ``analyses.training_dynamics.find_snapshots`` finds them; step 0 is the seed's initialisation
    (bit for bit: the same seed, no arithmetic yet) and the last snapshot ("final") is the member's
    weights when it stopped, which its model.pt holds when its best validation was its last; each
    snapshot of seed 3 is within rounding growth of the same step's snapshot of seed 3 trained alone
    (a snapshot one step early or late is 10-50% of the distance travelled away)."""
    from analyses.training_dynamics.snapshots import find_snapshots
    from models import load_model
    from models.train.cli import train
    from models.train.ensemble import train_ensemble

    extra = (*RECIPE_ARGS, "--max-steps", "12", "--save-every-log-steps", "3")
    together = train_ensemble([_argv(s, tmp_path / "together", *extra) for s in (3, 4)])
    alone = train(_argv(3, tmp_path / "alone", *extra))
    solo = {p.name: torch.load(p, weights_only=True)["metadata"] for p in (alone / "snapshots").glob("*.pt")}
    assert sorted(solo) == ["step_000000.pt", "step_000001.pt", "step_000002.pt", "step_000005.pt",
                            "step_000010.pt", "step_000012.pt"]  # fmt: skip
    for seed, member in zip((3, 4), together):
        files = sorted((member / "snapshots").glob("*.pt"))
        assert [p.name for p in files] == sorted(solo)
        assert (member / "snapshots" / "SHA256SUMS").is_file()
        for path in files:
            load_model(path, check_accuracy=False)  # the format and the recorded sha256
            meta = torch.load(path, weights_only=True)["metadata"]
            assert set(meta) == set(solo[path.name]) and meta["seed"] == seed and meta["run"] == member.name
            assert {k: meta[k] for k in ("step", "epoch", "preset")} == {
                k: solo[path.name][k] for k in ("step", "epoch", "preset")
            }
        steps = [step for step, _ in find_snapshots(member)]
        assert steps == [0, 1, 2, 5, 10, 12]
        args = parse_args(_argv(seed, tmp_path, *extra)).resolve()
        pl.seed_everything(seed, workers=True, verbose=False)
        init = HookedReverseEncoder(args.encoder_config()).state_dict()
        first = torch.load(files[0], weights_only=True)["state_dict"]
        assert all(torch.equal(first[k], init[k]) for k in init)
        if seed == 3:  # the same steps as the seed trained alone: within rounding growth of its snapshots
            flat_init = _flat(init)
            for path in files[2:]:
                mine = _flat(torch.load(path, weights_only=True)["state_dict"])
                theirs = _flat(torch.load(alone / "snapshots" / path.name, weights_only=True)["state_dict"])
                assert float((mine - theirs).norm()) <= RECIPE_DIVERGENCE * float((theirs - flat_init).norm())
        last = torch.load(files[-1], weights_only=True)
        metrics = json.loads((member / "metrics.json").read_text())
        assert last["metadata"]["final"] is True and metrics["steps"] == 12
        weights = torch.load(member / "model.pt", weights_only=True)
        if weights["metadata"]["step"] == 12:
            assert all(torch.equal(weights["state_dict"][k], v) for k, v in last["state_dict"].items())
        else:  # model.pt holds an earlier best validation: not the final weights
            assert any(not torch.equal(weights["state_dict"][k], v) for k, v in last["state_dict"].items())


def test_clip_per_member_clips_each_member_on_its_own_norm():
    """Hand-built: member 0's gradients have norm 13 (‖(3, 4)‖ = 5 and ‖12‖ = 12 over two tensors), member
    1's 0.5; clipped at 1, member 0 is scaled by 1 / (13 + 1e-6) and member 1 is left alone. And on
    random gradients each member's rows equal ``clip_grad_norm_`` of that member alone, to rounding."""
    from models.train.ensemble_module import clip_per_member

    a = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    b = torch.tensor([[[12.0]], [[0.0]]])
    norms = clip_per_member([a, b], 1.0)
    torch.testing.assert_close(norms, torch.tensor([13.0, 0.5]))
    scale = 1.0 / (13.0 + 1e-6)
    torch.testing.assert_close(a, torch.tensor([[3.0 * scale, 4.0 * scale], [0.3, 0.4]]))
    torch.testing.assert_close(b, torch.tensor([[[12.0 * scale]], [[0.0]]]))
    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(3, *shape, generator=generator) * 4 for shape in ((5, 7), (7,), (2, 3, 4))]
    expected = []
    for m in range(3):
        alone = [torch.nn.Parameter(torch.zeros_like(g[m])) for g in grads]
        for p, g in zip(alone, grads):
            p.grad = g[m].clone()
        torch.nn.utils.clip_grad_norm_(alone, 5.0)
        expected.append([p.grad for p in alone])
    clip_per_member(grads, 5.0)
    for m in range(3):
        for g, e in zip(grads, expected[m]):
            torch.testing.assert_close(g[m], e, rtol=1e-6, atol=0)
