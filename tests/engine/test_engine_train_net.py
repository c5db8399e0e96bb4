"""scripts.train_net end to end on the toy recipe: loss falls, output folder, exact resume, DDP on CPU."""
import json
import os
import subprocess
import sys

import pytest
import torch

from lazydet.config import LazyConfig
from lazydet.engine import HookBase, StopTraining, default_setup
from scripts.train_net import build_trainer
from tests.engine.conftest import REPO_ROOT

RECIPE = os.path.join(REPO_ROOT, "tests", "engine", "toy_recipe.py")


def run_cli(*argv, env=None, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "scripts.train_net", "--config-file", RECIPE, *argv],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def read_metrics(out_dir):
    with open(os.path.join(out_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f]


def final_weights(out_dir):
    return torch.load(os.path.join(out_dir, "model_final.pth"), weights_only=True)["model"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("toy_cli"))
    log = run_cli(f"train.output_dir={out}", "train.wandb.enabled=True",
                  env={"WANDB_MODE": "offline", "WANDB_DIR": os.path.join(out, "wandb_dir"),
                       "WANDB_SILENT": "true"})
    return out, log


def test_train_net_loss_falls_and_output_folder(cli_run):
    out, log = cli_run
    for f in ("config.yaml", "config.py", "log.txt", "metrics.json", "last_checkpoint", "model_final.pth",
              "model_0000019.pth", "model_best.pth"):
        assert os.path.isfile(os.path.join(out, f)), f
    rows = [r for r in read_metrics(out) if "total_loss" in r]
    assert rows[0]["iteration"] == 9 and rows[-1]["iteration"] == 59
    assert rows[-1]["total_loss"] < 0.5 * rows[0]["total_loss"]
    assert rows[0]["epoch"] == pytest.approx(10 / 8)
    for key in ("loss_mse", "loss_l1", "lr", "time", "data_time", "eta_seconds", "max_mem_mb", "grad_norm"):
        assert key in rows[-1], key
    evals = [r for r in read_metrics(out) if "toy/mse" in r]
    assert [r["iteration"] for r in evals] == [29, 59]
    cfg = LazyConfig.load(os.path.join(out, "config.yaml"))
    assert cfg.train.max_iter == 60 and cfg.train.output_dir == out
    assert "iter: 60/60" in log and "epoch: 7.50" in log and "No CUDA device" in log
    assert "| decay" in log and "| no_decay" in log  # parameter-group table


def test_tensorboard_events_contain_losses(cli_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _ = cli_run
    acc = EventAccumulator(out)
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"total_loss", "loss_mse", "lr", "toy/mse"} <= set(tags)
    steps = [e.step for e in acc.Scalars("total_loss")]
    assert steps[0] == 9 and steps[-1] == 59
    json_rows = {r["iteration"]: r for r in read_metrics(out) if "total_loss" in r}
    for e in acc.Scalars("total_loss"):
        assert e.value == pytest.approx(json_rows[e.step]["total_loss"], rel=1e-5)


def test_wandb_offline_run_dir_contains_losses(cli_run):
    out, _ = cli_run
    root = os.path.join(out, "wandb_dir", "wandb")
    runs = [d for d in os.listdir(root) if d.startswith("offline-run-")]
    assert len(runs) == 1
    run_dir = os.path.join(root, runs[0])
    data = b"".join(open(os.path.join(run_dir, f), "rb").read() for f in os.listdir(run_dir) if f.endswith(".wandb"))
    assert b"total_loss" in data and b"loss_mse" in data


def _load_cfg(out, *overrides):
    cfg = LazyConfig.load(RECIPE)
    return LazyConfig.apply_overrides(cfg, [f"train.output_dir={out}", *overrides])


class _Args:
    resume = False
    eval_only = False


class CrashAt(HookBase):
    """Stands for a crash: training ends at `at` without saving (iterations after the last checkpoint are lost)."""

    def __init__(self, at):
        self.at = at

    def after_step(self):
        if self.trainer.iter == self.at:
            raise StopTraining("simulated crash")


def _train(cfg, resume=False, extra_hooks=()):
    args = _Args()
    args.resume = resume
    default_setup(cfg, args)
    trainer = build_trainer(args, cfg)
    trainer.register_hooks(list(extra_hooks))
    trainer.train()
    return trainer


def test_resume_equals_uninterrupted(tmp_path):
    """Dropout (global torch RNG) + AdamW + warm-up/cosine schedule + EMA + periodic eval in the middle."""
    overrides = ["train.ema.enabled=True", "train.ema.decay=0.9"]
    full = _train(_load_cfg(str(tmp_path / "full"), *overrides))
    assert full.iter == 60
    crashed = _train(_load_cfg(str(tmp_path / "resumed"), *overrides), extra_hooks=[CrashAt(45)])
    assert crashed.stop_reason == "simulated crash"
    with open(tmp_path / "resumed" / "last_checkpoint") as f:
        assert f.read().strip() == "model_0000039.pth"
    resumed = _train(_load_cfg(str(tmp_path / "resumed"), *overrides), resume=True)
    assert resumed.start_iter == 40 and resumed.iter == 60
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "resumed")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    ema_a = torch.load(tmp_path / "full" / "model_final.pth", weights_only=True)["ema"]["module"]
    ema_b = torch.load(tmp_path / "resumed" / "model_final.pth", weights_only=True)["ema"]["module"]
    for k in ema_a:
        torch.testing.assert_close(ema_a[k], ema_b[k], rtol=0, atol=0, msg=k)
    # a fresh start (without the RNG restore) would differ: dropout makes the test sensitive to it
    other = _train(_load_cfg(str(tmp_path / "other"), *overrides, "train.seed=8"))
    assert not all(torch.equal(x, y) for x, y in zip(a.values(), final_weights(tmp_path / "other").values()))
    assert other.iter == 60


def test_epoch_lengths_override_iterations(tmp_path):
    cfg = _load_cfg(str(tmp_path), "train.max_epochs=2", "train.eval_period_epochs=1",
                    "train.checkpointer.period_epochs=1", "train.best_checkpointer.enabled=False")
    trainer = _train(cfg)
    assert trainer.iters_per_epoch == 8 and trainer.max_iter == 16
    assert sorted(f for f in os.listdir(tmp_path) if f.startswith("model_")) == ["model_0000007.pth",
                                                                                "model_final.pth"]
    evals = [r["iteration"] for r in read_metrics(tmp_path) if "toy/mse" in r]
    assert evals == [7, 15]


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one(tmp_path):
    common = ["model.dropout=0.0", "train.eval_period=0", "train.max_iter=20", "train.best_checkpointer.enabled=False"]
    _train(_load_cfg(str(tmp_path / "one"), *common))  # the 1-process reference, in this process
    log = run_cli("--num-gpus", "2", f"train.output_dir={tmp_path / 'two'}", *common)
    assert "running 2 processes on the CPU with gloo" in log
    a, b = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    one = [r["total_loss"] for r in read_metrics(tmp_path / "one") if "total_loss" in r]
    two = [r["total_loss"] for r in read_metrics(tmp_path / "two") if "total_loss" in r]
    assert one == pytest.approx(two, rel=1e-4)


def test_eval_only_loads_init_checkpoint(cli_run, tmp_path):
    out, _ = cli_run
    log = run_cli("--eval-only", f"train.output_dir={tmp_path}",
                  f"train.init_checkpoint={os.path.join(out, 'model_final.pth')}")
    assert "6/6 model tensors matched (100.0%)" in log
    assert "neg_mse" in log


def test_num_classes_mismatch_is_one_line(tmp_path):
    from omegaconf import OmegaConf

    from lazydet.data import DataError
    from lazydet.engine.build import check_num_classes
    from tests.engine.toy import ToyRegressor

    cfg = OmegaConf.create({"dataloader": {"train": {"dataset": {"names": "coco_mini_train"}}}})
    with pytest.raises(DataError, match="num_classes=3 but dataset 'coco_mini_train' has 80 classes"):
        check_num_classes(cfg, ToyRegressor(num_classes=3))
    check_num_classes(cfg, ToyRegressor(num_classes=80))
    check_num_classes(cfg, ToyRegressor())  # no num_classes attribute: nothing to check


def test_ema_starts_from_loaded_init_weights(tmp_path):
    """EMA is copied after DDP wrap and after train.init_checkpoint: it must equal the loaded weights."""
    from tests.engine.toy import ToyRegressor

    torch.manual_seed(123)
    init = ToyRegressor(dropout=0.1)
    torch.save(init.state_dict(), tmp_path / "init.pth")
    cfg = _load_cfg(str(tmp_path / "out"), "train.ema.enabled=True", f"train.init_checkpoint={tmp_path / 'init.pth'}")
    args = _Args()
    default_setup(cfg, args)
    trainer = build_trainer(args, cfg)
    assert trainer.checkpointer.last_load_report.coverage == 1.0
    for a, b in zip(init.parameters(), trainer.ema.module.parameters()):
        assert torch.equal(a, b)
    for h in trainer.hooks:  # never trained: the PreemptionHook's signal handlers must not outlive the test
        getattr(h, "uninstall", lambda: None)()


@pytest.mark.parametrize("key,eval_only", [("ema.decay", False), ("clip_grad.params.norm_type", False),
                                           ("init_checkpoint", True)])
def test_missing_train_key_is_one_line_error_naming_it(tmp_path, key, eval_only):
    """No default hides in code: a recipe whose `train` lacks a key stops with one line naming the key."""
    from types import SimpleNamespace

    from lazydet.config import ConfigError
    from scripts.train_net import main

    parent, _, leaf = f"train.{key}".rpartition(".")
    recipe = tmp_path / "recipe.py"
    with open(RECIPE) as f:  # a copy, not an import: an imported recipe's objects would be shared by the cases
        recipe.write_text(f.read() + f"\ndel {parent}[{leaf!r}]\n")
    args = SimpleNamespace(config_file=str(recipe), resume=False, eval_only=eval_only,
                           opts=[f"train.output_dir={tmp_path / 'out'}", "train.ema.enabled=True"])
    with pytest.raises(ConfigError) as e:
        main(args)
    assert str(e.value).startswith(f"train.{key} is missing from the recipe") and "\n" not in str(e.value)
    assert "configs/common/train.py" in str(e.value)
