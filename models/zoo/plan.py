"""The zoo's plan: the grid of runs, their state in the zoo folder, how they are grouped into tasks, and
how long the plan should take. No torch, Lightning or Ray here: ``--list`` and bad input answer at once.

Grid: seeds 0..S−1 × d_model × sequence length × categories × heads × layers × positional encoding
(``fast`` preset), plus a control without positional encoding (smallest heads and layers) for every
d_model × length × categories. A run's folder name is ``<preset>_<pe>_L<layers>_H<heads>_seed<s>``, with
``_D<d_model>``, ``_N<length>``, ``_C<categories>`` before ``_seed`` for values other than the
tutorial's 32, 16 and 10 (so the default grid keeps the names it always had).

Tasks: runs that differ only in their seed form one ensemble task (``models.train.ensemble``; at most
``max_ensemble`` members each); a run that cannot join one (dropout, ``--max-time``, several
devices, or an interrupted run folder to continue) is a task of its own. Tasks are ordered by their
predicted length, longest first (:func:`predicted_work`: runs without positional encoding never stop
early and run their whole budget, ~10× the steps of the others) — a longest-processing-time order: the
long ones start early and the short ones fill the gaps; on several slots an ensemble predicted longer
than a slot's share of the work is halved until none is, so that no straggler ends the zoo on one core.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GRID_FLAGS = (
    "--seed", "--n-heads", "--n-layers", "--positional-embedding", "--out", "--name", "--preset",
    "--d-model", "--seq-len", "--n-ctx", "--num-categories", "--d-vocab",
)  # fmt: skip
DEFAULTS = {"d_model": 32, "n_ctx": 16, "d_vocab": 10}  # the tutorial's: left out of run names
THROUGHPUT_FILE = "zoo_throughput.json"  # in models.train.default_model.cache_dir()


@dataclass(frozen=True)
class ZooRun:
    """One cell of the grid."""

    name: str
    seed: int
    n_heads: int
    n_layers: int
    positional_embedding: str
    role: str  # "grid" or "control"
    d_model: int = 32
    n_ctx: int = 16  # sequence length
    d_vocab: int = 10  # categories


@dataclass
class ZooSpec:
    """The grid. ``train_args`` are extra ``models.train.cli`` flags applied to every run."""

    seeds: int = 5
    heads: tuple[int, ...] = (1, 2, 4)
    layers: tuple[int, ...] = (1, 2)
    positional_embeddings: tuple[str, ...] = ("sinusoidal", "learned")
    d_models: tuple[int, ...] = (32,)
    seq_lens: tuple[int, ...] = (16,)
    num_categories: tuple[int, ...] = (10,)
    control: bool = True
    preset: str = "fast"
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    train_args: list[str] = field(default_factory=list)

    def runs(self) -> list[ZooRun]:
        """Every run: grid first (architecture-major, seeds inner), then the controls."""
        from models.encoder.config import POSITIONAL_EMBEDDINGS

        lists = (
            ("heads", self.heads),
            ("layers", self.layers),
            ("d-model", self.d_models),
            ("seq-len", self.seq_lens),
            ("num-categories", self.num_categories),
        )
        for name, values in (("seeds", [self.seeds]), *lists):
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise ValueError(f"--{name}: expected positive integers, got {list(values)}")
        for pe in self.positional_embeddings:
            if pe not in POSITIONAL_EMBEDDINGS:
                raise ValueError(
                    f"--positional-embeddings: unknown {pe!r} (choose from {POSITIONAL_EMBEDDINGS})"
                )
        shapes = [
            (d, n, c)
            for d in sorted(set(self.d_models))
            for n in sorted(set(self.seq_lens))
            for c in sorted(set(self.num_categories))
        ]
        runs = [
            self._run(seed, h, n_layers, pe, "grid", shape)
            for shape in shapes
            for pe in dict.fromkeys(self.positional_embeddings)
            for n_layers in sorted(set(self.layers))
            for h in sorted(set(self.heads))
            for seed in range(self.seeds)
        ]
        if self.control and "none" not in self.positional_embeddings:
            runs += [
                self._run(s, min(self.heads), min(self.layers), "none", "control", shape)
                for shape in shapes
                for s in range(self.seeds)
            ]
        return runs

    def _run(
        self, seed: int, n_heads: int, n_layers: int, pe: str, role: str, shape: tuple[int, int, int]
    ) -> ZooRun:
        d_model, n_ctx, d_vocab = shape
        name = f"{self.preset}_{pe}_L{n_layers}_H{n_heads}"
        for tag, key, value in (("D", "d_model", d_model), ("N", "n_ctx", n_ctx), ("C", "d_vocab", d_vocab)):
            if value != DEFAULTS[key]:
                name += f"_{tag}{value}"
        return ZooRun(f"{name}_seed{seed}", seed, n_heads, n_layers, pe, role, d_model, n_ctx, d_vocab)

    def train_argv(self, run: ZooRun, out: Path | str) -> list[str]:
        """The ``models.train.cli`` command line of one run."""
        return [
            "--preset", self.preset, "--seed", str(run.seed),
            "--n-heads", str(run.n_heads), "--n-layers", str(run.n_layers),
            "--positional-embedding", run.positional_embedding,
            "--d-model", str(run.d_model), "--seq-len", str(run.n_ctx), "--num-categories", str(run.d_vocab),
            "--out", str(out), "--name", run.name,
            "--accelerator", self.accelerator, "--devices", str(self.devices),
            "--strategy", self.strategy, "--num-nodes", str(self.num_nodes),
            "--no-progress-bar",
            *self.train_args,
        ]  # fmt: skip


def check_train_args(args: Sequence[str]) -> None:
    """The grid's own flags may not be given after ``--``, in any spelling ``models.train.cli`` accepts.

    The flags are parsed by ``models.train.cli``'s own parser — the one that will read them — so a
    prefix it would expand (``--see 7`` for ``--seed 7``, ``--ou``, ``--n-h``, ``--pres``, ``--nam``),
    an ``=`` form or an alias (``--n-ctx``) is caught as the full flag; an ambiguous prefix or an
    unknown flag is that parser's one-line error."""
    import argparse

    from models.train.args import build_parser

    parser = build_parser()
    reserved = {}
    for action in parser._actions:  # argparse keeps no public list of an action's option strings
        action.default = argparse.SUPPRESS  # so that only the flags given appear in the namespace
        if any(option in GRID_FLAGS for option in action.option_strings):
            reserved[action.dest] = action
    given = vars(parser.parse_args(list(args)))
    for dest, action in reserved.items():
        if dest in given:
            flag = next(option for option in action.option_strings if option in GRID_FLAGS)
            typed = [a for a in args if a.startswith("--") and _expands_to(a.split("=", 1)[0], action)]
            shown = typed[0] if typed else flag
            raise ValueError(f"-- {shown}: the zoo sets {flag} itself; use the zoo's own options")


def _expands_to(typed: str, action) -> bool:
    """Whether argparse could read the flag ``typed`` as one of ``action``'s options (a prefix)."""
    return len(typed) > 2 and any(option.startswith(typed) for option in action.option_strings)


def run_state(run_dir: Path, argv: Sequence[str] | None = None) -> tuple[str, int | None]:
    """("finished" | "corrupt" | "partial" | "new", metrics.json mtime) from the files a run folder holds.

    A run is finished only when its files say so and are what was written: ``model.pt`` matches the
    sha256 recorded when it was written and ``metrics.json`` parses to the right shape
    (``models.storage.integrity.finished_run_problem``); otherwise it is "corrupt" (trained again).
    With the run's ``models.train.cli`` command line ``argv``, a finished run that ``models.train.cli`` would
    continue — stopped by ``--max-time``, or by a ``--max-steps`` below the new one, with its
    ``checkpoints/last.ckpt`` — is "extendable"."""
    from models.storage.integrity import finished_run_problem

    metrics = run_dir / "metrics.json"
    if (run_dir / "model.pt").is_file() and metrics.is_file():
        if finished_run_problem(run_dir) is not None:
            return "corrupt", None
        stamp = metrics.stat().st_mtime_ns
        if argv is not None and (run_dir / "checkpoints" / "last.ckpt").is_file():
            from models.train.args import parse_args

            try:
                done = json.loads(metrics.read_text())
            except (OSError, ValueError):
                return "finished", stamp
            max_steps = parse_args(list(argv)).max_steps
            reason = done.get("stop_reason")
            more = max_steps is None or max_steps > done.get("steps", 0)
            if reason == "max_time" or (reason == "max_steps" and more):
                return "extendable", stamp
        return "finished", stamp
    return ("partial" if (run_dir / "config.json").is_file() else "new"), None


# --- tasks ----------------------------------------------------------------------------------------
@dataclass
class ZooTask:
    """Runs trained together in one process: one run, or the members of one ensemble."""

    runs: list[ZooRun]
    argvs: list[list[str]]  # models.train.cli command lines, --out the zoo folder
    ensemble: bool
    resume: bool = False  # a single run continued from the files already in the zoo folder
    note: str | None = None  # why a run trains alone
    work: float = 0.0  # predicted length (predicted_work), set by plan_tasks

    @property
    def name(self) -> str:
        first = self.runs[0].name
        if len(self.runs) == 1:
            return first
        return f"{first.rsplit('_seed', 1)[0]}_seeds{self.runs[0].seed}-{self.runs[-1].seed}"

    def cost(self) -> float:
        """The predicted length, for ordering only (:func:`predicted_work`; set by :func:`plan_tasks`)."""
        return self.work


# PE runs of the fast preset stopped at 120-280 steps in the default zoo (5 seeds × 12 architectures);
# a run that may stop at 100% is predicted to take this many steps (or one validation interval, or its
# budget, whichever decides). Runs without positional encoding never reach 100%: their whole budget.
PREDICTED_STOP_STEPS = 200
TRAIN_EVAL_SEQUENCES = 10_000  # models.train.cli's final train metrics: the first 10k training sequences


def predicted_work(args, members: int) -> float:
    """A task's predicted length in token-layer units, for ordering tasks longest first::

        work = members · W · n_ctx · (E + steps · (3 · batch + val_size / v))
        W    = n_layers · d_model · (1 + n_heads / 4)      arithmetic per token, relative
        E    = min(train_size, 10,000) + test_size         the final evaluation's sequences
        v    = steps between validations

    ``steps`` is the step budget (``--max-steps``, else epochs × steps per epoch) for runs that cannot
    stop early (no positional encoding: they never reach 100%; or stop-at-perfect off), otherwise
    ``min(budget, max(PREDICTED_STOP_STEPS, v))``; a forward and backward pass is ~3 forwards."""
    cfg = args.encoder_config()
    per_epoch = max(1, args.train_size // args.batch_size)
    budget = args.max_steps if args.max_steps is not None else args.epochs * per_epoch
    vci = args.val_check_interval
    every = vci if isinstance(vci, int) else max(1, int(round(float(vci or 1.0) * per_epoch)))
    stops = bool(args.stop_at_perfect) and cfg.positional_embedding != "none"
    steps = min(budget, max(PREDICTED_STOP_STEPS, every)) if stops else budget
    per_token = cfg.n_layers * cfg.d_model * (1 + cfg.n_heads / 4)
    sequences = min(args.train_size, TRAIN_EVAL_SEQUENCES) + args.test_size
    sequences += steps * (3 * args.batch_size + args.val_size / every)
    return members * per_token * cfg.n_ctx * sequences


def _balanced(tasks: list[ZooTask], slots: int) -> list[ZooTask]:
    """Split ensembles predicted to take more than one slot's share of the work (total / slots): such a
    task alone would outlast the ideal end of the zoo while the other slots idle. Each split halves an
    ensemble (the larger half first), only as often as needed (an ensemble amortises its overhead over
    its members, which the prediction does not count); a single run is never split."""
    if slots < 2:
        return tasks
    limit = sum(t.work for t in tasks) / slots
    out: list[ZooTask] = []
    queue = list(tasks)
    while queue:
        task = queue.pop(0)
        if task.work <= limit or len(task.runs) < 2:
            out.append(task)
            continue
        half = (len(task.runs) + 1) // 2
        for runs, argvs in ((task.runs[:half], task.argvs[:half]), (task.runs[half:], task.argvs[half:])):
            share = task.work * len(runs) / len(task.runs)
            note = task.note if len(runs) > 1 else "split to balance the slots"
            queue.append(ZooTask(runs, argvs, ensemble=len(runs) > 1, note=note, work=share))
    return out


def plan_tasks(
    spec: ZooSpec,
    runs: Sequence[ZooRun],
    out: Path,
    ensemble: bool = True,
    max_ensemble: int = 8,
    slots: int = 1,
) -> list[ZooTask]:
    """Group the unfinished ``runs`` into tasks (see the module docstring), longest predicted first;
    with ``slots`` > 1 tasks running at once, ensembles too long for a balanced end are split."""
    from models.train.args import parse_args
    from models.train.ensemble_args import ensemble_blocker, ensemble_key

    tasks: list[ZooTask] = []
    groups: dict[str, list[tuple[ZooRun, list[str]]]] = {}
    for run in runs:
        argv = spec.train_argv(run, out)
        state = run_state(out / run.name, argv)[0]
        args = parse_args(argv).resolve()
        if state in ("partial", "extendable"):
            note = "continues its checkpoint" if state == "partial" else "continues a finished run"
            work = predicted_work(args, 1)
            tasks.append(ZooTask([run], [argv], ensemble=False, resume=True, note=note, work=work))
            continue
        blocker = ensemble_blocker(args) if ensemble else "--no-ensemble"
        if blocker:
            tasks.append(ZooTask([run], [argv], ensemble=False, note=blocker, work=predicted_work(args, 1)))
            continue
        groups.setdefault(ensemble_key(args), []).append((run, argv, args))
    for members in groups.values():
        for start in range(0, len(members), max_ensemble):
            chunk = members[start : start + max_ensemble]
            work = predicted_work(chunk[0][2], len(chunk))
            runs_, argvs = [r for r, _, _ in chunk], [a for _, a, _ in chunk]
            tasks.append(ZooTask(runs_, argvs, ensemble=len(chunk) > 1, work=work))
    tasks = _balanced(tasks, slots)
    tasks.sort(key=lambda task: -task.cost())  # longest first; stable: plan order among equals
    return tasks


# --- measured throughput and the estimate ---------------------------------------------------------
def _throughput_path() -> Path:
    from models.train.default_model import cache_dir

    return cache_dir() / THROUGHPUT_FILE


def record_throughput(engine: str, ensemble: bool, slots: float, runs: int, seconds: float) -> None:
    """Remember how fast a zoo trained on this machine (the newest measurement per engine/ensemble)."""
    if runs < 1 or seconds <= 0:
        return
    path = _throughput_path()
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        data = {}
    data[f"{engine}/{'ensemble' if ensemble else 'single'}"] = {
        "runs": runs,
        "seconds": round(seconds, 3),
        "slots": slots,
        "runs_per_minute": round(60 * runs / seconds, 3),
        "measured": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass  # an estimate is a convenience: never fail a zoo for it


# Measured by benchmarks/zoo_time.py on this project's 2-core machine at load 3-5 (docs/guide/performance.md);
# used until this machine has measured its own.
DEFAULT_RUNS_PER_MINUTE = {
    "ray/ensemble": 21.6,
    "ray/single": 21.6,
    "sequential/ensemble": 27.7,
    "sequential/single": 16.9,
}


def estimate(engine: str, ensemble: bool, pending: int) -> tuple[float, str]:
    """(seconds, where the throughput came from) for ``pending`` runs."""
    key = f"{engine}/{'ensemble' if ensemble else 'single'}"
    source = f"default for {key} (benchmarks/zoo_time.py on 2 cores)"
    rate = DEFAULT_RUNS_PER_MINUTE[key]
    path = _throughput_path()
    try:
        measured = json.loads(path.read_text()).get(key) if path.is_file() else None
    except (OSError, ValueError):
        measured = None
    if measured and measured.get("runs_per_minute", 0) > 0:
        rate = float(measured["runs_per_minute"])
        source = (
            f"measured here: {measured['runs']} runs in {measured['seconds']:.0f} s, {measured['measured']}"
        )
    return 60.0 * pending / rate, f"{rate:.1f} runs/min, {source}"


REPRODUCIBILITY = (
    "Same command, same versions, same machine (equal 'kernels') and same 'ensemble_members': the same "
    "bits. A run trained in an ensemble equals its seed trained alone (--no-ensemble, or models.train) "
    "to float32 rounding at each step, not bit for bit: the batched products sum in another order, and "
    "training grows that difference; runs whose 'kernels' differ (another CPU capability or BLAS) may "
    "differ likewise. Such runs are statistically equivalent: the same recipe, per member."
)


def manifest_document(spec: ZooSpec, engine: dict[str, Any], records: list[dict[str, Any]]) -> dict:
    return {
        "schema_version": 2,
        "kind": "reverse-encoder-zoo",
        "spec": asdict(spec),
        "engine": engine,
        # the contract (docs/reproducibility.md); per run, "ensemble_members" and "kernels" say which
        # runs it is bit-comparable with
        "reproducibility": REPRODUCIBILITY,
        "runs": records,
        "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
