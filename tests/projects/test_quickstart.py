"""The quickstart recipe runs its first iterations under scripts.train_net (CI-sized: 3 iterations, eval at
the end) and writes the run's outputs; the full run's AP figures are in projects/dino_dinov2/README.md."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lazydet.config import LazyConfig, instantiate

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "projects/dino_dinov2/configs/synthetic/dino_dinov2_quickstart.py"


def test_quickstart_recipe_is_small_cpu_and_offline():
    cfg = LazyConfig.load(QUICKSTART)
    net = cfg.model.backbone.net
    assert not net.pretrained and net.checkpoint_path is None  # nothing to download
    assert cfg.train.device == "cpu" and not cfg.train.wandb.enabled
    assert cfg.dataloader.train.dataset.names == "synthetic_shapes_train"
    assert cfg.dataloader.test.dataset.names == "synthetic_shapes_val"
    model = instantiate(cfg.model)
    assert model.num_classes == 4 and model.backbone.net.patch_size == 14
    assert sum(p.numel() for p in model.parameters()) < 10e6


@pytest.mark.slow
def test_quickstart_first_iterations_under_train_net(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "scripts.train_net", "--config-file", str(QUICKSTART),
           "train.max_iter=3", "train.log_period=1", f"train.output_dir={out}"]
    env = dict(os.environ, WANDB_MODE="offline")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    train_rows = [r for r in rows if "total_loss" in r]
    assert sorted({r["iteration"] for r in train_rows}) == [0, 1, 2]  # 0-based, log_period=1
    assert all(0 < r["total_loss"] < 1e3 for r in train_rows)
    assert any("bbox/AP50" in r for r in rows), "the final evaluation reports bbox/AP50"
    assert (out / "model_final.pth").is_file() and (out / "config.yaml").is_file()
