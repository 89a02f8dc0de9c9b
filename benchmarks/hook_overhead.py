"""Cost of the hook points, measured as ratios within one interleaved run.

Compares, on the tutorial-sized model (d_model 32, 1 layer, 1 head, N = 16):
  baseline  the same maths with every HookPoint swapped for a plain identity function
  hooked    the hooked model with no hooks attached          (target ≤ 1.05 × baseline)
  pattern   run_with_cache(names_filter="...hook_pattern")   (target ≤ 1.15 × baseline)
  cache_all run_with_cache of every hook point               (reported)

    python benchmarks/hook_overhead.py [--batch 128 1024] [--repeats 200]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from transformer_lens.hook_points import HookPoint

from models import EncoderConfig, HookedReverseEncoder


def _identity(x):
    return x


def strip_hook_points(model: HookedReverseEncoder) -> HookedReverseEncoder:
    """A deep copy whose HookPoints are plain functions: same parameters, same maths, no modules."""
    bare = copy.deepcopy(model)
    for module in list(bare.modules()):
        for name, child in list(module._modules.items()):
            if isinstance(child, HookPoint):
                del module._modules[name]
                object.__setattr__(module, name, _identity)
    return bare


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def measure(batch: int, repeats: int, rounds: int = 5) -> dict[str, float]:
    torch.manual_seed(0)
    model = HookedReverseEncoder(EncoderConfig()).eval()
    bare = strip_hook_points(model)
    tokens = torch.randint(0, 10, (batch, 16))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), bare(tokens), atol=0, rtol=0)
    candidates = {
        "baseline": lambda: bare(tokens),
        "hooked": lambda: model(tokens),
        "pattern": lambda: model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_pattern")),
        "cache_all": lambda: model.run_with_cache(tokens),
    }
    samples: dict[str, list[float]] = {k: [] for k in candidates}
    with torch.no_grad():
        for fn in candidates.values():  # warm-up
            _time(fn, 10)
        for _ in range(rounds):  # interleave so drifts in machine load hit every candidate alike
            for name, fn in candidates.items():
                samples[name] += _time(fn, repeats // rounds)
    medians = {k: statistics.median(v) for k, v in samples.items()}
    base = medians["baseline"]
    return {
        "batch": batch,
        **{f"{k}_us": round(v * 1e6, 1) for k, v in medians.items()},
        **{f"{k}_ratio": round(v / base, 3) for k, v in medians.items() if k != "baseline"},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 128, 1024])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [measure(b, args.repeats) for b in args.batch]
    print("| batch | baseline µs | hooked × | pattern cache × | full cache × |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['batch']} | {r['baseline_us']} | {r['hooked_ratio']} | {r['pattern_ratio']} | "
            f"{r['cache_all_ratio']} |"
        )
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
