"""Peak memory of ``python -m analyses.flip_alignment`` (or ``--analysis``) against the number of sequences.

Runs the whole command (imports, the stream of sequences, the bootstrap, figures and report) for each
``--num-sequences`` in a child process and reads the child's peak resident set size from the kernel
(``wait4``'s ``ru_maxrss``). With ``--baseline DIR`` (a checkout of an earlier commit) the same commands
run from that source tree too, alternating, up to ``--baseline-max`` sequences (the old code keeps
every sequence's statistics, so 10^7 would need ~6 GB there).

    python benchmarks/bootstrap_memory.py --checkpoint runs/fast-seed0 [--sizes 1e4 1e5 1e6 1e7]
        [--baseline ../old-checkout --baseline-max 1e6] [--json out.json]
        [--analysis interchange --flags="--sites z"]

Target (issue 16): peak flat from 10^4 to 10^7 sequences, 10^7 under 1 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(
    tree: Path, checkpoint: str, n: int, out: Path, analysis: str = "flip_alignment", flags: str = ""
) -> dict[str, float]:
    """Run ``analysis`` from source tree ``tree`` on ``n`` sequences; peak RSS (bytes) and seconds."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", f"analyses.{analysis}", "--checkpoint", checkpoint]
    argv += ["--num-sequences", str(n), "--out", str(out), "--quiet", *flags.split()]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    # The working folder is the source tree: python -m puts it first on sys.path.
    process = subprocess.Popen(argv, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    stderr = process.stderr.read().decode() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{tree} at {n:,} sequences failed:\n{stderr}")
    return {"peak_bytes": usage.ru_maxrss * 1024, "seconds": seconds, "load": load}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--sizes", nargs="+", type=float, default=[1e4, 1e5, 1e6, 1e7])
    p.add_argument("--baseline", type=Path, help="source tree of the code to compare with")
    p.add_argument("--baseline-max", type=float, default=1e6)
    p.add_argument("--json", type=Path)
    p.add_argument("--analysis", default="flip_alignment", help="analysis package to run")
    p.add_argument("--flags", default="", help="more flags for the analysis, e.g. '--sites z'")
    args = p.parse_args()
    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="bootstrap-memory-"))
    try:
        for n in (int(s) for s in args.sizes):
            trees = [("this", ROOT)]
            if args.baseline and n <= args.baseline_max:
                trees.append(("baseline", args.baseline.resolve()))
            for label, tree in trees:
                got = measure(tree, args.checkpoint, n, scratch / f"{label}-{n}", args.analysis, args.flags)
                rows.append({"code": label, "num_sequences": n, **got})
                print(  # noqa: T201
                    f"{label:8s} {n:>12,} sequences  peak {got['peak_bytes'] / 2**30:6.3f} GiB  "
                    f"{got['seconds']:8.1f} s  (load {got['load']:.1f})",
                    flush=True,
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
