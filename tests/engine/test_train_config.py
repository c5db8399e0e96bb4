"""Bad `train.*` values stop `scripts.train_net` with one line naming key, value and what is allowed, before
anything is spawned, built or written (the output folder of an earlier run stays byte-identical)."""
import os

import pytest
import torch
from omegaconf import OmegaConf

from lazydet.config import ConfigError, LazyConfig
from lazydet.engine.train_config import validate_train_config
from scripts import train_net
from tests.engine.conftest import REPO_ROOT
from tests.folder_state import assert_unchanged, folder_state

RECIPE = os.path.join(REPO_ROOT, "tests", "engine", "toy_recipe.py")

# override -> the whole error line train_net prints
BAD_VALUES = {
    "train.max_iter=0": "train.max_iter=0 must be a whole number of iterations >= 1 (the training length), or set "
                        "train.max_epochs instead",
    "train.max_iter=-5": "train.max_iter=-5 must be a whole number of iterations >= 1 (the training length), or set "
                         "train.max_epochs instead",
    "train.max_epochs=0": "train.max_epochs=0 must be a number of epochs > 0 (the training length), or None to use "
                          "train.max_iter",
    "train.max_iter=None": "train.max_iter=None and train.max_epochs is not set: set one of them (e.g. "
                           "train.max_iter=90000 or train.max_epochs=12)",
    "train.amp.dtype=fp8": "train.amp.dtype='fp8' is not a mixed-precision dtype: use one of 'bf16', 'bfloat16', "
                           "'fp16', 'float16' (fp16 adds a GradScaler)",
    "train.grad_accumulation_steps=0": "train.grad_accumulation_steps=0 must be a whole number of batches >= 1 (per "
                                       "optimizer step)",
    "train.device=tpu": "train.device='tpu' is not a device lazydet trains on: use 'cuda' (falls back to the CPU when "
                        "CUDA is missing) or 'cpu'",
    "train.device=cuda:first": "train.device='cuda:first' is not a device lazydet trains on: use 'cuda' (falls back "
                               "to the CPU when CUDA is missing) or 'cpu'",
    "train.checkpointer.period=2.5": "train.checkpointer.period=2.5 must be a whole number of iterations >= 1 "
                                     "(between checkpoints), or set train.checkpointer.period_epochs instead",
    "train.checkpointer.period=0": "train.checkpointer.period=0 must be a whole number of iterations >= 1 (between "
                                   "checkpoints), or set train.checkpointer.period_epochs instead",
    "train.checkpointer.period_epochs=-1": "train.checkpointer.period_epochs=-1 must be a number of epochs > 0 "
                                           "(between checkpoints), or None to use train.checkpointer.period",
    "train.eval_period=-1": "train.eval_period=-1 must be a whole number of iterations >= 0 (between evaluations; 0 = "
                            "only after the last iteration), or set train.eval_period_epochs instead",
    "train.eval_period=7.5": "train.eval_period=7.5 must be a whole number of iterations >= 0 (between evaluations; "
                             "0 = only after the last iteration), or set train.eval_period_epochs instead",
    "train.eval_period_epochs=-0.5": "train.eval_period_epochs=-0.5 must be a number of epochs >= 0 (between "
                                     "evaluations; 0 = only after the last iteration), or None to use "
                                     "train.eval_period",
}


@pytest.fixture
def earlier_run(tmp_path):
    """An output folder holding an earlier run's files, and its state."""
    out = tmp_path / "run"
    out.mkdir()
    for name, text in {"config.yaml": "old: 1\n", "log.txt": "old log\n", "metrics.json": '{"iteration": 4}\n',
                       "last_checkpoint": "model_0000004.pth"}.items():
        (out / name).write_text(text)
    (out / "model_0000004.pth").write_bytes(b"weights")
    return str(out), folder_state(str(out))


@pytest.mark.parametrize("override", list(BAD_VALUES))
def test_train_net_refuses_a_bad_value_in_one_line_and_writes_nothing(earlier_run, override):
    out, before = earlier_run
    with pytest.raises(SystemExit) as exit_info:
        train_net.cli(["--config-file", RECIPE, f"train.output_dir={out}", override])
    assert str(exit_info.value.code) == f"error: {BAD_VALUES[override]}"
    assert_unchanged(out, before)  # not even a log.txt line: nothing was created, spawned or built


def test_main_checks_too_before_writing(earlier_run):
    """main() (what every launched process runs) checks as well, before the output folder is touched."""
    out, before = earlier_run
    args = train_net.default_argument_parser().parse_args(
        ["--config-file", RECIPE, f"train.output_dir={out}", "train.grad_accumulation_steps=0"])
    with pytest.raises(ConfigError, match=r"^train\.grad_accumulation_steps=0 must be"):
        train_net.main(args)
    assert_unchanged(out, before)


def _train(**values):
    return OmegaConf.create({"train": values}, flags={"allow_objects": True})


@pytest.mark.parametrize("values", [
    dict(max_iter=100000.0, eval_period=0, checkpointer=dict(period=5000)),       # 1e5 written as a float
    dict(max_iter=0, max_epochs=12, eval_period=-1, eval_period_epochs=0.5,      # the *_epochs variants win
         checkpointer=dict(period=2.5, period_epochs=0.25)),
    dict(max_iter=10, amp=dict(enabled=True, dtype=torch.bfloat16), device="cuda:1", grad_accumulation_steps=4),
    dict(max_iter=10, amp=dict(dtype=None), device=None, grad_accumulation_steps=None),  # None: the default
    dict(),                                      # absent keys are not this check's business (defaults apply)
])
def test_usable_values_pass(values):
    validate_train_config(_train(**values))


@pytest.mark.parametrize("recipe", [RECIPE, "projects/dino_dinov2/configs/synthetic/dino_dinov2_quickstart.py",
                                    "projects/dino_dinov2/configs/COCO/dino_dinov2_l_50ep.py"])
def test_the_repo_recipes_pass(recipe):
    validate_train_config(LazyConfig.load(os.path.join(REPO_ROOT, recipe)))


def test_broken_interpolation_names_the_key():
    cfg = _train(max_iter="${oops}")
    with pytest.raises(ConfigError, match=r"^train\.max_iter: cannot be read: InterpolationKeyError"):
        validate_train_config(cfg)
