"""Time and size of ``python -m reports.build`` for one model (target: ≤ 20 s on a 2-core CPU, ≤ 5 MB).

Each configuration runs the real command line in a fresh process into an empty folder (cold: every
analysis computed) and then again into the same folder (warm: every analysis reused, only the page is
rebuilt). Reported per run: wall seconds, CPU seconds of the process and its workers (user + system;
on an idle machine wall ≈ CPU / parallel share), the page size, and the load average before it ran —
on a shared machine the wall time says more about the neighbours than about the build, the CPU time
does not. Configurations alternate (jobs 1, 2, 1, 2, ...) so both see the same load.

    python benchmarks/report_speed.py [--checkpoint PATH] [--num-sequences 2000] [--rounds 2]

Without ``--checkpoint`` a model is trained first with ``models.train.cli --preset fast`` (seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_build(checkpoint: Path, out: Path, num_sequences: int, jobs: int) -> dict[str, float]:
    """One ``reports.build`` process: wall and CPU seconds (its own and its workers'), page bytes."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "reports.build", "--checkpoint", str(checkpoint), "--out", str(out)]
    cmd += ["--num-sequences", str(num_sequences), "--jobs", str(jobs)]
    load = os.getloadavg()[0]
    cpu0, start = _children_cpu(), time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu0
    if done.returncode:
        raise SystemExit(f"reports.build failed:\n{done.stderr}")
    return {"wall": wall, "cpu": cpu, "bytes": (out / "report.html").stat().st_size, "load": load}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, help="model to report on (default: train a fast-preset model)")
    p.add_argument("--num-sequences", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint
        if checkpoint is None:
            train = [
                sys.executable,
                "-m",
                "models.train",
                "--preset",
                "fast",
                "--out",
                tmp,
                "--no-progress-bar",
            ]
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            subprocess.run(train, cwd=ROOT, env=env, check=True, capture_output=True)
            checkpoint = Path(tmp) / "fast-seed0"
        results: dict[str, list[dict[str, float]]] = {}
        for r in range(args.rounds):
            for jobs in (1, 2):
                out = Path(tmp) / f"report-{jobs}-{r}"
                results.setdefault(f"cold jobs={jobs}", []).append(
                    run_build(checkpoint, out, args.num_sequences, jobs)
                )
                results.setdefault(f"warm jobs={jobs}", []).append(
                    run_build(checkpoint, out, args.num_sequences, jobs)
                )
    print(f"reports.build on {checkpoint}, {args.num_sequences:,} sequences, {os.cpu_count()} CPUs")
    print(f"{'case':<14}{'wall s (median)':>17}{'CPU s (median)':>16}{'page MB':>9}{'load avg':>10}")
    summary = {}
    for case, runs in results.items():
        wall = statistics.median(r["wall"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        size = runs[0]["bytes"] / 1e6
        load = statistics.mean(r["load"] for r in runs)
        summary[case] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "page_mb": round(size, 3)}
        print(f"{case:<14}{wall:>17.1f}{cpu:>16.1f}{size:>9.2f}{load:>10.1f}")
    cold1, cold2 = summary["cold jobs=1"], summary["cold jobs=2"]
    print(f"wall ratio cold jobs=2 / jobs=1: {cold2['wall_s'] / cold1['wall_s']:.2f}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
