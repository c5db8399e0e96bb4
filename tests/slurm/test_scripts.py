"""Static checks of the SLURM scripts (no cluster needed)."""
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.slurm.submit import parse_slurm_time

SLURM_DIR = Path(__file__).resolve().parents[2] / "scripts" / "slurm"
RECIPE = "tests/slurm/toy_recipe.py"
SCRIPTS = ["train.sbatch", "train_multinode.sbatch", "srun_train.sh", "local_cluster.sh"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_shellcheck(name):
    out = subprocess.run(["shellcheck", "--severity=style", str(SLURM_DIR / name)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", ["train.sbatch", "train_multinode.sbatch"])
def test_sbatch_files_request_what_preemption_needs(name):
    lines = (SLURM_DIR / name).read_text().splitlines()
    directives = [ln.split()[1] for ln in lines if ln.startswith("#SBATCH ")]
    for needed in ("--requeue", "--open-mode=append", "--signal=USR1@180"):
        assert needed in directives, needed
    keys = {d.split("=")[0] for d in directives}
    assert {"--ntasks-per-node", "--gpus-per-node", "--time", "--cpus-per-task"} <= keys
    assert "--gres" not in keys  # one spelling of the GPU request, never both
    # every active cluster-specific directive is explained by an ADAPT comment just above it
    for i, ln in enumerate(lines):
        if ln.startswith(("#SBATCH --ntasks-per-node", "#SBATCH --gpus-per-node", "#SBATCH --time",
                          "##SBATCH --partition", "##SBATCH --account")):
            above = [x for x in lines[max(0, i - 4):i] if x.startswith("# ")]
            assert any("ADAPT" in x for x in above), ln


@pytest.mark.parametrize("text,minutes", [("90", 90), ("4:00:00", 240), ("3-00:00:00", 4320), ("1-2", 1560),
                                          ("10:30", 10), ("0-0:0:30", 1)])
def test_parse_slurm_time(text, minutes):
    assert parse_slurm_time(text) == minutes


@pytest.mark.slurm  # needs scontrol and a slurm.conf (for `scontrol show hostnames`), no job is run
def test_multinode_body_rendezvous_and_srun_command(slurm_env, tmp_path):
    """train_multinode.sbatch run as SLURM would on 3 nodes, with a stand-in `srun` that records what it got:
    MASTER_ADDR is the first host of the node list, MASTER_PORT the job-id port lazydet's launch also
    derives, and every task runs train_net directly (no shell in between) with --resume and the overrides."""
    from lazydet.engine.launch import slurm_port

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_srun = bin_dir / "srun"
    fake_srun.write_text('#!/bin/sh\necho "MASTER=$MASTER_ADDR:$MASTER_PORT CUDA=${CUDA_VISIBLE_DEVICES-unset}"\n'
                         'echo "ARGS=$*"\n')
    fake_srun.chmod(0o755)
    env = {**slurm_env, "PATH": f"{bin_dir}:{slurm_env['PATH']}", "SLURM_JOB_ID": "123456",
           "SLURM_JOB_NODELIST": "gpu[03-05]", "SLURM_JOB_NUM_NODES": "3", "SLURM_NTASKS": "24",
           "LAZYDET_DEVICE": "cpu"}
    env.pop("MASTER_ADDR", None), env.pop("MASTER_PORT", None)
    out = subprocess.run(["bash", str(SLURM_DIR / "train_multinode.sbatch"), "tests/slurm/toy_recipe.py",
                          "train.max_iter=7"], capture_output=True, text=True, env=env, timeout=60,
                         cwd=SLURM_DIR.parents[1])
    assert out.returncode == 0, out.stderr
    assert f"MASTER=gpu03:{slurm_port('123456')} CUDA=\n" in out.stdout
    assert ("ARGS=--kill-on-bad-exit=1 --label python -u -m scripts.train_net --config-file "
            "tests/slurm/toy_recipe.py --resume train.max_iter=7 train.device=cpu") in out.stdout
    assert "24 tasks on 3 node(s) [gpu[03-05]], rendezvous gpu03" in out.stdout


def test_sbatch_usage_errors_are_one_clear_line(tmp_path):
    repo = SLURM_DIR.parents[1]
    for args, expected in (([], "usage: sbatch scripts/slurm/train.sbatch RECIPE.py"),
                           (["no/such/recipe.py"], "recipe 'no/such/recipe.py' not found")):
        out = subprocess.run(["bash", str(SLURM_DIR / "train.sbatch"), *args], capture_output=True, text=True,
                             cwd=repo, timeout=60, env={"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": "1"})
        assert out.returncode == 2 and expected in out.stderr, out.stderr


def test_submit_dry_run_prints_the_sbatch_script(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "scripts.slurm.submit", "--config-file", RECIPE, "--nodes", "2",
         "--gpus-per-node", "4", "--partition", "P", "--time", "3-00:00:00", "--dry-run",
         f"train.output_dir={tmp_path}", "train.max_iter=5"],
        capture_output=True, text=True, cwd=SLURM_DIR.parents[1], timeout=120)
    assert out.returncode == 0, out.stderr
    script = out.stdout
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --partition=P", "#SBATCH --time=4320", "#SBATCH --requeue", "#SBATCH --signal=USR2@180"):
        assert line in script.splitlines(), line
    assert f"--config-file {RECIPE} --resume train.output_dir={tmp_path} train.max_iter=5" in script
    bad = subprocess.run([sys.executable, "-m", "scripts.slurm.submit", "--config-file", RECIPE, "--dry-run",
                          "train.max_itre=5"], capture_output=True, text=True, cwd=SLURM_DIR.parents[1], timeout=120)
    assert bad.returncode != 0 and "max_itre" in bad.stderr and "Traceback" not in bad.stderr


def test_launch_takes_ranks_from_srun_tasks_not_from_the_batch_script(monkeypatch):
    """Inside `sbatch --ntasks=2` the batch script itself has SLURM_PROCID=0 and SLURM_NTASKS=2 (checked on
    the local cluster); only srun-started tasks (SLURM_STEP_ID set) are ranks, else rank 0 would wait for
    a rank 1 that never starts."""
    from lazydet.engine.launch import env_launched

    for var in ("RANK", "WORLD_SIZE", "SLURM_STEP_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert env_launched() == ""  # python run directly in the batch script
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    assert env_launched() == "slurm"  # a task of `srun`
