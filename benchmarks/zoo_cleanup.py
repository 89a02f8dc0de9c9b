"""How long after a zoo driver is killed is every process it started gone?

Starts ``python -m models.zoo`` (a tiny 4-run zoo on its embedded Ray instance, one task at a time, a
private ``TMPDIR``), waits until a task is running and Ray's agents are up, sends the signal, then
polls every 20 ms until no process the driver started (raylet, GCS, DashboardAgent, RuntimeEnvAgent,
workers, the watcher of ``machine.reaper``) is alive, its private Ray folder is gone and no
``zoo-task-*`` folder is left. Prints seconds from the signal to each of these, per try, with the
1-minute load average beside it (a shared machine slows everything: take figures on an idle one).

    python benchmarks/zoo_cleanup.py [--signals KILL,TERM,INT] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from process_family import alive, family  # noqa: E402  (tests/process_family.py: psutil, as the tests see it)

GRID = "--seeds 2 --heads 1 --layers 1 --positional-embeddings sinusoidal --d-model 16".split()
TINY = "--train-size 640 --val-size 64 --test-size 64 --max-steps 200".split()
RZ = re.compile(r"(/tmp/rz-[^/\s]+)")


def one(signum: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="zoo-cleanup-") as tmp:
        tmp = Path(tmp)
        (tmp / "tmpdir").mkdir()
        env = {**os.environ, "TMPDIR": str(tmp / "tmpdir")}
        env["REVERSE_ENCODER_INTERP_CACHE"] = str(tmp / "cache")
        argv = ["--out", str(tmp / "zoo"), *GRID, "--cpus-per-task", "2", "--max-ensemble", "1", "--", *TINY]
        proc = subprocess.Popen(
            [sys.executable, "-m", "models.zoo", *argv],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        seen: dict[int, str] = {}
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            seen |= family(proc.pid)
            agents = any("dashboard/agent.py" in c for c in seen.values())
            if agents and list((tmp / "tmpdir").glob("zoo-task-*")):
                break
            time.sleep(0.1)
        seen |= family(proc.pid)
        session = next(Path(m.group(1)) for c in seen.values() if (m := RZ.search(c)))
        sent = time.monotonic()
        proc.send_signal(signum)
        times: dict[str, float] = {}
        while time.monotonic() - sent < 120 and len(times) < 4:
            now = time.monotonic() - sent
            if "driver" not in times and proc.poll() is not None:
                times["driver"] = now
            if "processes" not in times and not alive(seen):
                times["processes"] = now
            if "session folder" not in times and not session.exists():
                times["session folder"] = now
            if "task folders" not in times and not list((tmp / "tmpdir").glob("zoo-task-*")):
                times["task folders"] = now
            time.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", default="KILL,TERM,INT")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for name in args.signals.split(","):
        signum = getattr(signal, f"SIG{name}")
        for i in range(args.repeats):
            times = one(signum)
            load = os.getloadavg()[0]
            shown = ", ".join(f"{k} {v:.2f} s" for k, v in times.items())
            print(f"SIG{name} try {i + 1}: gone after the signal: {shown} (load {load:.1f})", flush=True)


if __name__ == "__main__":
    main()
