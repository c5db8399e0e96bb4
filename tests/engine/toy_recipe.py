"""Toy recipe for engine tests: `python -m scripts.train_net --config-file tests/engine/toy_recipe.py`."""
from fvcore.common.param_scheduler import CosineParamScheduler
from omegaconf import OmegaConf

from lazydet.config import LazyCall as L
from lazydet.config import get_config
from lazydet.solver import WarmupParamScheduler
from tests.engine.toy import ToyEvaluator, ToyLoader, ToyRegressor, toy_test_loader

model = L(ToyRegressor)(dim=4, hidden=16, dropout=0.1)

dataloader = OmegaConf.create()
dataloader.train = L(ToyLoader)(n=64, dim=4, total_batch_size=8, seed=0)
dataloader.test = L(toy_test_loader)(n=64, dim=4, seed=0)
dataloader.evaluator = L(ToyEvaluator)()

optimizer = get_config("common/optim.py").AdamW
optimizer.lr = 0.01
optimizer.weight_decay = 0.01

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=0.1),
    warmup_factor=0.1,
    warmup_length=0.1,
)

train = get_config("common/train.py").train
train.output_dir = "./output/toy"
train.max_iter = 60
train.eval_period = 30
train.log_period = 10
train.checkpointer.period = 20
train.device = "cpu"
train.seed = 7
train.best_checkpointer.metric = "toy/neg_mse"
