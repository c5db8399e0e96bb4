"""COCO step schedules (detrex convention): 7500 iterations per epoch at total batch 16; lr constant, then
x0.1 for the last part. `lr_multiplier_<N>ep` set `lr_multiplier`; pair it with `train.max_iter = N * 7500`."""
from lazydet.config import LazyCall as L
from lazydet.solver import multistep_multiplier

COCO_ITERS_PER_EPOCH = 7500  # 118k train2017 images / total batch 16, rounded as detrex does


def default_coco_scheduler(epochs: int = 12, decay_epochs: int = 11, warmup_iters: int = 0,
                           warmup_factor: float = 0.001, iters_per_epoch: int = COCO_ITERS_PER_EPOCH,
                           gamma: float = 0.1):
    """Lazy fvcore multiplier: 1.0 until `decay_epochs`, then `gamma`, with an optional linear warm-up."""
    return L(multistep_multiplier)(
        max_iter=epochs * iters_per_epoch,
        steps=[decay_epochs * iters_per_epoch],
        gamma=gamma,
        warmup_iters=warmup_iters,
        warmup_factor=warmup_factor,
    )


lr_multiplier_12ep = default_coco_scheduler(12, 11, 0)
lr_multiplier_24ep = default_coco_scheduler(24, 20, 0)
lr_multiplier_36ep = default_coco_scheduler(36, 30, 0)
lr_multiplier_50ep = default_coco_scheduler(50, 40, 0)
