"""A fixed reference workload whose CPU seconds say how fast this machine is at the moment.

    python benchmarks/reference.py        # prints the seconds of each part and their total, as JSON

This shared 2-core machine's speed drifts by up to 2x over a day, and by ±30% from one minute to the
next: neighbours share its caches and cores without showing up as steal time. A benchmark that runs
this workload next to what it measures can state its result in reference units (seconds / reference
seconds), which compare across hours and days where wall seconds do not (``benchmarks/suite_time.py``
and ``benchmarks/analysis_speed.py`` print it).

The workload is the kind of work the analyses and the tests do, in one fresh process with one torch
thread, none of it this project's code (the unit must not move when the project gets faster): a
pure-Python loop, 60 forward passes of PyTorch's post-LN encoder layer at the tutorial's size over
1,000 sequences of 16, and 8 small figures drawn with constrained layout and saved as PNG. About 2–3 s
on this machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def reference_workload() -> dict[str, float]:
    """CPU seconds of each part of the fixed workload, in this process (one torch thread)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    torch.set_num_threads(1)
    parts = {}
    start = time.process_time()
    total = 0
    for i in range(6_000_000):
        total += i % 7
    parts["python"] = time.process_time() - start

    # PyTorch's own post-LN encoder layer at the tutorial's size (not this project's code: the unit must
    # not change when the project gets faster).
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(32, 1, 64, dropout=0.0, batch_first=True).eval()
    head = torch.nn.Linear(32, 10)
    x = torch.randn(1000, 16, 32, generator=torch.Generator().manual_seed(0))
    start = time.process_time()
    with torch.no_grad():
        for _ in range(60):
            head(layer(x)).argmax(-1)
    parts["torch"] = time.process_time() - start

    x = np.arange(-15, 16)
    start = time.process_time()
    for _ in range(8):
        fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
        ax.errorbar(x, np.exp(-(x**2) / 10), yerr=0.01, marker="o", label="mass")
        ax.set(xlabel="offset", ylabel="attention mass", title="reference")
        ax.legend()
        fig.savefig(io.BytesIO(), format="png", dpi=120)
        plt.close(fig)
    parts["figure"] = time.process_time() - start
    parts["total"] = sum(parts.values())
    return parts


def reference_seconds() -> float:
    """CPU seconds of the reference workload in a fresh process."""
    done = subprocess.run([sys.executable, __file__], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)["total"]


if __name__ == "__main__":
    print(json.dumps(reference_workload()))
