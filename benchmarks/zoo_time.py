"""How fast is the model zoo, and how close are ensemble members to seeds trained alone?

Every number comes from whole commands or whole calls measured in this one run, baseline and candidate
interleaved, with the 1-minute load average printed beside each (a shared machine slows everything):

1. ``zoo``: the default 65-run zoo (``python -m models.zoo --out DIR``) as separate processes —
   today's engine (``--engine sequential --no-ensemble``: one run after the other in one process), the
   sequential engine with ensembles, the Ray engine without and with ensembles (the default: an
   embedded local Ray instance, one task per CPU). Target: Ray + ensembles ≥ 3× less wall time than
   today's engine, with every core ≥ 90% busy over the zoo (from /proc/stat: each CPU's non-idle share
   of its jiffies between the command's start and end, printed per CPU and as cores busy).
   Then the closeness of every run of the ensemble zoo to the same run trained alone: largest weight
   difference, val/test accuracy difference, and the flip mass of ``blocks.0.attn.hook_pattern``
   (``interp.metrics.flip_mass``, best head) on 2,000 random sequences.
2. ``ensemble``: 5 seeds of the fast preset (``--ensemble-architectures``, layers x heads: 1x1 and 2x4) as
   one ensemble (``models.train.ensemble.train_ensemble``) vs the same 5 runs one after the other
   (``models.train.cli.train``) in this process, after a warm-up; the median of ``--repeats``
   interleaved pairs, on one thread (``torch.set_num_threads(1)``). Target ≥ 2.5×.
3. ``startup``: a 1-run zoo (``--seeds 1 --heads 1 --layers 1 --positional-embeddings sinusoidal
   --no-control``) as a process on the Ray engine vs the sequential engine; the median difference of
   ``--repeats`` pairs. Target: Ray costs ≤ 10 s more.

Throughput is runs per minute of the whole 65-run command. Extrapolation to a 1,000-run grid: on this
machine, 1,000 / (runs per minute); on a cluster of 10 such machines, the Ray engine's tasks are
independent and send back ~0.3 MB each, so the training part divides by the number of nodes while
the driver's start-up (measured by ``startup``) does not: 1,000 / (10 × per-machine runs per minute)
+ the start-up; that assumes tasks balance across nodes, which holds for ≫ 20 tasks per node.

    python benchmarks/zoo_time.py [--only zoo,ensemble,startup] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENGINES = {
    "sequential": ["--engine", "sequential", "--no-ensemble"],
    "sequential+ensemble": ["--engine", "sequential"],
    "ray": ["--no-ensemble"],
    "ray+ensemble": [],
}
ONE_RUN = "--seeds 1 --heads 1 --layers 1 --positional-embeddings sinusoidal --no-control".split()


def load() -> float:
    return round(os.getloadavg()[0], 2)


def cpu_jiffies() -> dict[str, tuple[int, int]]:
    """(busy, total) jiffies of every CPU since boot, from /proc/stat (idle and iowait are not busy)."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
            out[name] = (sum(values) - values[3] - values[4], sum(values))
    return out


def busy_shares(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, float]:
    """Each CPU's busy share between two :func:`cpu_jiffies` readings: Δbusy / Δtotal."""
    return {
        cpu: round((after[cpu][0] - before[cpu][0]) / max(1, after[cpu][1] - before[cpu][1]), 3)
        for cpu in before
        if cpu in after
    }


def zoo_command(out: Path, *flags: str) -> tuple[float, dict[str, float]]:
    """Wall seconds of one ``python -m models.zoo`` process (it must succeed) and each CPU's busy share
    meanwhile (the whole machine's: other users' work counts too, so measure on an idle machine)."""
    command = [sys.executable, "-m", "models.zoo", "--out", str(out), *flags]
    jiffies = cpu_jiffies()
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    busy = busy_shares(jiffies, cpu_jiffies())
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds, busy


def closeness(alone: Path, together: Path, num_sequences: int = 2000) -> dict:
    import torch

    from interp.metrics import flip_mass
    from models import load_model

    tokens = torch.randint(0, 10, (num_sequences, 16), generator=torch.Generator().manual_seed(0))
    worst = {"max_abs_weight_difference": 0.0, "max_val_acc_difference": 0.0, "max_test_acc_difference": 0.0}
    worst["max_flip_mass_difference"] = 0.0
    identical = 0
    runs = sorted(p.name for p in alone.iterdir() if (p / "model.pt").is_file())
    for name in runs:
        a, b = (load_model(z / name, check_accuracy=False) for z in (alone, together))
        sa, sb = a.state_dict(), b.state_dict()
        diff = max(float((sa[k] - sb[k]).abs().max()) for k in sa)
        identical += diff == 0.0
        worst["max_abs_weight_difference"] = max(worst["max_abs_weight_difference"], diff)
        ma, mb = (json.loads((z / name / "metrics.json").read_text()) for z in (alone, together))
        for split in ("val", "test"):
            key = f"max_{split}_acc_difference"
            worst[key] = max(worst[key], abs(ma[f"{split}_acc"] - mb[f"{split}_acc"]))
        with torch.no_grad():
            fa = [
                flip_mass(
                    m.run_with_cache(tokens, names_filter="blocks.0.attn.hook_pattern")[1][
                        "blocks.0.attn.hook_pattern"
                    ]
                )
                .mean((0, -1))
                .max()
                for m in (a, b)
            ]  # best head's mean flip mass
        worst["max_flip_mass_difference"] = max(
            worst["max_flip_mass_difference"], float((fa[0] - fa[1]).abs())
        )
    return {"runs": len(runs), "identical_runs": identical, **worst}


def bench_zoo(result: dict) -> None:
    root = Path(tempfile.mkdtemp(prefix="zoo_time_"))
    result["zoo"] = {}
    for name, flags in ENGINES.items():
        before = load()
        seconds, busy = zoo_command(root / name.replace("+", "_"), *flags)
        result["zoo"][name] = {
            "seconds": round(seconds, 1),
            "runs_per_minute": round(65 * 60 / seconds, 1),
            "busy": busy,
            "cores_busy": round(sum(busy.values()), 2),
            "load_before": before,
            "load_after": load(),
        }
        rate = 65 * 60 / seconds
        print(f"65-run zoo, {name:<22} {seconds:7.1f} s  ({rate:5.1f} runs/min; load {before} → {load()}; "
              f"busy {busy}, {sum(busy.values()):.2f} cores)")  # fmt: skip
    base = result["zoo"]["sequential"]["seconds"]
    for name in ("sequential+ensemble", "ray", "ray+ensemble"):
        ratio = base / result["zoo"][name]["seconds"]
        result["zoo"][name]["speedup_vs_sequential"] = round(ratio, 2)
        print(f"  {name}: {ratio:.2f}× less wall time than today's sequential engine")
    busiest = result["zoo"]["ray+ensemble"]["busy"]
    print(f"  target: ray+ensemble ≥ 3× with every CPU ≥ 90% busy (least busy: {min(busiest.values()):.0%})")
    result["closeness"] = closeness(root / "sequential", root / "ray_ensemble")
    print(f"ensemble members vs the same seeds trained alone: {json.dumps(result['closeness'])}")


def _member(root: Path, arch: str, seed: int, folder: str) -> list[str]:
    """The ``models.train.cli`` command line of one fast-preset run of architecture ``arch`` ("LxH")."""
    layers, heads = arch.split("x")
    return ["--preset", "fast", "--seed", str(seed), "--out", str(root / arch / folder), "--name", f"s{seed}",
            "--no-progress-bar", "--n-layers", layers, "--n-heads", heads]  # fmt: skip


def bench_ensemble(result: dict, repeats: int, architectures: list[str]) -> None:
    import torch

    from models.train.cli import train
    from models.train.ensemble import train_ensemble

    torch.set_num_threads(1)  # one core (the runs' own default: --threads 1)
    root = Path(tempfile.mkdtemp(prefix="zoo_ensemble_"))
    result["ensemble"] = {}
    for arch in architectures:
        train(_member(root, arch, 99, "warm"))  # imports and first-call costs out of the way
        train_ensemble([_member(root, arch, 98, "warm_ensemble")])
        pairs = []
        for r in range(repeats):
            before = load()
            started, cpu = time.perf_counter(), time.process_time()
            for seed in range(5):
                train(_member(root, arch, seed, f"alone{r}"))
            alone, alone_cpu = time.perf_counter() - started, time.process_time() - cpu
            started, cpu = time.perf_counter(), time.process_time()
            train_ensemble([_member(root, arch, seed, f"together{r}") for seed in range(5)])
            together, together_cpu = time.perf_counter() - started, time.process_time() - cpu
            pair = {"alone": round(alone, 2), "ensemble": round(together, 2)}
            pair["ratio"] = round(alone / together, 2)
            pair["cpu_ratio"] = round(alone_cpu / together_cpu, 2)  # CPU seconds of this process
            pairs.append({**pair, "load_before": before, "load_after": load()})
            print(f"{arch}: 5 seeds alone {alone:5.2f} s, as one ensemble {together:5.2f} s: "
                  f"{alone / together:.2f}× (load {before} → {load()})")  # fmt: skip
        median = statistics.median(p["ratio"] for p in pairs)
        cpu_median = statistics.median(p["cpu_ratio"] for p in pairs)
        result["ensemble"][arch] = {"pairs": pairs, "median_ratio": median, "median_cpu_ratio": cpu_median}
        print(f"  {arch}: median {median:.2f}× wall, {cpu_median:.2f}× CPU seconds (target ≥ 2.5×)")


def bench_startup(result: dict, repeats: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="zoo_startup_"))
    pairs = []
    for r in range(repeats):
        before = load()
        sequential = zoo_command(root / f"sequential{r}", *ONE_RUN, "--engine", "sequential")[0]
        ray = zoo_command(root / f"ray{r}", *ONE_RUN)[0]
        pair = {"sequential": round(sequential, 2), "ray": round(ray, 2), "extra": round(ray - sequential, 2)}
        pairs.append({**pair, "load_before": before, "load_after": load()})
        print(f"1-run zoo: sequential {sequential:5.1f} s, Ray {ray:5.1f} s: +{ray - sequential:.1f} s "
              f"(load {before} → {load()})")  # fmt: skip
    median = statistics.median(p["extra"] for p in pairs)
    result["startup"] = {"pairs": pairs, "median_extra_seconds": median}
    print(f"  median +{median:.1f} s on Ray (target ≤ 10 s)")


def extrapolate(result: dict) -> None:
    zoo = result.get("zoo", {}).get("ray+ensemble")
    if not zoo:
        return
    per_minute = zoo["runs_per_minute"]
    startup = result.get("startup", {}).get("median_extra_seconds", 0.0)
    here = 1000 / per_minute * 60
    cluster = 1000 / (10 * per_minute) * 60 + max(startup, 0.0)
    result["extrapolation_1000_runs"] = {
        "this_machine_seconds": round(here),
        "ten_nodes_seconds": round(cluster),
    }
    print(f"1,000 runs: ≈ {here / 60:.0f} min on this machine, ≈ {cluster / 60:.1f} min on 10 such nodes")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="zoo,ensemble,startup", help="comma-separated: zoo, ensemble, startup")
    p.add_argument("--repeats", type=int, default=3, help="interleaved pairs for ensemble and startup (3)")
    p.add_argument("--ensemble-architectures", default="1x1,2x4", help="LxH list for ensemble (1x1,2x4)")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args()
    os.environ.setdefault("REVERSE_ENCODER_INTERP_CACHE", tempfile.mkdtemp(prefix="zoo_cache_"))
    result: dict = {"cpu_count": os.cpu_count(), "load_start": load()}
    parts = args.only.split(",")
    if "ensemble" in parts:
        bench_ensemble(result, args.repeats, args.ensemble_architectures.split(","))
    if "startup" in parts:
        bench_startup(result, args.repeats)
    if "zoo" in parts:
        bench_zoo(result)
    extrapolate(result)
    result["load_end"] = load()
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
