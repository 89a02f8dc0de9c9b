"""Whole-process time of every analysis' default command on one model, and of ``reports.build`` cold.

    python benchmarks/analysis_speed.py [--checkpoint PATH] [--baseline-src DIR] [--only A,B] [--repeats N]

Each command runs as its own process with its default settings (targets: ≤ 10 s per analysis,
``python -m reports.build`` ≤ 15 s cold with its default two jobs):

    python -m analyses.<name> --checkpoint CK --out TMP/<name>
    python -m reports.build --checkpoint CK --out TMP/report

With ``--baseline-src DIR`` — another revision's source, e.g. ``git archive c1bfe51 | tar -x -C DIR`` —
every command also runs with ``PYTHONPATH=DIR`` (the same virtual environment), alternating with the
current code, and the table gives the ratio old / new. Wall seconds, CPU seconds (user + system, child
processes included) and the 1-minute load average before each run are printed: on a shared machine
compare the ratios, not the absolute times. The reference workload (``benchmarks/reference.py``) runs
before and after the table: its seconds say how fast the machine was. Without ``--checkpoint``: the
cached default model.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reference import reference_seconds  # benchmarks/reference.py (this script's folder is on sys.path)

ANALYSES = (
    "flip_alignment",
    "qk_circuit",
    "pe_ablation",
    "head_ablation",
    "length_generalisation",
    "tolerance",
    "interchange",
)
REPO = Path(__file__).resolve().parents[1]


def timed(argv: list[str], source: Path | None) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, load average before) of one process, run in ``source`` (None: this
    checkout); it must succeed. (``python -m`` puts its working folder first on sys.path.)"""
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        argv, env=env, cwd=source or REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, load


def command(name: str, checkpoint: Path, out: Path) -> list[str]:
    module = "reports.build" if name == "report" else f"analyses.{name}"
    return [sys.executable, "-m", module, "--checkpoint", str(checkpoint), "--out", str(out / name)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, help="model (default: the cached default model)")
    p.add_argument("--baseline-src", type=Path, help="source tree of the revision to compare with")
    p.add_argument("--only", help="comma-separated subset of: " + ", ".join((*ANALYSES, "report")))
    p.add_argument("--repeats", type=int, default=1, help="runs of each command (medians are shown)")
    args = p.parse_args()
    if args.checkpoint is None:
        from models.train.default_model import ensure_default_model

        args.checkpoint = ensure_default_model(print)
    names = args.only.split(",") if args.only else [*ANALYSES, "report"]
    sources = (
        {"new": None} if args.baseline_src is None else {"new": None, "old": args.baseline_src.resolve()}
    )
    print(f"{args.checkpoint}, {os.cpu_count()} CPUs; wall / CPU s [load before], medians of {args.repeats}")
    print(f"reference workload before: {reference_seconds():.2f} s", flush=True)
    for name in names:
        runs: dict[str, list[tuple[float, float, float]]] = {label: [] for label in sources}
        for _ in range(args.repeats):
            for label, source in sources.items():  # alternate, so both see the same machine
                with tempfile.TemporaryDirectory() as tmp:
                    runs[label].append(timed(command(name, args.checkpoint, Path(tmp)), source))
        cells = []
        for label, measured in runs.items():
            wall, cpu, load = (statistics.median(column) for column in zip(*measured))
            cells.append(f"{label} {wall:6.1f} / {cpu:6.1f} s [{load:.1f}]")
        ratio = ""
        if "old" in runs:
            old, new = (statistics.median(w for w, _, _ in runs[k]) for k in ("old", "new"))
            ratio = f"  old/new {old / new:.1f}x"
        print(f"{name:<22}" + "   ".join(cells) + ratio, flush=True)
    print(f"reference workload after: {reference_seconds():.2f} s (the machine's speed)")


if __name__ == "__main__":
    main()
