"""A seconds-long recipe for the SLURM tests: the toy regressor with the engine's real train settings.

    python -m scripts.train_net --config-file tests/slurm/toy_recipe.py train.device=cpu
`dataloader.train.step_sleep` slows each step down so a test can signal the job mid-run.
"""
import torch
from fvcore.common.param_scheduler import MultiStepParamScheduler

from lazydet.config import LazyCall as L
from lazydet.solver import get_default_optimizer_params
from tests.slurm.toy import ToyCountEvaluator, ToyLoader, ToyRegressor, ToyTestLoader

from ...configs.common.train import train

model = L(ToyRegressor)(dim=8, hidden=16)
dataloader = dict(
    train=L(ToyLoader)(batch_size=4, dim=8, step_sleep=0.0, num_workers=0),
    test=L(ToyTestLoader)(num_images=10, dim=8),
    evaluator=L(ToyCountEvaluator)(),
)
optimizer = L(torch.optim.SGD)(params=L(get_default_optimizer_params)(base_lr="${..lr}"), lr=0.05, momentum=0.9)
lr_multiplier = L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[30], num_updates=40)

train.max_iter = 40
train.eval_period = 20
train.log_period = 5
train.checkpointer.period = 10
train.best_checkpointer.enabled = False
train.device = "cpu"
train.seed = 42
train.doctor.enabled = False
train.output_dir = "./output/toy_slurm"
