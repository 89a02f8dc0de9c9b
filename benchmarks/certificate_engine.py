"""The certificate engine on one model: bounds, census size, seconds and FLOPs against brute force.

    python benchmarks/certificate_engine.py [--checkpoint PATH] [--budget-seconds S] [--max-boxes B]
        [--target 0.999] [--threads T] [--no-theorems]

Prints the per-digit and sequence bounds, the wrong-pair bounds, the regions bounded, wall and CPU
seconds, the 1-minute load average before and after the run, the estimated FLOPs and brute force's
(N·C^N position evaluations) and their ratio, and the first (boxes, seconds) at which the per-digit
lower bound reached ``--target``. Boxes are machine-independent (``--max-boxes`` is a deterministic
budget); seconds are not, so the reference workload of ``benchmarks/reference.py`` runs before and
after, and the rate is also given in boxes per reference second. Without ``--checkpoint``: the cached
default model.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import torch
from reference import reference_seconds  # benchmarks/reference.py (this script's folder is on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--budget-seconds", type=float, default=600.0)
    parser.add_argument("--max-boxes", type=int, default=None, help="deterministic budget: regions bounded")
    parser.add_argument("--target", type=float, default=0.999, help="report when the lower bound reaches it")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--method", default="proof", choices=("auto", "proof", "enumeration"))
    parser.add_argument("--no-theorems", action="store_true", help="skip the theorem columns")
    parser.add_argument("--every", type=float, default=60.0, help="print the running bound every S seconds")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import interp
    import models

    model = models.load_model(args.checkpoint) if args.checkpoint else models.load_model()
    reference_before = reference_seconds()
    load = os.getloadavg()[0]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    marks = [args.every]
    reached: list[tuple[int, float]] = []

    def progress(state: dict) -> None:
        if not reached and state["right"] >= args.target * state["pairs"]:
            reached.append((state["boxes"], state["seconds"]))
        if state["seconds"] >= marks[0]:
            marks[0] += args.every
            low = state["right"] / state["pairs"]
            print(
                f"  {state['seconds']:7.0f} s  boxes {state['boxes']:>9,}  per-digit lower {low:.6f}",
                flush=True,
            )

    cert = interp.certify(
        model,
        method=args.method,
        budget_seconds=args.budget_seconds,
        max_boxes=args.max_boxes,
        theorems=not args.no_theorems,
        progress=progress,
    )
    wall = time.perf_counter() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    load_after = os.getloadavg()[0]
    reference_after = reference_seconds()
    reference = (reference_before + reference_after) / 2
    print(f"load average before {load:.2f}, after {load_after:.2f}; torch threads {torch.get_num_threads()}")
    print(f"reference workload {reference_before:.2f} s before, {reference_after:.2f} s after")
    print(f"method {cert.method}; N={cert.seq_len} C={cert.num_categories}; inputs {cert.inputs:.3e}")
    print(f"per-digit accuracy in [{cert.per_digit_lower:.9f}, {cert.per_digit_upper:.9f}]")
    print(f"sequence accuracy in [{cert.sequence_lower:.9f}, {cert.sequence_upper:.9f}]")
    print(f"wrong (input, position) pairs in [{cert.wrong_count_lower:,}, {cert.wrong_count_upper:,}]")
    print(f"proven-wrong regions listed {len(cert.wrong_regions)} (complete: {cert.regions_complete})")
    statuses = {s: sum(c.status == s for c in cert.cells) for s in ("right", "wrong", "mixed", "unresolved")}
    details = {k: v for k, v in cert.details.items() if "per_position" not in k}
    print(f"cells {statuses}; details {details}")
    print(f"wall {wall:.1f} s, CPU {cpu:.1f} s, boxes {cert.boxes:,}")
    rate = cert.boxes / max(cert.seconds, 1e-9)
    print(f"{rate:.0f} boxes/s = {rate * reference:.0f} boxes per reference second")
    if reached:
        boxes, seconds = reached[0]
        print(f"per-digit lower bound >= {args.target} after {boxes:,} boxes, {seconds:.0f} s")
    else:
        print(f"per-digit lower bound < {args.target} within the budget")
    print(f"FLOPs {cert.flops:.3e} vs brute force {cert.brute_force_flops:.3e}: ratio {cert.speedup:.3e}")
    for e in cert.wrong_examples[:5]:
        print("wrong example:", "".join(map(str, e["tokens"])), "at", e["position"])


if __name__ == "__main__":
    main()
