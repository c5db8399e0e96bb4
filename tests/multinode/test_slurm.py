"""scripts/slurm/train_multinode.sbatch and submit.py --nodes 2 on a real two-node SLURM cluster (one slurmd per
emulated machine), CPU tasks with gloo across the machines' link. Prints the timings the issue asks for
(run with -s to see them)."""
import os
import re
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch

from .conftest import LONG, QUICKSTART_TINY, REPO, rank_env, read_metrics, wait_until_true

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
# 2 nodes x 1 CPU task; the GPU lines of the sbatch file overridden. The long --time keeps SLURM's own
# USR1@180 warning away (the test signals the job itself).
TWO_NODES = ["--nodes=2", "--gpus-per-node=0", "--ntasks-per-node=1", "--cpus-per-task=1", "--time=30"]
STAMP = re.compile(r"^\[(\d\d/\d\d \d\d:\d\d:\d\d) lazydet[^\]]*\] (.*)$", re.M)


def stamped(text, pattern):
    """(time, match) of every log line whose message matches `pattern` (the log's second resolution)."""
    year = datetime.now().year
    return [(datetime.strptime(f"{year}/{s}", "%Y/%m/%d %H:%M:%S").timestamp(), m)
            for s, msg in STAMP.findall(text) if (m := re.search(pattern, msg))]


def submit(cluster, *args, env) -> str:
    out = cluster.run(["sbatch", "--parsable", *map(str, args)], cwd=REPO, env=env)
    assert out.returncode == 0, f"sbatch failed: {out.stderr}"
    return out.stdout.strip().split(";")[0]


def wait_for_job(cluster, job, timeout, log=None) -> dict:
    deadline = time.time() + timeout
    info = {}
    while time.time() < deadline:
        info = cluster.job_info(job)
        if info.get("JobState") in TERMINAL:
            return info
        time.sleep(1)
    cluster.run(["scancel", job])
    pytest.fail(f"job {job} not done after {timeout} s ({info.get('JobState')}):\n"
                f"{log.read_text()[-3000:] if log and log.exists() else ''}")


def rank_logs(out):
    return (out / "log.txt").read_text(), (out / "log.txt.rank1").read_text()


def test_sbatch_two_nodes_usr1_checkpoints_requeues_and_resumes_on_both_nodes(cluster, tmp_path):
    """train_multinode.sbatch on 2 nodes; `scancel --signal=USR1` mid-run: both ranks stop after the same
    iteration, rank 0 checkpoints and requeues, the job restarts on both nodes from the next iteration
    and runs to the end."""
    out, log = tmp_path / "run", tmp_path / "job.out"
    env = rank_env(SLURM_CONF=cluster.env["SLURM_CONF"], LAZYDET_DEVICE="cpu")
    max_iter = 40
    submitted = time.time()
    job = submit(cluster, *TWO_NODES, f"--output={log}", "scripts/slurm/train_multinode.sbatch",
                 "tests/slurm/toy_recipe.py", f"train.output_dir={out}", f"train.max_iter={max_iter}",
                 "train.checkpointer.period=10", "train.eval_period=0", "dataloader.train.step_sleep=0.3", env=env)
    wait_until_true(lambda: any(m["iteration"] >= 9 for m in read_metrics(out)), 300, "iteration 9")
    signalled = time.time()
    assert cluster.run(["scancel", "--signal=USR1", job]).returncode == 0
    info = wait_for_job(cluster, job, 420, log)
    text = log.read_text()
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", text[-3000:]
    assert info["NodeList"] == "lzmn[0-1]"
    assert f"job {job} restart 0: 2 tasks on 2 node(s) [lzmn[0-1]], rendezvous lzmn0:" in text
    assert f"job {job} restart 1: 2 tasks on 2 node(s)" in text
    assert "on host lzmn0" in text and "on host lzmn1" in text  # launch's line, one per rank and run

    log0, log1 = rank_logs(out)
    starts0 = [int(m.group(1)) for _, m in stamped(log0, r"Starting training from iteration (\d+)")]
    starts1 = [int(m.group(1)) for _, m in stamped(log1, r"Starting training from iteration (\d+)")]
    stopped = [int(x) for x in re.findall(r"Training stopped at iteration (\d+): preempted", log0)]
    assert len(stopped) == 1 and 9 <= stopped[0] < max_iter - 1
    assert starts0 == starts1 == [0, stopped[0] + 1]  # both nodes resumed at the same iteration
    assert (out / f"model_{stopped[0]:07d}.pth").is_file()
    assert max(m["iteration"] for m in read_metrics(out)) == max_iter - 1
    assert (out / "model_final.pth").is_file()

    first_iter = max(stamped(lg, r"Starting training from iteration 0")[0][0] for lg in (log0, log1))
    stop_time = stamped(log0, r"Training stopped at iteration")[0][0]
    restart = max(stamped(lg, r"Starting training from iteration [1-9]")[0][0] for lg in (log0, log1))
    print(f"\n[multinode timing] submit -> first iteration on both nodes: {first_iter - submitted:.0f} s; "
          f"USR1 -> stopped: {max(0, stop_time - signalled):.0f} s; stopped -> restarted on both nodes: "
          f"{restart - stop_time:.0f} s (log second resolution)")


@pytest.mark.skipif(not LONG, reason="the quickstart through sbatch on 2 nodes: set LAZYDET_MULTINODE_LONG=1")
def test_sbatch_two_nodes_quickstart_runs_to_the_end_with_collective_eval(cluster, tmp_path):
    """The real quickstart model through train_multinode.sbatch on 2 nodes: each node evaluates its half."""
    out, log = tmp_path / "run", tmp_path / "job.out"
    env = rank_env(SLURM_CONF=cluster.env["SLURM_CONF"], LAZYDET_DEVICE="cpu")
    job = submit(cluster, *TWO_NODES, f"--output={log}", "scripts/slurm/train_multinode.sbatch", QUICKSTART_TINY,
                 f"train.output_dir={out}", "train.max_iter=24", env=env)
    info = wait_for_job(cluster, job, 600, log)
    assert info["JobState"] == "COMPLETED", log.read_text()[-3000:]
    log0, log1 = rank_logs(out)
    assert "Rank 0 of 2" in log0 and "Rank 1 of 2" in log1
    assert "inference done: 8 images" in log0 and "inference done: 8 images" in log1
    assert any("bbox/AP" in m and m["iteration"] == 23 for m in read_metrics(out))


@pytest.mark.skipif(not LONG, reason="submitit on 2 nodes: set LAZYDET_MULTINODE_LONG=1")
def test_submitit_two_nodes_completes(cluster, tmp_path):
    """submit.py --nodes 2 through submitit's SlurmExecutor: one task per node, both take part, result None."""
    out = tmp_path / "run"
    env = rank_env(SLURM_CONF=cluster.env["SLURM_CONF"])
    res = cluster.run([sys.executable, "-m", "scripts.slurm.submit", "--config-file", "tests/slurm/toy_recipe.py",
                       "--cpu", "--nodes", "2", "--gpus-per-node", "0", "--ntasks-per-node", "1",
                       "--cpus-per-task", "1", "--time", "30", f"train.output_dir={out}", "train.max_iter=20",
                       "train.eval_period=0"], cwd=REPO, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    job = re.search(r"submitted job (\d+)", res.stdout).group(1)
    info = wait_for_job(cluster, job, 420)
    assert info["JobState"] == "COMPLETED", info
    assert info["NodeList"] == "lzmn[0-1]"
    log0, log1 = rank_logs(out)
    assert "Rank 0 of 2" in log0 and "Rank 1 of 2" in log1
    assert max(m["iteration"] for m in read_metrics(out)) == 19
    task_logs = sorted((out / "submitit" / job).glob(f"{job}_*_log.out"))
    assert [p.name for p in task_logs] == [f"{job}_0_log.out", f"{job}_1_log.out"]
    assert "on host lzmn1" in task_logs[1].read_text()
    import submitit

    assert submitit.SlurmJob(folder=out / "submitit" / "%j", job_id=job, tasks=(0, 1)).results() == [None, None]


def rank_pid(job: str, rank: int) -> int:
    """The pid of the training process with SLURM_PROCID=`rank` in `job` (read from /proc), or 0."""
    for proc in Path("/proc").iterdir():
        try:
            if b"scripts.train_net" not in (proc / "cmdline").read_bytes():
                continue
            env = dict(kv.split(b"=", 1) for kv in (proc / "environ").read_bytes().split(b"\0") if b"=" in kv)
        except (OSError, ValueError):
            continue
        if env.get(b"SLURM_JOB_ID") == job.encode() and env.get(b"SLURM_PROCID") == str(rank).encode():
            return int(proc.name)
    return 0


@pytest.mark.skipif(not LONG, reason="a node dying under SLURM: set LAZYDET_MULTINODE_LONG=1")
def test_sbatch_node_dying_fails_fast_keeps_the_checkpoint_and_the_requeued_job_resumes(cluster, tmp_path):
    """kill -9 rank 1 (node lzmn1) mid-run: rank 0 stops with one line, srun ends the step, the job ends
    FAILED within a bounded time; `scontrol requeue` runs it again, resuming from the last periodic
    checkpoint on both nodes, to the end."""
    out, log = tmp_path / "run", tmp_path / "job.out"
    env = rank_env(SLURM_CONF=cluster.env["SLURM_CONF"], LAZYDET_DEVICE="cpu")
    job = submit(cluster, *TWO_NODES, f"--output={log}", "scripts/slurm/train_multinode.sbatch",
                 "tests/slurm/toy_recipe.py", f"train.output_dir={out}", "train.max_iter=40",
                 "train.checkpointer.period=10", "train.eval_period=0", "dataloader.train.step_sleep=0.3", env=env)
    wait_until_true(lambda: any(m["iteration"] >= 12 for m in read_metrics(out)), 300, "iteration 12")
    pid = rank_pid(job, 1)
    assert pid, "rank 1's process not found"
    killed = time.time()
    os.kill(pid, signal.SIGKILL)
    info = wait_for_job(cluster, job, 120, log)
    ended_s = time.time() - killed
    assert info["JobState"] == "FAILED", info
    text = log.read_text()
    assert "0: error: rank 0 lost another rank of the job" in text, text[-3000:]
    last = (out / "last_checkpoint").read_text().strip()
    saved = torch.load(out / last, map_location="cpu", weights_only=False)
    assert saved["iteration"] in (9, 19, 29)
    assert cluster.run(["scontrol", "requeue", job]).returncode == 0
    info = wait_for_job(cluster, job, 420, log)
    assert info["JobState"] == "COMPLETED", log.read_text()[-3000:]
    log0, log1 = rank_logs(out)
    starts0 = [int(m.group(1)) for _, m in stamped(log0, r"Starting training from iteration (\d+)")]
    starts1 = [int(m.group(1)) for _, m in stamped(log1, r"Starting training from iteration (\d+)")]
    assert starts0 == starts1 == [0, saved["iteration"] + 1]
    assert max(m["iteration"] for m in read_metrics(out)) == 39
    print(f"\n[multinode timing] kill -9 of rank 1 -> job FAILED: {ended_s:.0f} s")
