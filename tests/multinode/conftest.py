"""Fixtures for the multi-machine tests: two emulated machines (machines.py), a two-node SLURM cluster on
them (cluster.py), and helpers to run train_net on them.

Tests marked `multinode_long` (longer runs: two processes per machine, a machine dying mid-run) only run
with LAZYDET_MULTINODE_LONG=1; see docs/slurm.md ("Testing multi-node on one host").
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .cluster import ClusterUnavailable, TwoNodeCluster
from .machines import INTERFACE, NamespacesUnavailable, TwoMachines

REPO = Path(__file__).resolve().parents[2]
LONG = os.environ.get("LAZYDET_MULTINODE_LONG") == "1"
QUICKSTART_TINY = "tests/slurm/quickstart_tiny.py"


@pytest.fixture(scope="session")
def machines():
    """Two emulated machines for the session; removed (only what was made) at the end."""
    pair = TwoMachines()
    try:
        pair.create()
    except NamespacesUnavailable as e:
        pytest.skip(f"cannot emulate two machines with network namespaces here: {e}")
    yield pair
    pair.close()


def rank_env(**extra) -> dict:
    """Environment of a training process: this worktree's lazydet, one thread, gloo on the machines' link."""
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": INTERFACE, **extra}


def train_net_argv(*args) -> list:
    return [sys.executable, "-u", "-m", "scripts.train_net", *map(str, args)]


def start_on(machine, argv, log: Path, env=None) -> subprocess.Popen:
    """Start argv on `machine` from the repository root, stdout+stderr into `log`."""
    with open(log, "w") as f:
        return machine.popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env or rank_env())


def wait_all(procs, timeout) -> list:
    """Exit codes of all processes; kill every one still running after `timeout` seconds and fail."""
    deadline = time.time() + timeout
    codes = []
    try:
        for p in procs:
            codes.append(p.wait(timeout=max(1.0, deadline - time.time())))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"processes still running after {timeout} s")
    return codes


def read_metrics(out_dir: Path) -> list:
    path = out_dir / "metrics.json"
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def wait_until_true(predicate, timeout, what, procs=()):
    """Poll `predicate` every 0.5 s; fail after `timeout` s, or as soon as one of `procs` has exited."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if any(p.poll() is not None for p in procs):
            pytest.fail(f"a process exited (codes {[p.poll() for p in procs]}) before {what}")
        time.sleep(0.5)
    for p in procs:
        p.kill()
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="session")
def cluster(machines, tmp_path_factory):
    """A two-node SLURM cluster on the two machines (cluster.py), for the session; its daemons are stopped
    at the end. Skips when slurm-wlm/munge are missing or a daemon does not come up."""
    two = TwoNodeCluster(machines, tmp_path_factory.mktemp("slurm_two_nodes"))
    try:
        two.start()
    except ClusterUnavailable as e:
        two.stop()
        pytest.skip(f"two-node SLURM cluster unavailable: {e}")
    yield two
    two.stop()
