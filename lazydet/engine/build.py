"""The parts of a training run, built from a recipe in one place.

`scripts/train_net.py` (training and `--eval-only`) and every tool that trains or times the recipe
(`analysis.timing` behind benchmark / ablate_precision / train_step_memory, the GPU report's parts,
`diagnostics.probes` behind overfit_batch / lr_find) call `build_training_parts`, so a tool measures exactly
the model, optimizer, loader and schedule that training runs. Settings are read from `cfg.train.*` directly:
their defaults live only in `configs/common/train.py`, and `missing_keys_as_errors` turns a key a recipe lacks
into one line naming it.
"""
import contextlib
import inspect
import logging
import math
import os
from dataclasses import dataclass
from typing import Optional

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from ..config import ConfigError, instantiate
from ..solver import LRMultiplier
from ..utils import comm
from ..utils.device import resolve_device
from ..utils.writers import ConsoleWriter, JSONWriter, TensorboardWriter, WandbWriter
from .train_config import validate_train_config

logger = logging.getLogger("lazydet")


@contextlib.contextmanager
def missing_keys_as_errors(node: DictConfig):
    """Within the block, `node` (e.g. `cfg.train`) is in OmegaConf struct mode (no key can be added by a typo)
    and reading a key it lacks raises a one-line `ConfigError` naming the full key, instead of OmegaConf's
    multi-line error or a default hidden in code. Errors about keys outside `node` pass through unchanged."""
    prefix = node._get_full_key(None)
    was_struct = OmegaConf.is_struct(node)
    OmegaConf.set_struct(node, True)
    try:
        yield node
    except (ConfigAttributeError, ConfigKeyError) as e:
        key = str(getattr(e, "full_key", "") or "")
        if prefix and not (key == prefix or key.startswith(prefix + ".")):
            raise
        raise ConfigError(f"{key} is missing from the recipe: add it (every {prefix}.* key and its default is "
                          f"in configs/common/train.py; recipes usually start from its `{prefix}`)") from None
    finally:
        OmegaConf.set_struct(node, was_struct)


@dataclass
class RunLengths:
    """How long the run is and how often it evaluates / checkpoints, in iterations (0 = never)."""

    max_iter: int
    eval_period: int
    checkpoint_period: int
    iters_per_epoch: Optional[int]  # ceil(dataset_size / total_batch_size); None when the loader does not say

    def describe(self) -> str:
        """One log line: the lengths in iterations and, when known, epochs."""
        epochs = f" = {self.max_iter / self.iters_per_epoch:.2f} epochs of {self.iters_per_epoch} iterations" \
            if self.iters_per_epoch else ""
        return (f"Schedule: {self.max_iter} iterations{epochs}; eval every {self.eval_period}, checkpoint every "
                f"{self.checkpoint_period} iterations")


def resolve_lengths(train: DictConfig, data_loader) -> RunLengths:
    """`train.max_iter`, `eval_period` and `checkpointer.period`, each replaced by its `*_epochs` setting when
    that is not None (`epochs x iters_per_epoch`, with `iters_per_epoch = ceil(dataset_size / total_batch_size)`
    read from the train loader's attributes)."""
    dataset_size = getattr(data_loader, "dataset_size", None)
    total_batch = getattr(data_loader, "total_batch_size", None)
    ipe = math.ceil(dataset_size / total_batch) if dataset_size and total_batch else None

    def iterations(iter_value, epochs, epoch_key: str) -> int:
        if epochs is None:
            return int(iter_value)
        if ipe is None:
            raise ConfigError(f"{epoch_key}={epochs} needs the train loader's dataset_size and total_batch_size "
                              f"attributes ({type(data_loader).__name__} has none); set the iteration value instead")
        return int(round(float(epochs) * ipe))

    lengths = RunLengths(
        max_iter=iterations(train.max_iter, train.max_epochs, "train.max_epochs"),
        eval_period=iterations(train.eval_period, train.eval_period_epochs, "train.eval_period_epochs"),
        checkpoint_period=iterations(train.checkpointer.period, train.checkpointer.period_epochs,
                                     "train.checkpointer.period_epochs"),
        iters_per_epoch=ipe)
    if lengths.max_iter <= 0:
        raise ConfigError(f"train.max_iter={lengths.max_iter} must be > 0 (or set train.max_epochs)")
    return lengths


def training_device(train: DictConfig) -> torch.device:
    """`train.device`; "cuda" becomes this process's GPU (its local rank), or the CPU (said once, by rank 0)
    when CUDA is missing."""
    device = resolve_device(train.device, logger if comm.is_main_process() else None)
    if device.type == "cuda":
        device = torch.device("cuda", comm.get_local_rank())
    return device


def check_num_classes(cfg, model) -> None:
    """`model.num_classes` must equal the class count of the registered training datasets (a one-line
    `DataError` otherwise); nothing to check without either."""
    num_classes = getattr(model, "num_classes", None)
    names = OmegaConf.select(cfg, "dataloader.train.dataset.names")
    if num_classes is None or names is None:
        return
    from ..data import MetadataCatalog, verify_num_classes

    names = [names] if isinstance(names, str) else list(names)
    registered = [n for n in names if n in MetadataCatalog.list()]
    if registered:
        verify_num_classes(registered, int(num_classes))


def build_model(cfg, device: torch.device) -> torch.nn.Module:
    """`cfg.model` instantiated on `device`, its class count checked against the train datasets."""
    model = instantiate(cfg.model).to(device)
    check_num_classes(cfg, model)
    logger.info(f"Model: {type(model).__name__} with {sum(p.numel() for p in model.parameters()):,} parameters")
    return model


@dataclass
class TrainingParts:
    """What one training run is made of, before any wrapping (DDP, EMA) or hooks."""

    cfg: DictConfig  # the recipe the parts were built from (its `optimizer.params.model` is now `model`)
    model: torch.nn.Module  # on `device`, in train mode
    optimizer: torch.optim.Optimizer
    data_loader: object  # the infinite train loader (`dataloader.train`)
    lr_scheduler: LRMultiplier  # lr = base lr x lr_multiplier(iter / lengths.max_iter)
    lengths: RunLengths
    device: torch.device


def build_training_parts(cfg, device: Optional[torch.device] = None) -> TrainingParts:
    """Instantiate `model` (on `device`, default `training_device(cfg.train)`), `optimizer` (its
    `params.model` set to the model), `dataloader.train`, the lengths and the lr schedule, as training does.
    A `train.*` key the recipe lacks, or a bad value (`validate_train_config`), is a one-line ConfigError
    naming it, for train_net and for every tool that builds through here."""
    with missing_keys_as_errors(cfg.train):
        validate_train_config(cfg)
        device = training_device(cfg.train) if device is None else torch.device(device)
        model = build_model(cfg, device)
        cfg.optimizer.params.model = model
        optimizer = instantiate(cfg.optimizer)
        data_loader = instantiate(cfg.dataloader.train)
        lengths = resolve_lengths(cfg.train, data_loader)
        lr_scheduler = LRMultiplier(optimizer, instantiate(cfg.lr_multiplier), lengths.max_iter)
    return TrainingParts(cfg, model, optimizer, data_loader, lr_scheduler, lengths, device)


def create_ddp_model(model: torch.nn.Module, ddp: DictConfig) -> torch.nn.Module:
    """`model` wrapped in DistributedDataParallel when several processes run (options `train.ddp.*`:
    broadcast_buffers, find_unused_parameters, fp16_compression); the bare model in one process."""
    if comm.get_world_size() == 1:
        return model
    device_ids = [comm.get_local_rank()] if next(model.parameters()).is_cuda else None
    ddp_params = inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
    # newer torch renamed broadcast_buffers (same meaning for the per-forward sync that we configure)
    buffers_kw = {"forward_sync_buffers" if "forward_sync_buffers" in ddp_params else "broadcast_buffers":
                  bool(ddp.broadcast_buffers)}
    wrapped = torch.nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=bool(ddp.find_unused_parameters), **buffers_kw)
    if ddp.fp16_compression:
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        wrapped.register_comm_hook(state=None, hook=default_hooks.fp16_compress_hook)
    return wrapped


def build_writers(cfg, output_dir: str, max_iter: int, resume: bool = False) -> list:
    """Metric writers: the console on every rank; `metrics.json`, TensorBoard and (`train.wandb.enabled`)
    wandb on the main process, all smoothing over `train.log_period` iterations."""
    period = int(cfg.train.log_period)
    writers = [ConsoleWriter(max_iter, window_size=period)]
    if not comm.is_main_process():
        return writers
    writers += [JSONWriter(os.path.join(output_dir, "metrics.json"), window_size=period),
                TensorboardWriter(output_dir, window_size=period)]
    wandb = cfg.train.wandb
    if wandb.enabled:
        from ..config.serialize import to_plain

        plain = OmegaConf.to_container(OmegaConf.create(to_plain(cfg, strict=False)), resolve=False)
        writers.append(WandbWriter(project=wandb.project, name=wandb.name, entity=wandb.entity, config=plain,
                                   output_dir=output_dir, window_size=period, resume=resume))
    return writers


def load_ema_weights(ema, path: str):
    """Fill `ema.module` with the EMA weights saved in the training checkpoint `path` and return `ema`; None
    (evaluate the model weights instead, said in the log) when `path` is not a file holding EMA weights."""
    from ..checkpoint import load_state_into

    data = torch.load(path, map_location="cpu", weights_only=True) if path and os.path.isfile(path) else {}
    state = data.get("ema", {}).get("module") if isinstance(data, dict) else None
    if not state:
        logger.info("train.ema.enabled but the checkpoint has no EMA weights: evaluating its model weights")
        return None
    logger.info(load_state_into(ema.module, state, f"{path} (EMA weights)", auto_prefix=False).format())
    return ema
