"""lazydet.engine.build: one builder of a run's parts for train_net and the tools; lengths; missing keys;
and the engine's layering (it imports neither the doctor nor the analysis tools)."""
import ast
import os
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from lazydet.config import ConfigError, LazyConfig
from lazydet.engine import missing_keys_as_errors, resolve_lengths
from tests.engine.conftest import REPO_ROOT

RECIPE = os.path.join(REPO_ROOT, "tests", "engine", "toy_recipe.py")


def test_tools_get_the_parts_train_net_trains(tmp_path):
    """overfit_batch / lr_find (probes) and train_net build the same model weights, param groups and schedule."""
    from lazydet.diagnostics import probes
    from lazydet.engine import default_setup
    from scripts.train_net import build_trainer

    cfg = LazyConfig.apply_overrides(LazyConfig.load(RECIPE), [f"train.output_dir={tmp_path}"])
    args = SimpleNamespace(resume=False, eval_only=False)
    default_setup(cfg, args)  # seeds as train_net does (train.seed=7 + rank 0)
    trainer = build_trainer(args, cfg)
    tool = probes.build_parts(RECIPE, [f"train.output_dir={tmp_path}"])
    for (name, a), b in zip(trainer.unwrapped_model.state_dict().items(), tool.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert [(g["initial_lr"], g["weight_decay"], len(g["params"])) for g in trainer.optimizer.param_groups] == \
        [(g["initial_lr"], g["weight_decay"], len(g["params"])) for g in tool.optimizer.param_groups]
    assert [g["lr"] for g in tool.optimizer.param_groups] == [g["initial_lr"] for g in tool.optimizer.param_groups]
    assert trainer.max_iter == tool.lengths.max_iter == 60 and tool.lr_scheduler.warmup_iters == 6
    for h in trainer.hooks:  # never trained: the PreemptionHook's signal handlers must not outlive the test
        getattr(h, "uninstall", lambda: None)()


def test_tools_get_train_nets_value_checks(tmp_path):
    """A bad train.* value stops a tool that builds through build_training_parts as it stops train_net."""
    from lazydet.diagnostics import probes

    with pytest.raises(ConfigError, match=r"^train.grad_accumulation_steps=0 "):
        probes.build_parts(RECIPE, [f"train.output_dir={tmp_path}", "train.grad_accumulation_steps=0"])


def test_resolve_lengths_epochs_win_over_iterations():
    train = OmegaConf.create({"max_iter": 100, "max_epochs": 2.5, "eval_period": 10, "eval_period_epochs": None,
                              "checkpointer": {"period": 7, "period_epochs": 1}})
    loader = SimpleNamespace(dataset_size=30, total_batch_size=4)  # ceil(30 / 4) = 8 iterations per epoch
    lengths = resolve_lengths(train, loader)
    assert (lengths.max_iter, lengths.eval_period, lengths.checkpoint_period, lengths.iters_per_epoch) == (20, 10, 8, 8)
    assert "20 iterations = 2.50 epochs of 8 iterations" in lengths.describe()
    with pytest.raises(ConfigError, match="train.max_epochs=2.5 needs the train loader's dataset_size"):
        resolve_lengths(train, object())


def test_missing_keys_as_errors_names_the_key_and_restores_the_node():
    cfg = OmegaConf.create({"train": {"ema": {"enabled": True}}, "model": {}})
    with pytest.raises(ConfigError) as e:
        with missing_keys_as_errors(cfg.train):
            cfg.train.ema.decay  # noqa: B018 - the read is the point
    assert str(e.value).startswith("train.ema.decay is missing from the recipe") and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="train.typo is missing"):  # struct mode: a typo cannot add a key
        with missing_keys_as_errors(cfg.train):
            cfg.train.typo = 1
    with pytest.raises(AttributeError, match="Missing key nothing"):  # keys outside the node: OmegaConf's own error
        with missing_keys_as_errors(cfg.train):
            cfg.model.nothing  # noqa: B018
    cfg.train.added_later = 1  # the node is writable again afterwards
    assert not OmegaConf.is_struct(cfg.train)


def _imported_packages(folder: str) -> set:
    """The lazydet sub-packages that the modules in `folder` import (module- or function-level)."""
    found = set()
    for name in os.listdir(folder):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(folder, name)) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = ("lazydet." + (node.module or "")) if node.level >= 2 else (node.module or "")
                found.add(module.split(".")[1] if module.startswith("lazydet.") else module.split(".")[0])
            elif isinstance(node, ast.Import):
                found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("lazydet."))
    return found


def test_engine_knows_neither_the_doctor_nor_the_tools():
    """diagnostics and analysis import the engine; the other way round would be an import circle."""
    imported = _imported_packages(os.path.join(REPO_ROOT, "lazydet", "engine"))
    assert {"config", "utils", "solver", "checkpoint"} <= imported  # the scan sees the engine's real imports
    assert not imported & {"diagnostics", "analysis"}
