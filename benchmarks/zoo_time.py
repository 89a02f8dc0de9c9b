"""How long does the default model zoo take? Time one representative run per architecture, extrapolate.

The default zoo (``python -m models.zoo``) is seeds × heads {1, 2, 4} × layers {1, 2} × positional
encoding {sinusoidal, learned} plus the ``none`` control, ``fast`` preset. This trains the zoo with ONE
seed (seed 0: one run of each of the 13 architectures) in a fresh folder, in this process, and
extrapolates to the full grid:

    estimate = import seconds + Σ_architectures seconds(seed 0) × seeds

and the same with the process's CPU seconds instead of wall seconds, which is what an idle machine
would take (each run trains on one thread; on a shared machine the wall time grows with the load).

Runs reach 100% validation accuracy after a seed-dependent number of steps, so the estimate carries
that spread (shown per architecture as steps); ``--full`` trains the whole default grid instead and
reports its measured wall time. Target: the default grid ≤ 600 s on a 2-core CPU. The 1-minute load
average is printed before and after: on a shared machine other processes slow every run.

    python benchmarks/zoo_time.py [--seeds 5] [--full] [--out DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BUDGET_SECONDS = 600.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5, help="seeds of the grid to extrapolate to (default 5)")
    p.add_argument("--full", action="store_true", help="train the whole default grid and time it")
    p.add_argument("--out", type=Path, help="zoo folder (default: a fresh temporary folder)")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args()

    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    import pytorch_lightning  # noqa: F401  (timed: every zoo process pays it once)

    from models.zoo import ZooSpec, run_zoo

    import_seconds = time.perf_counter() - t0
    out = args.out or Path(tempfile.mkdtemp(prefix="zoo_time_"))
    spec = ZooSpec(seeds=args.seeds if args.full else 1)
    started, cpu_started = time.perf_counter(), time.process_time()
    records = run_zoo(out, spec, log=lambda message: print(message, file=sys.stderr, flush=True))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    trained = [r for r in records if r["status"] in ("trained", "resumed")]
    if len(trained) != len(records):
        print(f"warning: {len(records) - len(trained)} runs were already in {out} and not timed")

    print(
        f"\nimport (Lightning, torch, models): {import_seconds:.1f} s; load average before {load_before:.2f}"
    )
    print(f"{'run':<36}{'seconds':>9}{'steps':>7}{'val acc':>9}")
    for r in records:
        print(f"{r['name']:<36}{r['seconds']:>9.1f}{r.get('steps') or 0:>7}{r.get('val_acc') or 0:>9.4f}")
    per_seed = sum(r["seconds"] for r in trained)
    result = {
        "import_seconds": import_seconds,
        "runs": records,
        "zoo_wall_seconds": wall,
        "zoo_cpu_seconds": cpu,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
    }
    if args.full:
        total = import_seconds + wall
        print(
            f"\nfull grid ({len(records)} runs): {total:.1f} s measured "
            f"({total / BUDGET_SECONDS:.2f} × budget)"
        )
        result["full_grid_seconds"] = total
    else:
        estimate = import_seconds + per_seed * args.seeds
        print(
            f"\none seed of every architecture: {per_seed:.1f} s → {args.seeds} seeds ≈ {estimate:.1f} s "
            f"({estimate / BUDGET_SECONDS:.2f} × the {BUDGET_SECONDS:.0f} s budget)"
        )
        result["estimate_seconds"] = estimate
        cpu_estimate = import_seconds + cpu * args.seeds
        print(
            f"CPU seconds of this process: {cpu:.1f} → {args.seeds} seeds ≈ {cpu_estimate:.1f} s: "
            "the wall time "
            "of an otherwise idle machine (one training thread per run)"
        )
        result["estimate_cpu_seconds"] = cpu_estimate
    print(f"load average after {result['load_average_after']:.2f} on {os.cpu_count()} CPUs")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
