"""Wall time of the README's test command, and the same in units of a fixed reference workload.

    python benchmarks/suite_time.py [--rounds 2] [--baseline-src DIR]

This shared 2-core machine's speed drifts by up to 2x over a day: neighbours share its caches and
cores without showing up as steal time. One suite time therefore says little on its own. Each round
runs the reference workload three times, then the suite (``python -m pytest -n 2 -q`` in this
checkout, then in ``--baseline-src DIR``, which is another revision's tree, e.g. ``git archive REV |
tar -x -C DIR``, alternating), then the reference workload three times again.

The reference workload is ``benchmarks/reference.py``'s: CPU seconds of a fixed mix of the suite's
kind of work in a fresh process. For each suite run it prints the wall seconds, the machine-wide busy
CPU seconds from ``/proc/stat`` (Ray's daemons and Chromium count too; Linux only), the six
reference times around it, and the suite in reference units: wall / the median reference. That last
ratio can be compared across hours and days; wall seconds cannot.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from reference import reference_seconds  # benchmarks/reference.py (this script's folder is on sys.path)

REPO = Path(__file__).resolve().parents[1]
SUITE = ["-m", "pytest", "-n", "2", "-q"]
REFERENCE_RUNS = 3  # before and after each suite: the machine's speed changes within seconds too


def busy_cpu() -> float:
    """Busy CPU seconds of the whole machine so far (user, nice, system, irq, softirq), or NaN."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[:7])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def suite(source: Path) -> tuple[float, float, int]:
    """(wall seconds, machine busy CPU seconds, exit code) of the README's test command in ``source``."""
    cpu0, start = busy_cpu(), time.perf_counter()
    argv = [sys.executable, *SUITE]
    done = subprocess.run(argv, cwd=source, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wall, cpu = time.perf_counter() - start, busy_cpu() - cpu0
    if done.returncode:
        tail = done.stdout.decode(errors="replace").strip().splitlines()[-3:]
        print(f"  the suite in {source} exited with {done.returncode}: {' | '.join(tail)}", flush=True)
    return wall, cpu, done.returncode


def _seconds(values: list[float]) -> str:
    return ",".join(f"{v:.2f}" for v in values)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=1, help="suite runs per source (default 1)")
    p.add_argument("--baseline-src", type=Path, help="another revision's tree, run alternating with this one")
    args = p.parse_args()
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1, got {args.rounds}")
    if args.baseline_src is not None and not (args.baseline_src / "tests").is_dir():
        p.error(f"--baseline-src {args.baseline_src} is not a source tree with a tests/ folder")
    sources = {"this": REPO}
    if args.baseline_src is not None:
        sources["base"] = args.baseline_src.resolve()
    print(f"{os.cpu_count()} CPUs; suite = python {' '.join(SUITE)}")
    ratios: dict[str, list[float]] = {label: [] for label in sources}
    for round_ in range(args.rounds):
        for label, source in sources.items():
            before = [reference_seconds() for _ in range(REFERENCE_RUNS)]
            wall, cpu, code = suite(source)
            after = [reference_seconds() for _ in range(REFERENCE_RUNS)]
            reference = statistics.median(before + after)
            ratios[label].append(wall / reference)
            print(
                f"round {round_ + 1} {label}: suite {wall:6.1f} s wall, {cpu:6.1f} s busy CPU (exit {code}); "
                f"reference {_seconds(before)} / {_seconds(after)} s; "
                f"suite = {wall / reference:6.1f} references",
                flush=True,
            )
    for label, values in ratios.items():
        print(f"{label}: median {statistics.median(values):.1f} references per suite")


if __name__ == "__main__":
    main()
