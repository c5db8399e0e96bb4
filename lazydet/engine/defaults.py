"""What scripts/train_net.py does, as reusable functions: argument parser, setup (output folder, logs,
config dumps, seed), lengths in epochs, building the trainer with its hooks and writers, evaluation."""
import argparse
import inspect
import logging
import math
import os
import sys

import torch
from omegaconf import OmegaConf

from ..checkpoint import Checkpointer
from ..solver import LRMultiplier, format_param_group_table, param_group_table
from ..utils import comm
from ..utils.device import resolve_device
from ..utils.env import collect_env_info, seed_all_rng
from ..utils.logger import setup_logger
from ..utils.writers import ConsoleWriter, JSONWriter, TensorboardWriter, WandbWriter
from . import hooks as H
from .ema import ModelEMA
from .trainer import Trainer

logger = logging.getLogger("lazydet")


def default_argument_parser(epilog: str = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train or evaluate a lazydet recipe.",
        epilog=epilog or """examples:
  single process:      python -m scripts.train_net --config-file R.py train.max_iter=100
  4 local GPUs:        python -m scripts.train_net --config-file R.py --num-gpus 4
  2 nodes x 8 GPUs:    (node 0) ... --num-gpus 8 --num-machines 2 --machine-rank 0 --dist-url tcp://node0:29500
                       (node 1) ... --num-gpus 8 --num-machines 2 --machine-rank 1 --dist-url tcp://node0:29500
  torchrun / srun:     torchrun --nproc-per-node 8 -m scripts.train_net --config-file R.py  (ranks from env)
  resume:              python -m scripts.train_net --config-file R.py --resume train.output_dir=<same dir>
  evaluate:            python -m scripts.train_net --config-file R.py --eval-only train.init_checkpoint=W.pth
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="recipe (.py) or saved config (.yaml)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from train.output_dir/last_checkpoint (model, optimizer, scheduler, grad "
                             "scaler, EMA, iteration, RNG); without one, start from train.init_checkpoint")
    parser.add_argument("--eval-only", action="store_true",
                        help="only evaluate: weights from train.init_checkpoint (or the last checkpoint with "
                             "--resume)")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="processes per machine (one per GPU; CPU processes with gloo when there is no CUDA)")
    parser.add_argument("--num-machines", type=int, default=1, help="number of machines")
    parser.add_argument("--machine-rank", type=int, default=0, help="rank of this machine (0..num-machines-1)")
    parser.add_argument("--dist-url", default="auto",
                        help="tcp://<host of machine 0>:<port> for several machines; 'auto' = a free local port")
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], metavar="key=value",
                        help="config overrides, e.g. train.max_iter=1000 optimizer.lr=2e-4")
    return parser


def select(cfg, key: str, default=None):
    """`cfg.a.b.c` or `default` when any part is missing or None."""
    value = OmegaConf.select(cfg, key, default=None) if cfg is not None else None
    return default if value is None else value


def default_setup(cfg, args) -> str:
    """Output folder, logging (log.txt), environment and argument log and the seed (`train.seed`, -1 =
    random, logged). Returns the output folder. config.yaml/config.py are written when training starts
    (`run_folder.RunFolder`), so a run that fails before that leaves the previous ones in place."""
    output_dir = select(cfg, "train.output_dir", "./output")
    rank = comm.get_rank()
    if comm.is_main_process():
        os.makedirs(output_dir, exist_ok=True)
    comm.synchronize()
    setup_logger(output_dir, rank=rank)
    logger.info(f"Rank {rank} of {comm.get_world_size()}; command line: {' '.join(sys.argv)}")
    logger.info("Environment:\n" + collect_env_info())
    seed = int(select(cfg, "train.seed", -1))
    drawn = seed < 0
    if drawn:  # one random base seed for all ranks (rank 0's), so the log line reproduces the whole run
        seed = comm.broadcast_object(int.from_bytes(os.urandom(4), "big") % 2**30)
    seed_all_rng(seed + rank)
    logger.info(f"Seed: {seed} + rank" + (" (drawn at random because train.seed=-1; pass train.seed="
                                          f"{seed} to repeat)" if drawn else ""))
    return output_dir


def resolve_lengths(cfg, data_loader) -> dict:
    """max_iter / eval_period / checkpoint period, with the `*_epochs` settings (when not None) converted via
    `iters_per_epoch = ceil(dataset_size / total_batch_size)` of the train loader."""
    dataset_size = getattr(data_loader, "dataset_size", None)
    total_batch = getattr(data_loader, "total_batch_size", None)
    ipe = math.ceil(dataset_size / total_batch) if dataset_size and total_batch else None
    out = {"iters_per_epoch": ipe, "max_iter": int(select(cfg, "train.max_iter", 0)),
           "eval_period": int(select(cfg, "train.eval_period", 0)),
           "checkpoint_period": int(select(cfg, "train.checkpointer.period", 0))}
    for key, epoch_key in (("max_iter", "train.max_epochs"), ("eval_period", "train.eval_period_epochs"),
                           ("checkpoint_period", "train.checkpointer.period_epochs")):
        epochs = select(cfg, epoch_key)
        if epochs is None:
            continue
        if ipe is None:
            raise ValueError(f"{epoch_key}={epochs} needs the train loader's dataset_size and total_batch_size "
                             f"attributes ({type(data_loader).__name__} has none); set the iteration value instead")
        out[key] = int(round(float(epochs) * ipe))
    if out["max_iter"] <= 0:
        raise ValueError(f"train.max_iter={out['max_iter']} must be > 0 (or set train.max_epochs)")
    return out


def create_ddp_model(model, cfg):
    """DDP-wrap when running several processes (train.ddp.* options); the bare model otherwise."""
    if comm.get_world_size() == 1:
        return model
    device_ids = [comm.get_local_rank()] if next(model.parameters()).is_cuda else None
    sync_buffers = bool(select(cfg, "train.ddp.broadcast_buffers", False))
    ddp_params = inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
    # newer torch renamed broadcast_buffers (same meaning for the per-forward sync that we configure)
    buffers_kw = {"forward_sync_buffers": sync_buffers} if "forward_sync_buffers" in ddp_params \
        else {"broadcast_buffers": sync_buffers}
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=bool(select(cfg, "train.ddp.find_unused_parameters", False)),
        **buffers_kw)
    if select(cfg, "train.ddp.fp16_compression", False):
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        ddp.register_comm_hook(state=None, hook=default_hooks.fp16_compress_hook)
    return ddp


def check_num_classes(cfg, model) -> None:
    """model.num_classes must equal the number of classes of the registered training datasets."""
    num_classes = getattr(model, "num_classes", None)
    names = select(cfg, "dataloader.train.dataset.names")
    if num_classes is None or names is None:
        return
    try:
        from ..data import MetadataCatalog, verify_num_classes
    except ImportError:
        return
    names = [names] if isinstance(names, str) else list(names)
    registered = [n for n in names if n in MetadataCatalog.list()]
    if registered:
        verify_num_classes(registered, int(num_classes))


def build_writers(cfg, output_dir: str, max_iter: int, resume: bool = False) -> list:
    period = int(select(cfg, "train.log_period", 20))
    writers = [ConsoleWriter(max_iter, window_size=period)]
    if not comm.is_main_process():
        return writers
    writers += [JSONWriter(os.path.join(output_dir, "metrics.json"), window_size=period),
                TensorboardWriter(output_dir, window_size=period)]
    if select(cfg, "train.wandb.enabled", False):
        plain = OmegaConf.to_container(OmegaConf.create(_plain_config(cfg)), resolve=False)
        writers.append(WandbWriter(project=select(cfg, "train.wandb.project", "lazydet"),
                                   name=select(cfg, "train.wandb.name"), entity=select(cfg, "train.wandb.entity"),
                                   config=plain, output_dir=output_dir, window_size=period, resume=resume))
    return writers


def _plain_config(cfg) -> dict:
    from ..config.serialize import to_plain

    return to_plain(cfg, strict=False)


def do_test(cfg, model) -> dict:
    """Evaluate `model` on `dataloader.test` with `dataloader.evaluator` (collective). {} when the recipe
    has no test loader or evaluator."""
    from ..config import instantiate
    from ..evaluation import inference_on_dataset

    if select(cfg, "dataloader.test") is None or select(cfg, "dataloader.evaluator") is None:
        logger.info("No dataloader.test / dataloader.evaluator in the recipe: skipping evaluation")
        return {}
    ev_cfg = cfg.dataloader.evaluator
    if "output_dir" in ev_cfg and ev_cfg.output_dir is None:
        ev_cfg = ev_cfg.copy()
        ev_cfg.output_dir = select(cfg, "train.output_dir")
    results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(ev_cfg))
    if comm.is_main_process() and results:
        if any(k.startswith("bbox/") for k in results):
            from ..evaluation import format_results_table

            logger.info("Evaluation results:\n" + format_results_table(results))
        else:
            logger.info("Evaluation results: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                           for k, v in results.items()))
    return results


def log_param_groups(model, optimizer) -> list:
    rows = param_group_table(model, optimizer)
    logger.info("Parameter groups (lr and weight_decay each group gets before the schedule's multiplier):\n"
                + format_param_group_table(rows))
    return rows


def build_hooks(cfg, trainer: Trainer, lr_scheduler, eval_function, lengths: dict, args=None) -> list:
    """Timer, LR schedule, doctor hooks, periodic checkpoints, evaluation, best checkpoint, preemption hooks,
    progress bar, writers (last, so they see what the others put)."""
    from ..diagnostics import build_doctor_hooks
    from .preemption import build_preemption_hooks

    hooks = [H.IterationTimer(), H.LRScheduler(lr_scheduler)]
    hooks += list(build_doctor_hooks(cfg) or [])
    hooks.append(H.PeriodicCheckpointer(trainer.checkpointer, lengths["checkpoint_period"],
                                        select(cfg, "train.checkpointer.max_to_keep")))
    hooks.append(H.EvalHook(lengths["eval_period"], eval_function))
    if select(cfg, "train.best_checkpointer.enabled", False):
        hooks.append(H.BestCheckpointer(trainer.checkpointer, select(cfg, "train.best_checkpointer.metric", "bbox/AP"),
                                        select(cfg, "train.best_checkpointer.mode", "max")))
    hooks += list(build_preemption_hooks(cfg, args) or [])
    hooks.append(H.ProgressBar())
    writers = build_writers(cfg, trainer.output_dir, trainer.max_iter, resume=bool(getattr(args, "resume", False)))
    hooks.append(H.PeriodicWriter(writers,
                                  select(cfg, "train.log_period", 20)))
    return hooks


def build_trainer(cfg, args=None) -> Trainer:
    """Instantiate model, optimizer, loader and schedule from the recipe, wire hooks and checkpointer, and
    resume (`args.resume`) or load `train.init_checkpoint`. Call `trainer.train()` next."""
    from ..config import instantiate

    device = resolve_device(select(cfg, "train.device", "cuda"), logger if comm.is_main_process() else None)
    if device.type == "cuda":
        device = torch.device("cuda", comm.get_local_rank())
    model = instantiate(cfg.model).to(device)
    check_num_classes(cfg, model)
    logger.info(f"Model: {type(model).__name__} with {sum(p.numel() for p in model.parameters()):,} parameters")
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    data_loader = instantiate(cfg.dataloader.train)
    lengths = resolve_lengths(cfg, data_loader)
    multiplier = instantiate(cfg.lr_multiplier)
    lr_scheduler = LRMultiplier(optimizer, multiplier, lengths["max_iter"])
    log_param_groups(model, optimizer)
    output_dir = select(cfg, "train.output_dir", "./output")
    clip = select(cfg, "train.clip_grad.enabled", False)
    wrapped = create_ddp_model(model, cfg)  # DDP broadcasts rank 0's weights: copy the EMA after this
    ema = ModelEMA(model, select(cfg, "train.ema.decay", 0.9998)) if select(cfg, "train.ema.enabled", False) else None
    trainer = Trainer(
        wrapped, data_loader, optimizer, cfg=cfg, device=device,
        max_iter=lengths["max_iter"], iters_per_epoch=lengths["iters_per_epoch"],
        amp_enabled=select(cfg, "train.amp.enabled", False), amp_dtype=select(cfg, "train.amp.dtype", "bf16"),
        clip_grad_max_norm=select(cfg, "train.clip_grad.params.max_norm") if clip else None,
        clip_grad_norm_type=select(cfg, "train.clip_grad.params.norm_type", 2.0),
        grad_accumulation_steps=select(cfg, "train.grad_accumulation_steps", 1), ema=ema, output_dir=output_dir)
    if lengths["iters_per_epoch"]:
        logger.info(f"Schedule: {lengths['max_iter']} iterations = {lengths['max_iter'] / lengths['iters_per_epoch']:.2f}"
                    f" epochs of {lengths['iters_per_epoch']} iterations; eval every {lengths['eval_period']}, "
                    f"checkpoint every {lengths['checkpoint_period']} iterations")
    checkpointer = Checkpointer(model, output_dir, optimizer=optimizer, scheduler=lr_scheduler, trainer=trainer)
    if trainer.grad_scaler is not None:
        checkpointer.add_checkpointable("grad_scaler", trainer.grad_scaler)
    if ema is not None:
        checkpointer.add_checkpointable("ema", ema)
    trainer.checkpointer = checkpointer
    trainer.register_hooks(build_hooks(cfg, trainer, lr_scheduler, lambda: do_test(cfg, trainer.eval_model()),
                                       lengths, args))
    resume = bool(getattr(args, "resume", False))
    checkpointer.resume_or_load(select(cfg, "train.init_checkpoint", ""), resume=resume)
    if ema is not None and not (resume and checkpointer.has_checkpoint()):
        ema.reset_from(model)  # not resumed: the average starts from the (possibly pretrained) initial weights
    if resume and trainer.start_iter > 0 and not hasattr(data_loader, "load_state_dict"):
        logger.warning("the train loader cannot restore its position (no load_state_dict): resumed data order "
                       "restarts from the sampler's beginning")
    return trainer
