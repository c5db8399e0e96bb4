"""Train (or evaluate) a lazydet recipe.

    python -m scripts.train_net --config-file F [--num-gpus N] [--num-machines M --machine-rank R
        --dist-url U] [--resume] [--eval-only] [key=value ...]

See docs/engine.md; `--help` lists every option.
"""
import logging
import os
import sys

# Idle OpenMP threads sleep instead of spinning (set before torch loads). On a shared CPU, spinning threads
# made the quickstart ~8x slower (15.8 vs 1.8 s/it on 2 busy cores). Export OMP_WAIT_POLICY to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from lazydet.checkpoint import CheckpointError
from lazydet.config import ConfigError, LazyConfig
from lazydet.data import DataError, check_datasets
from lazydet.engine import build_trainer, default_argument_parser, default_setup, do_test, launch
from lazydet.engine.defaults import select
from lazydet.engine.launch import LaunchError
from lazydet.engine.run_folder import RunFolderError, check_before_launch, keep_early_log, open_run_folder
from lazydet.utils import comm
from lazydet.utils.device import resolve_device

logger = logging.getLogger("lazydet")


def load_config(args):
    cfg = LazyConfig.load(args.config_file)
    return LazyConfig.apply_overrides(cfg, args.opts)


def evaluate_only(cfg, args) -> dict:
    """--eval-only: weights from train.init_checkpoint, or the last checkpoint with --resume (EMA weights
    when the checkpoint has them and train.ema.enabled)."""
    from lazydet.checkpoint import Checkpointer
    from lazydet.config import instantiate
    from lazydet.engine import ModelEMA

    device = resolve_device(select(cfg, "train.device", "cuda"), logger)
    if device.type == "cuda":
        import torch

        device = torch.device("cuda", comm.get_local_rank())
    model = instantiate(cfg.model).to(device)
    ema = ModelEMA(model, select(cfg, "train.ema.decay", 0.9998)) if select(cfg, "train.ema.enabled", False) else None
    checkpointer = Checkpointer(model, select(cfg, "train.output_dir", "./output"),
                                **({"ema": ema} if ema is not None else {}))
    init = select(cfg, "train.init_checkpoint", "")
    checkpointer.resume_or_load(init, resume=args.resume)
    if ema is not None and not (args.resume and checkpointer.has_checkpoint()):
        ema = _load_ema_weights(ema, init)
    return do_test(cfg, ema.module if ema is not None else model)


def _load_ema_weights(ema, path):
    """The EMA weights saved in a training checkpoint `path`, or None (evaluate the model weights)."""
    import os

    import torch

    from lazydet.checkpoint import load_state_into

    data = torch.load(path, map_location="cpu", weights_only=True) if path and os.path.isfile(path) else {}
    state = data.get("ema", {}).get("module") if isinstance(data, dict) else None
    if not state:
        logger.info("train.ema.enabled but the checkpoint has no EMA weights: evaluating its model weights")
        return None
    logger.info(load_state_into(ema.module, state, f"{path} (EMA weights)", auto_prefix=False).format())
    return ema


def main(args):
    cfg = load_config(args)
    keep_early_log()  # the dataset check's lines go to log.txt once the run folder is open
    check_datasets(cfg)  # every dataset exists and its images are readable, before anything is built or written
    run_folder = open_run_folder(cfg, args)  # lock, refuse a used folder, choose the resume checkpoint
    default_setup(cfg, args)
    if args.eval_only:
        return evaluate_only(cfg, args)
    trainer = build_trainer(cfg, args)
    trainer.register_hooks([run_folder])  # config files at the start, plots/ at the end
    trainer.train()
    return trainer


def cli(argv=None):
    args = default_argument_parser().parse_args(argv)
    try:
        check_before_launch(load_config(args), args)  # fail fast, before spawning processes, with one line
    except (ConfigError, RunFolderError, CheckpointError) as e:
        sys.exit(f"error: {e}")
    try:
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except (ConfigError, DataError, LaunchError, RunFolderError, CheckpointError) as e:  # one line, no traceback
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    cli()
