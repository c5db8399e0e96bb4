"""A real one-node SLURM cluster on localhost for the `slurm` tests (scripts/slurm/local_cluster.sh).

The session fixture starts it (installing slurm-wlm + munge with apt when missing) and, at the end,
stops only the daemons it started itself; a cluster that was already up is used and left running.
"""
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "scripts" / "slurm" / "local_cluster.sh"
SLURM_ROOT = os.environ.get("LAZYDET_SLURM_ROOT", "/tmp/lazydet-slurm")
TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                   "DEADLINE", "PREEMPTED"}


def _run_cluster(cmd, timeout):
    return subprocess.run(["bash", str(CLUSTER), cmd], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "LAZYDET_SLURM_ROOT": SLURM_ROOT})


@pytest.fixture(scope="session")
def slurm_env():
    """Environment for SLURM clients and jobs: SLURM_CONF of the local cluster, one thread per rank."""
    was_up = _run_cluster("status", 60).returncode == 0
    if not was_up:
        up = _run_cluster("up", 900)
        if up.returncode != 0:
            reason = (up.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"the local SLURM cluster could not start ({CLUSTER.name} up: {reason})")
    env = {**os.environ, "SLURM_CONF": f"{SLURM_ROOT}/etc/slurm.conf", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    yield env
    if not was_up:
        _run_cluster("down", 120)


def sbatch(env, *args, cwd=REPO) -> str:
    """Submit, return the job id."""
    out = subprocess.run(["sbatch", "--parsable", *map(str, args)], capture_output=True, text=True, env=env,
                         cwd=cwd, timeout=60)
    assert out.returncode == 0, f"sbatch failed: {out.stderr}"
    return out.stdout.strip().split(";")[0]


def job_info(env, job_id) -> dict:
    """`scontrol show job` as a dict (JobState, Restarts, ExitCode, ...); {} once SLURM forgot the job."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, env=env,
                         timeout=30)
    return dict(re.findall(r"(\w+)=(\S*)", out.stdout)) if out.returncode == 0 else {}


def wait_for_job(env, job_id, timeout=240, log=None) -> dict:
    """Poll until the job reaches a final state (a requeued job goes back to PENDING: keep waiting)."""
    deadline = time.time() + timeout
    info = {}
    while time.time() < deadline:
        info = job_info(env, job_id)
        if info.get("JobState") in TERMINAL_STATES:
            return info
        time.sleep(1)
    subprocess.run(["scancel", job_id], env=env, timeout=30)
    text = Path(log).read_text()[-3000:] if log and Path(log).exists() else ""
    pytest.fail(f"job {job_id} not finished after {timeout} s (last state {info.get('JobState')}):\n{text}")


def wait_until(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")
