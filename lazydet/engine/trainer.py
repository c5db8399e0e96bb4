"""The training loop: one iteration = data -> model(batch) loss dict -> sum -> backward -> clip -> step.

Everything else (lr schedule, checkpoints, evaluation, logging, the doctor, preemption) lives in hooks.
"""
import contextlib
import logging
import math
import time

import torch

from ..utils import comm
from ..utils.device import to_device
from ..utils.env import get_rng_state, set_rng_state
from ..utils.events import EventStorage

logger = logging.getLogger("lazydet")

AMP_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


class StopTraining(Exception):
    """Raised by a hook to end training cleanly; the trainer records `stop_reason` and runs after_train()."""

    def __init__(self, reason: str = "stopped by a hook"):
        super().__init__(reason)
        self.reason = reason


class HookBase:
    """Base class of hooks; `self.trainer` is set when registered. Override any of the five calls."""

    trainer = None

    def before_train(self):
        """Called once, before the first iteration."""
        pass

    def before_step(self):
        """Called at the start of each iteration, before its batch is fetched."""
        pass

    def after_backward(self):
        """Called after backward (and the fp16 unscale), before clipping and the optimizer step; the hook may
        set `trainer.skip_step = True`."""
        pass

    def after_step(self):
        """Called after the optimizer step (and EMA update) of each iteration."""
        pass

    def after_train(self):
        """Called once at the end, also when a hook stopped training or an error propagates."""
        pass

    def state_dict(self) -> dict:
        """Hooks with state (e.g. the best metric so far) return it here; it is saved in checkpoints."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict()` returned (on resume)."""
        pass


def parse_amp_dtype(name: str) -> torch.dtype:
    """The torch dtype of `train.amp.dtype` ("bf16", "bfloat16", "fp16", "float16"); a ValueError naming the
    value otherwise."""
    if name not in AMP_DTYPES:
        raise ValueError(f"train.amp.dtype={name!r} is not one of {sorted(AMP_DTYPES)}")
    return AMP_DTYPES[name]


class Trainer:
    """Runs iterations `start_iter .. max_iter-1` and calls hooks around each.

    `model` is what forward runs (possibly DDP-wrapped); `unwrapped_model` is the bare module. With
    `grad_accumulation_steps=K`, one iteration consumes K batches and makes one optimizer step (losses are
    divided by K, so the gradient is the mean over the K micro-batches).
    """

    def __init__(self, model, data_loader, optimizer, *, max_iter: int, cfg=None, checkpointer=None,
                 device=None, iters_per_epoch=None, amp_enabled: bool = False, amp_dtype="bf16",
                 clip_grad_max_norm=None, clip_grad_norm_type: float = 2.0, grad_accumulation_steps: int = 1,
                 ema=None, output_dir=None):
        self.cfg = cfg
        self.model = model
        self.unwrapped_model = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) \
            else model
        self.data_loader = data_loader
        self.optimizer = optimizer
        self.checkpointer = checkpointer
        self.device = torch.device(device) if device is not None else next(self.unwrapped_model.parameters()).device
        self.max_iter = int(max_iter)
        self.iters_per_epoch = iters_per_epoch
        self.iter = self.start_iter = 0
        self.amp_enabled = bool(amp_enabled)
        self.amp_dtype = parse_amp_dtype(amp_dtype) if isinstance(amp_dtype, str) else amp_dtype
        self.grad_scaler = None
        if self.amp_enabled and self.amp_dtype == torch.float16:
            self.grad_scaler = torch.amp.GradScaler(self.device.type)
        self.clip_grad_max_norm = clip_grad_max_norm
        self.clip_grad_norm_type = float(clip_grad_norm_type)
        if int(grad_accumulation_steps) < 1:
            raise ValueError(f"train.grad_accumulation_steps={grad_accumulation_steps} must be >= 1")
        self.grad_accumulation_steps = int(grad_accumulation_steps)
        self.ema = ema
        self.output_dir = output_dir
        self.storage: EventStorage = None
        self.last_batch = None
        self.last_loss_dict = {}
        self.skip_step = False
        self.stop_reason = None
        self._hooks = []
        self._data_iter = None
        self._pending_rng = None
        self._pending_loader_state = None

    # ---- hooks ----------------------------------------------------------------------------------------------
    @property
    def hooks(self) -> list:
        """The registered hooks, in call order (a copy)."""
        return list(self._hooks)

    def register_hooks(self, hooks) -> None:
        """Append `hooks` (None entries are skipped) and give each `hook.trainer = self`."""
        for h in hooks:
            if h is None:
                continue
            if not isinstance(h, HookBase):
                raise TypeError(f"hook {h!r} does not derive from lazydet.engine.HookBase")
            h.trainer = self
            self._hooks.append(h)

    def _call(self, stage: str) -> None:
        for h in self._hooks:
            getattr(h, stage)()

    def eval_model(self) -> torch.nn.Module:
        """The weights to evaluate: the EMA copy when EMA is on, else the (unwrapped) model."""
        return self.ema.module if self.ema is not None else self.unwrapped_model

    # ---- loop -----------------------------------------------------------------------------------------------
    def train(self, start_iter: int = None, max_iter: int = None) -> None:
        """Run iterations `start_iter .. max_iter - 1` with the hooks around each; a hook's StopTraining ends
        the run cleanly (`stop_reason`), and `after_train` runs however training ends."""
        start_iter = self.start_iter if start_iter is None else int(start_iter)
        if max_iter is not None:
            self.max_iter = int(max_iter)
        self.iter = self.start_iter = start_iter
        if start_iter >= self.max_iter:  # a resumed run that had already finished: no hook, no final eval
            logger.info(f"Training already finished: resumed at iteration {start_iter} of train.max_iter="
                        f"{self.max_iter}; nothing to do (raise train.max_iter to train longer)")
            self.iter = self.max_iter
            return
        logger.info(f"Starting training from iteration {start_iter} to {self.max_iter}"
                    + (f" ({self.iters_per_epoch} iterations per epoch)" if self.iters_per_epoch else ""))
        with EventStorage(start_iter, self.iters_per_epoch) as self.storage:
            try:
                self._call("before_train")
                self._start_data()
                for self.iter in range(start_iter, self.max_iter):
                    self.storage.iter = self.iter
                    self._call("before_step")
                    self.run_step()
                    self._call("after_step")
                self.iter = self.max_iter
            except StopTraining as e:
                self.stop_reason = e.reason
                logger.info(f"Training stopped at iteration {self.iter}: {e.reason}")
            finally:
                try:
                    self._call("after_train")
                except StopTraining:
                    pass
                finally:
                    self._close_data()

    def _close_data(self) -> None:
        """Stops the loader's workers now; left to the garbage collector (the trainer and its hooks form a
        reference cycle) each persistent worker waits out a join timeout."""
        self._data_iter = None
        close = getattr(self.data_loader, "close", None)
        if callable(close):
            close()

    def _start_data(self) -> None:
        if self._pending_loader_state is not None:
            self.data_loader.load_state_dict(self._pending_loader_state)
            self._pending_loader_state = None
        self._data_iter = iter(self.data_loader)
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng)
            self._pending_rng = None

    def _autocast(self):
        if not self.amp_enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _forward_backward(self, micro: int) -> tuple:
        t0 = time.perf_counter()
        batch = next(self._data_iter)
        data_time = time.perf_counter() - t0
        batch = to_device(batch, self.device)
        self.last_batch = batch
        last_micro = micro == self.grad_accumulation_steps - 1
        no_sync = (not last_micro) and isinstance(self.model, torch.nn.parallel.DistributedDataParallel)
        with self.model.no_sync() if no_sync else contextlib.nullcontext():
            with self._autocast():
                loss_dict = self.model(batch)
            if not isinstance(loss_dict, dict) or not loss_dict or not all(
                    isinstance(v, torch.Tensor) and v.numel() == 1 for v in loss_dict.values()):
                raise TypeError(f"model(batch) in train mode must return a non-empty dict of scalar loss tensors, "
                                f"got {type(loss_dict).__name__}: {str(loss_dict)[:200]}")
            loss = sum(v.float().sum() for v in loss_dict.values()) / self.grad_accumulation_steps
            if self.grad_scaler is not None:
                self.grad_scaler.scale(loss).backward()
            else:
                loss.backward()
        return {k: v.detach().float().reshape(()) for k, v in loss_dict.items()}, data_time

    def run_step(self) -> None:
        """One optimizer step (K micro-batches with gradient accumulation)."""
        self.skip_step = False
        self.optimizer.zero_grad(set_to_none=True)
        losses, data_time = {}, 0.0
        for micro in range(self.grad_accumulation_steps):
            loss_dict, dt = self._forward_backward(micro)
            data_time += dt
            for k, v in loss_dict.items():
                losses[k] = losses.get(k, 0.0) + v / self.grad_accumulation_steps
        self.last_loss_dict = losses
        if self.grad_scaler is not None:
            self.grad_scaler.unscale_(self.optimizer)
        self._call("after_backward")
        total = sum(losses.values())
        if not self.skip_step and self.grad_scaler is None and not torch.isfinite(total):
            raise FloatingPointError(f"loss became non-finite at iteration {self.iter}: "
                                     + ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items()))
        if self.skip_step:
            self.optimizer.zero_grad(set_to_none=True)
            if self.grad_scaler is not None:
                self.grad_scaler.update()
        else:
            self._clip_and_step()
        self._put_metrics(losses, data_time)

    def _clip_and_step(self) -> None:
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        max_norm = self.clip_grad_max_norm if self.clip_grad_max_norm is not None else math.inf
        if params:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type=self.clip_grad_norm_type)
            self.storage.put_scalar("grad_norm", grad_norm)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.unwrapped_model)

    def _put_metrics(self, losses: dict, data_time: float) -> None:
        """Losses averaged over ranks (per name, over the ranks that have it, so differing dicts cannot hang)."""
        local = dict(zip(losses, torch.stack(list(losses.values())).tolist()))  # one device->host copy
        gathered = comm.all_gather(local) if comm.get_world_size() > 1 else [local]
        names = sorted({k for d in gathered for k in d})
        values = {k: sum(d[k] for d in gathered if k in d) / sum(k in d for d in gathered) for k in names}
        self.storage.put_scalar("total_loss", sum(values.values()))
        self.storage.put_scalars(**values)
        self.storage.put_scalar("data_time", data_time)

    # ---- state for exact resume -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Iteration, per-rank RNG states, per-rank data loader positions and hook states (collective)."""
        state = {"iteration": self.iter, "rng": comm.all_gather(get_rng_state())}
        if hasattr(self.data_loader, "state_dict"):
            state["data_loader"] = comm.all_gather(self.data_loader.state_dict())
        hooks = {}
        for key, h in self._hook_keys():
            s = h.state_dict()
            if s:
                hooks[key] = s
        state["hooks"] = hooks
        return state

    def _hook_keys(self):
        """Stable names for hook states: class name, plus a counter when a class appears twice."""
        seen = {}
        for h in self._hooks:
            name = type(h).__name__
            seen[name] = seen.get(name, 0) + 1
            yield (name if seen[name] == 1 else f"{name}#{seen[name]}"), h

    def load_state_dict(self, state: dict) -> None:
        """Restores lazily: RNG and loader position are applied when training starts."""
        self.iter = int(state["iteration"])
        self.start_iter = self.iter + 1
        rank, world = comm.get_rank(), comm.get_world_size()
        rngs = state.get("rng") or []
        if rngs:
            if len(rngs) != world:
                logger.warning(f"checkpoint has RNG states of {len(rngs)} ranks, running {world}: "
                               "random streams will differ from the original run")
            self._pending_rng = rngs[rank % len(rngs)]
        loaders = state.get("data_loader")
        if loaders and hasattr(self.data_loader, "load_state_dict"):
            self._pending_loader_state = loaders[rank % len(loaders)]
        hook_states = state.get("hooks", {})
        for key, h in self._hook_keys():
            if key in hook_states:
                h.load_state_dict(hook_states[key])
