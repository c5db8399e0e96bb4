"""End to end on a real local SLURM cluster: sbatch training with 2 CPU ranks (gloo), preemption with
requeue and resume, submission through submitit. ~3-5 minutes on 2 cores."""
import json
import re
import subprocess
import sys

import pytest

from .conftest import REPO, job_info, sbatch, wait_for_job, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

RECIPE = "tests/slurm/toy_recipe.py"
# 2 CPU tasks on the 2-core node; cluster-specific #SBATCH lines of train.sbatch overridden for CPU. A long
# --time keeps the USR1@180 warning far away even on a loaded machine (the tests signal the job themselves).
CPU_JOB = ["--gpus-per-node=0", "--ntasks-per-node=2", "--cpus-per-task=1", "--time=30"]


def read_metrics(out_dir):
    return [json.loads(line) for line in (out_dir / "metrics.json").read_text().splitlines() if line.strip()]


def test_train_sbatch_quickstart_two_cpu_ranks_runs_to_the_end_with_collective_eval(slurm_env, tmp_path):
    """The real quickstart model (DINO + ViT + COCO evaluator), shortened, through train.sbatch on 2 ranks."""
    out, log = tmp_path / "run", tmp_path / "job.out"
    env = {**slurm_env, "LAZYDET_DEVICE": "cpu"}
    job = sbatch(env, *CPU_JOB, f"--output={log}", "scripts/slurm/train.sbatch", "tests/slurm/quickstart_tiny.py",
                 f"train.output_dir={out}")
    info = wait_for_job(env, job, timeout=420, log=log)
    text = log.read_text()
    assert info["JobState"] == "COMPLETED", text[-3000:]
    assert f"job {job} restart 0: 2 tasks" in text
    raw = log.read_bytes()
    assert b"\x1b" not in raw and b"\r" not in raw  # a plain log: no progress bar drawn into the file
    # both ranks took part: each wrote its own log, with its rank from SLURM_PROCID, and each evaluated
    # its half of the 16 validation images (a rank-0-only evaluation would hang or see all 16 on rank 0)
    rank0, rank1 = (out / "log.txt").read_text(), (out / "log.txt.rank1").read_text()
    assert "Rank 0 of 2" in rank0 and "Rank 1 of 2" in rank1
    assert "inference done: 8 images" in rank0 and "inference done: 8 images" in rank1
    assert (out / "model_final.pth").is_file()
    metrics = read_metrics(out)
    assert max(m["iteration"] for m in metrics) == 5
    assert any("bbox/AP" in m and m["iteration"] == 5 for m in metrics)


def test_usr1_checkpoints_requeues_and_resumes_to_the_same_final_iteration(slurm_env, tmp_path):
    """The batches come from a forked data-loader worker, which gets the signal too and must survive it."""
    out, log = tmp_path / "run", tmp_path / "job.out"
    env = {**slurm_env, "LAZYDET_DEVICE": "cpu"}
    period, max_iter = 10, 40
    job = sbatch(env, *CPU_JOB, f"--output={log}", "scripts/slurm/train.sbatch", RECIPE,
                 f"train.output_dir={out}", f"train.max_iter={max_iter}", f"train.checkpointer.period={period}",
                 "train.eval_period=0", "dataloader.train.step_sleep=0.3", "dataloader.train.num_workers=1")

    def past_iteration(n):
        return (out / "metrics.json").exists() and any(m["iteration"] >= n for m in read_metrics(out))

    wait_until(lambda: past_iteration(9), 300, "the job to pass iteration 9")
    subprocess.run(["scancel", "--signal=USR1", job], env=env, check=True, timeout=30)
    info = wait_for_job(env, job, timeout=420, log=log)
    text = log.read_text()
    assert info["JobState"] == "COMPLETED", text[-3000:]
    assert info["Restarts"] == "1"
    assert f"job {job} restart 0:" in text and f"job {job} restart 1:" in text  # SLURM_RESTART_COUNT=1
    assert "Preemption: got SIGUSR1" in text and f"scontrol requeue {job}" in text

    rank0_log = (out / "log.txt").read_text()
    stopped = [int(x) for x in re.findall(r"Training stopped at iteration (\d+): preempted", rank0_log)]
    starts = [int(x) for x in re.findall(r"Starting training from iteration (\d+)", rank0_log)]
    assert len(stopped) == 1 and starts[0] == 0 and len(starts) == 2
    stop_iter, resume_iter = stopped[0], starts[1]
    assert 9 <= stop_iter < max_iter - 1
    assert (out / f"model_{stop_iter:07d}.pth").is_file()  # the checkpoint written at the signal
    assert f"Resuming from {out}/model_{stop_iter:07d}.pth" in rank0_log
    redone = (stop_iter + 1) - resume_iter  # iterations trained twice
    assert 0 <= redone <= period
    assert (out / "model_final.pth").is_file()
    iterations = [m["iteration"] for m in read_metrics(out)]
    assert max(iterations) == max_iter - 1  # the same final iteration as an uninterrupted run
    assert (out / "log.txt.rank1").read_text().count("Rank 1 of 2") == 2  # rank 1 took part in both runs
    # the final evaluation of the resumed run is collective too: all 10 toy test images, from both ranks
    final_eval = [m for m in read_metrics(out) if "toy/images_seen" in m]
    assert [(m["iteration"], m["toy/images_seen"], m["toy/ranks_contributing"]) for m in final_eval] == \
        [(max_iter - 1, 10.0, 2.0)]


def test_submitit_job_survives_preemption_and_completes(slurm_env, tmp_path):
    """submit.py through submitit's SlurmExecutor; submitit's warning signal (USR2) mid-run checkpoints and
    requeues through lazydet's hook, and the requeued job finishes the training."""
    out, max_iter = tmp_path / "run", 40
    res = subprocess.run(
        [sys.executable, "-m", "scripts.slurm.submit", "--config-file", RECIPE, "--cpu", "--gpus-per-node", "0",
         "--ntasks-per-node", "2", "--cpus-per-task", "1", "--time", "30", f"train.output_dir={out}",
         f"train.max_iter={max_iter}", "train.eval_period=0", "dataloader.train.step_sleep=0.3"],
        capture_output=True, text=True, cwd=REPO, env=slurm_env, timeout=120)
    assert res.returncode == 0, res.stderr
    job = re.search(r"submitted job (\d+)", res.stdout).group(1)
    stdout_log = re.search(r"log \(rank 0\): (\S+)", res.stdout).group(1)

    def past_iteration(n):
        return (out / "metrics.json").exists() and any(m["iteration"] >= n for m in read_metrics(out))

    wait_until(lambda: past_iteration(9), 300, "the submitit job to pass iteration 9")
    subprocess.run(["scancel", "--signal=USR2", job], env=slurm_env, check=True, timeout=30)
    info = wait_for_job(slurm_env, job, timeout=420, log=stdout_log)
    assert info["JobState"] == "COMPLETED", job_info(slurm_env, job)
    assert info["Restarts"] == "1"
    rank0_log = (out / "log.txt").read_text()
    assert "Preemption: got SIGUSR2" in rank0_log and "Training stopped at iteration" in rank0_log
    assert (out / "model_final.pth").is_file()
    assert (out / "log.txt.rank1").read_text().count("Rank 1 of 2") == 2  # rank 1 ran in both runs
    assert max(m["iteration"] for m in read_metrics(out)) == max_iter - 1
    logs = sorted(p.name for p in (out / "submitit" / job).glob(f"{job}_*_log.out"))
    assert logs == [f"{job}_0_log.out", f"{job}_1_log.out"]
    import submitit

    assert submitit.SlurmJob(folder=out / "submitit" / "%j", job_id=job, tasks=(0, 1)).results() == [None, None]
