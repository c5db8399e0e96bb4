"""Static checks of the SLURM scripts (no cluster needed)."""
import subprocess
from pathlib import Path

import pytest

from scripts.slurm.submit import parse_slurm_time

SLURM_DIR = Path(__file__).resolve().parents[2] / "scripts" / "slurm"
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
