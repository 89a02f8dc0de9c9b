"""A real two-node Ray cluster trains a zoo: ``ray start --head`` and ``ray start --address`` as separate
processes, the zoo driver joining with ``--address``; the runs must land on both nodes and equal the
zoo the sequential engine trains.

Ray advertises the machine's interface address whatever it is told, so no test traffic may leave
loopback: everything runs inside private network and PID namespaces created here (``unshare``, as
root): only ``lo``, carrying the test addresses 10.254.0.1 and 10.254.0.2 (one per node) and the default
route, so Ray's "which address reaches the outside" probe answers 10.254.0.1 without a packet leaving.
When the namespace's first process ends, the kernel ends every process in it: nothing can stray,
and the test checks that every process it saw is gone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import torch

from models.zoo import cli as zoo

TINY = "--train-size 640 --val-size 64 --test-size 64 --max-steps 20".split()
GRID = "--seeds 2 --heads 1 --layers 1 --positional-embeddings sinusoidal --d-model 16".split()
NAMES = [f"fast_{pe}_L1_H1_D16_seed{s}" for pe in ("sinusoidal", "none") for s in (0, 1)]
HEAD, NODE, PORT = "10.254.0.1", "10.254.0.2", 6391
BOUND_SECONDS = 150  # the whole cluster's life at most (about 30-40 s on 2 busy cores)


def _script(tmp: Path, out: Path) -> str:
    python = sys.executable
    ray = Path(python).with_name("ray")
    zoo_command = " ".join(
        [python, "-m", "models.zoo", "--out", str(out), *GRID, "--address", f"{HEAD}:{PORT}", "--", *TINY]
    )
    return textwrap.dedent(
        f"""\
        set -euo pipefail
        ip link set lo up
        ip addr add {HEAD}/32 dev lo
        ip addr add {NODE}/32 dev lo
        ip route add default dev lo src {HEAD}
        export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 REVERSE_ENCODER_INTERP_CACHE={tmp}/cache
        unset RAY_ADDRESS
        # This PID namespace has its own /proc: `ray stop` sees and stops this cluster's processes only.
        trap '{ray} stop --force > {tmp}/stop.log 2>&1 || true' EXIT
        {ray} start --head --node-ip-address {HEAD} --port {PORT} --num-cpus 1 --include-dashboard=false \\
            --disable-usage-stats --temp-dir {tmp}/ray > {tmp}/head.log 2>&1
        # `ray start --address` returns once the GCS lists the new node (Ray's Node() waits for its
        # record): the driver below sees both nodes, and the manifest's "nodes": 2 checks it.
        {ray} start --address {HEAD}:{PORT} --node-ip-address {NODE} --num-cpus 1 --disable-usage-stats \\
            > {tmp}/node.log 2>&1
        {zoo_command}
        """
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    spec = zoo.ZooSpec(
        seeds=2,
        heads=(1,),
        layers=(1,),
        positional_embeddings=("sinusoidal",),
        d_models=(16,),
        train_args=TINY,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REVERSE_ENCODER_INTERP_CACHE", str(out / "cache"))
        zoo.run_zoo(out / "zoo", spec, engine=zoo.ZooEngine(engine="sequential"))
    return out / "zoo"


def test_a_two_node_cluster_trains_the_zoo_on_both_nodes_and_equals_the_sequential_zoo(reference, tmp_path):
    tmp = Path(tempfile.mkdtemp(prefix="rzc-", dir="/tmp"))  # short: Ray puts socket paths under it
    out = tmp_path / "zoo"
    script = tmp / "cluster.sh"
    script.write_text(_script(tmp, out))
    proc = subprocess.Popen(
        ["unshare", "--net", "--pid", "--fork", "--mount-proc", "bash", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: set[int] = set()
    started = time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() - started < BOUND_SECONDS:
            try:
                seen |= {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
            except psutil.NoSuchProcess:
                pass
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()  # unshare's child is the namespace's init: its end ends them all
        _, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - started
        logs = {p.name: p.read_text()[-2000:] for p in tmp.glob("*.log")}
        shutil.rmtree(tmp, ignore_errors=True)
    assert proc.returncode == 0, (err, logs)
    assert elapsed < BOUND_SECONDS
    # every process of the cluster (raylets, GCS, workers, agents) has ended with the namespace
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(psutil.pid_exists(p) for p in seen):
        time.sleep(0.2)
    alive = [p for p in seen if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive and len(seen) > 5
    manifest = json.loads((out / "zoo.json").read_text())
    runs = {r["name"]: r for r in manifest["runs"]}
    assert sorted(runs) == sorted(NAMES) and {r["status"] for r in runs.values()} == {"trained"}
    assert {r["node_ip"] for r in runs.values()} == {HEAD, NODE}  # the two tasks ran on the two nodes
    assert len({r["node_id"] for r in runs.values()}) == 2
    assert manifest["engine"]["cluster"] == {
        "address": f"{HEAD}:{PORT}",
        "embedded": False,
        "cpus": 2.0,
        "gpus": 0.0,
        "nodes": 2,
        "node_ips": [HEAD, NODE],
    }
    for name in NAMES:
        a = torch.load(out / name / "model.pt", weights_only=True)["state_dict"]
        b = torch.load(reference / name / "model.pt", weights_only=True)["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in b), name
