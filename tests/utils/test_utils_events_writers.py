"""EventStorage, the writers (console, JSON, wandb fallbacks), to_device, RNG state, launch helpers."""
import importlib
import json
import logging
import os
import re
import random
from collections import namedtuple

import numpy as np
import pytest
import torch

from lazydet.utils import EventStorage, to_device
from lazydet.utils import comm
from lazydet.utils.env import get_rng_state, preserve_rng_state, seed_all_rng, set_rng_state
from lazydet.utils.writers import ConsoleWriter, JSONWriter, WandbWriter

launch_mod = importlib.import_module("lazydet.engine.launch")  # the package exports the function `launch`


def test_storage_history_and_smoothing():
    with EventStorage(start_iter=0, iters_per_epoch=4) as s:
        for i in range(5):
            s.iter = i
            s.put_scalar("total_loss", float(i))
            s.put_scalar("lr", 0.1 * i, smoothing_hint=False)
        assert s.history("total_loss").values() == [(float(i), i) for i in range(5)]
        latest = s.latest_with_smoothing_hint(window_size=3)
        assert latest["total_loss"] == (3.0, 4)  # median of 2, 3, 4
        assert latest["lr"] == (pytest.approx(0.4), 4)
        assert s.epoch == pytest.approx(5 / 4)
        with pytest.raises(KeyError, match="no metric named 'nope'"):
            s.history("nope")


def test_json_writer_rows_with_epoch(tmp_path):
    path = tmp_path / "metrics.json"
    w = JSONWriter(str(path), window_size=1)
    with EventStorage(0, iters_per_epoch=10) as s:
        for i in range(3):
            s.iter = i
            s.put_scalars(total_loss=1.0 / (i + 1), loss_a=0.5)
            w.write()
        s.put_scalar("bbox/AP", 12.5, smoothing_hint=False)  # an evaluation at an already-written iteration
        w.write()
    w.close()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2, 2]
    assert rows[1] == {"iteration": 1, "epoch": 0.2, "total_loss": 0.5, "loss_a": 0.5}
    assert rows[3] == {"iteration": 2, "epoch": 0.3, "bbox/AP": 12.5}


def test_console_line_has_progress_losses_and_times(caplog):
    w = ConsoleWriter(max_iter=100, window_size=5)
    logger = logging.getLogger("lazydet")
    logger.propagate = True
    with caplog.at_level(logging.INFO, logger="lazydet"), EventStorage(0, iters_per_epoch=40) as s:
        s.iter = 19
        s.put_scalars(total_loss=0.75, loss_bbox=0.25, loss_bbox_3=0.5, time=0.5, data_time=0.01)
        s.put_scalars(lr=1e-4, eta_seconds=3725.0, max_mem_mb=2048.0, smoothing_hint=False)
        w.write()
    line = caplog.records[-1].getMessage()
    for part in ("eta: 1:02:05", "iter: 20/100", "epoch: 0.50", "total_loss: 0.75", "loss_bbox: 0.25",
                 "time: 0.5000", "data_time: 0.0100", "lr: 0.0001", "max_mem: 2048M"):
        assert part in line, (part, line)
    assert line.index("total_loss") < line.index("loss_bbox") and "loss_bbox_3" not in line


def test_wandb_failure_warns_once_and_training_continues(monkeypatch, caplog):
    import wandb

    def broken_init(*a, **k):
        raise RuntimeError("network down")

    monkeypatch.setattr(wandb, "init", broken_init)
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = logging.getLogger("lazydet")
    logger.propagate = True
    with caplog.at_level(logging.WARNING, logger="lazydet"):
        w = WandbWriter(project="p")
        with EventStorage(0) as s:
            s.put_scalar("total_loss", 1.0)
            w.write()
        w.close()
    msgs = [r.getMessage() for r in caplog.records if "wandb.init failed" in r.getMessage()]
    assert len(msgs) == 1 and "network down" in msgs[0]


def test_wandb_without_key_goes_offline(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "out"
    for resume in (False, True):  # --resume continues the run of the output folder
        w = WandbWriter(project="p", name="n", output_dir=str(out), resume=resume)
        assert os.environ["WANDB_MODE"] == "offline"
        with EventStorage(0) as s:
            s.put_scalar("total_loss", 0.123)
            w.write()
        w.close()
    run_id = (out / "wandb_run_id").read_text()
    runs = [r for r in os.listdir(tmp_path / "wb" / "wandb") if r.startswith("offline-run-")]
    # offline-run-<time>-<id>, with "-1" appended by wandb when both runs start within the same second
    assert len(runs) == 2 and all(re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{run_id}(-\d+)?", r) for r in runs)


def test_to_device_nested():
    Point = namedtuple("Point", "x y")
    batch = {"images": torch.zeros(2, 3), "targets": [{"boxes": torch.ones(1, 4), "file_name": "a.jpg"}],
             "pair": (torch.ones(1), 3), "p": Point(torch.zeros(1), "s")}
    out = to_device(batch, "meta")
    assert out["images"].device.type == "meta" and out["targets"][0]["boxes"].device.type == "meta"
    assert out["targets"][0]["file_name"] == "a.jpg" and out["pair"][1] == 3
    assert isinstance(out["p"], Point) and out["p"].x.device.type == "meta"


def test_rng_state_roundtrip_and_preserve():
    seed_all_rng(3)
    state = get_rng_state()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a
    with preserve_rng_state():
        torch.rand(100)
    b = torch.rand(1).item()
    set_rng_state(state)
    random.random(), np.random.rand(), torch.rand(1)
    assert torch.rand(1).item() == b
    # the state survives torch.load(weights_only=True)
    import io
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    set_rng_state(torch.load(buf, weights_only=True))
    assert random.random() == a[0]


def test_random_seed_is_drawn_and_returned():
    s1, s2 = seed_all_rng(-1), seed_all_rng(None)
    assert 0 <= s1 < 2**31 and 0 <= s2 < 2**31
    assert seed_all_rng(5) == 5


def test_comm_single_process():
    assert comm.get_world_size() == 1 and comm.get_rank() == 0 and comm.is_main_process()
    assert comm.all_gather({"a": 1}) == [{"a": 1}] and comm.gather(3) == [3]


@pytest.mark.parametrize("nodelist,first", [("gpu[03-05,09],cpu1", "gpu03"), ("node7", "node7"),
                                            ("a-b[1,4]", "a-b1"), ("n[10-11]", "n10")])
def test_first_slurm_host_parsing(nodelist, first, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no scontrol: the parser answers
    assert launch_mod.first_slurm_host(nodelist) == first


def test_slurm_port_and_env_detection(monkeypatch):
    assert launch_mod.slurm_port("123456") == 15000 + 123456 % 20000
    assert launch_mod.slurm_port("123456") == launch_mod.slurm_port("123456")
    for k in ("RANK", "WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_STEP_ID"):
        monkeypatch.delenv(k, raising=False)
    assert launch_mod.env_launched() == ""
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_STEP_ID", "0")  # a task started by srun
    assert launch_mod.env_launched() == ""  # one task: spawn locally (--num-gpus)
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert launch_mod.env_launched() == "slurm"
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launch_mod.env_launched() == "torchrun"


def test_launch_single_process_runs_inline(capsys):
    assert launch_mod.launch(lambda x: x * 2, 1, args=(21,)) == 42
    if not torch.cuda.is_available():
        assert "No CUDA device: running on the CPU" in capsys.readouterr().out


def test_launch_from_slurm_env_world_one(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    env = {"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_LOCALID": "0", "SLURM_JOB_NODELIST": "gpu[01-02]",
           "SLURM_JOB_ID": "777"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert launch_mod._launch_from_env("slurm", lambda: os.environ["MASTER_ADDR"], (), None) == "gpu01"
    assert os.environ["MASTER_PORT"] == str(15777)
