"""Preemption-safe training: on a warning signal every rank finishes its step, rank 0 checkpoints, the job requeues.

Why a hook and not a signal handler that saves right away: the handler runs between two Python bytecodes
of whatever the process was doing (mid-backward, inside an all-reduce), and only one rank may have been
signalled yet. So the handler only records the signal; at the end of each step the ranks agree (one
all-reduce of a flag, MAX), every rank stops at the same iteration, rank 0 writes an atomic checkpoint and
`last_checkpoint`, and training stops with `StopTraining("preempted")`.

Signals:
- SIGUSR1 (sbatch `--signal=USR1@N`, the warning before the time limit, or `scancel --signal=USR1`) and
  SIGUSR2 (submitit's warning signal): checkpoint, stop, then rank 0 runs `scontrol requeue $SLURM_JOB_ID`
  when it exits (every rank has finished training by then), so SLURM starts the same batch script again
  (SLURM_RESTART_COUNT=1) and `--resume` continues from `last_checkpoint`.
- SIGTERM (preemption by the scheduler, `scancel`, or the time limit without a warning): checkpoint and
  stop, but do not requeue: a preempting scheduler requeues by itself (PreemptMode=REQUEUE) and a user's
  `scancel` means stop.
"""
from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
import threading

import torch
import torch.distributed as dist

from lazydet.utils import comm

from .trainer import HookBase, StopTraining

logger = logging.getLogger(__name__)

NONE, STOP, REQUEUE = 0, 1, 2
SIGNAL_ACTIONS = {signal.SIGUSR1: REQUEUE, signal.SIGUSR2: REQUEUE, signal.SIGTERM: STOP}


class PreemptionHook(HookBase):
    """Checkpoint-stop-requeue on SIGUSR1/SIGUSR2 and checkpoint-stop on SIGTERM (see the module docstring).

    `requeue=None` requeues only inside a SLURM job (SLURM_JOB_ID set). The requeue itself runs when rank
    0's process exits, after every other hook and writer, because it makes SLURM end the job's processes.
    """

    def __init__(self, requeue: bool | None = None, signal_actions: dict | None = None):
        self.signal_actions = dict(SIGNAL_ACTIONS if signal_actions is None else signal_actions)
        self.requeue = _in_slurm_batch_job() if requeue is None else bool(requeue)
        self.received = NONE  # the strongest action asked for by a signal on this rank
        self.received_signal = None
        self.preempted_action = NONE  # what all ranks agreed on, once training was stopped for it
        self._previous = {}
        self.install()

    # -- signals ---------------------------------------------------------------------------------
    def install(self) -> None:
        """Install the handlers now (idempotent). Called at construction so that data-loader workers forked
        later inherit a handler that only sets a flag, instead of dying from a signal SLURM sends to
        every process of the job step."""
        if self._previous:
            return
        if threading.current_thread() is not threading.main_thread():
            logger.warning("PreemptionHook: not in the main thread, cannot install signal handlers")
            return
        for sig in self.signal_actions:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        """Put back the signal handlers that were installed before this hook's."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _on_signal(self, signum, frame) -> None:
        # Only record: anything heavier here would run in the middle of arbitrary code.
        action = self.signal_actions.get(signum, NONE)
        if action > self.received:
            self.received, self.received_signal = action, signum

    # -- hook ----------------------------------------------------------------------------------
    def before_train(self) -> None:
        """Install the signal handlers (main thread only)."""
        self.install()

    def after_step(self) -> None:
        """When any rank got a signal: save a checkpoint (collective) and stop training with StopTraining."""
        action = _agree_max(self.received)
        if action == NONE:
            return
        trainer = self.trainer
        if trainer.iter + 1 >= trainer.max_iter:
            return  # the last step: training ends now anyway and writes model_final
        name = signal.Signals(self.received_signal).name if self.received_signal else "a signal on another rank"
        logger.warning(f"Preemption: got {name}; saving a checkpoint at iteration {trainer.iter} and stopping")
        # Collective: every rank contributes its state (RNG streams), rank 0 writes the file atomically.
        trainer.checkpointer.save(f"model_{trainer.iter:07d}", iteration=trainer.iter)
        comm.synchronize()
        self.preempted_action = action
        raise StopTraining("preempted")

    def after_train(self) -> None:
        """After a preemption stop, schedule the SLURM requeue for process exit (rank 0); else uninstall."""
        if self.preempted_action == NONE:
            self.uninstall()
            return
        # Keep the flag-only handlers: the requeue makes SLURM send SIGTERM, which must not kill a rank
        # that is still closing its files.
        comm.synchronize()
        if self.preempted_action == REQUEUE and self.requeue and comm.is_main_process():
            # The requeue ends this run (SIGTERM, then SIGKILL after the site's KillWait): do it as the very
            # last thing rank 0 does, after every other hook and train_net have finished writing.
            _schedule_requeue()
            logger.warning("Preemption: the job will be requeued when this process exits")

    @property
    def requeue_pending(self) -> bool:
        """Whether a requeue waits for this process to exit."""
        return _requeue_pending

    def requeue_now(self) -> bool:
        """Run the pending requeue at once (tests); False when none was pending."""
        return run_pending_requeue()


_requeue_pending = False
_atexit_registered = False


def _schedule_requeue() -> None:
    global _requeue_pending, _atexit_registered
    _requeue_pending = True
    if not _atexit_registered:
        atexit.register(run_pending_requeue)
        _atexit_registered = True


def run_pending_requeue() -> bool:
    """Run the `scontrol requeue` a preempted training asked for (once); True when one ran and succeeded.
    Called at interpreter exit; wrappers (submit.py) call it earlier to leave without reporting success."""
    global _requeue_pending
    if not _requeue_pending:
        return False
    _requeue_pending = False
    return requeue_slurm_job()


def _agree_max(value: int) -> int:
    """The maximum of `value` over all ranks (every rank must call it at the same point)."""
    if comm.get_world_size() == 1:
        return value
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([value], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item())


def _in_slurm_batch_job() -> bool:
    return "SLURM_JOB_ID" in os.environ


def requeue_slurm_job() -> bool:
    """`scontrol requeue $SLURM_JOB_ID`; True when SLURM accepted it. The job is then killed and started again."""
    job_id = os.environ.get("SLURM_JOB_ID")  # also unique for an array task
    if not job_id:
        logger.warning("Preemption: not in a SLURM job, nothing to requeue; resume with --resume")
        return False
    cmd = ["scontrol", "requeue", job_id]
    logger.warning(f"Preemption: requeueing the job: {' '.join(cmd)}")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        logger.error(f"Preemption: {' '.join(cmd)} failed ({e}); resubmit by hand, --resume continues the run")
        return False
    if out.returncode != 0:
        logger.error(f"Preemption: {' '.join(cmd)} failed: {out.stderr.strip() or out.stdout.strip()}")
        return False
    return True


def build_preemption_hooks(cfg) -> list:
    """The hooks scripts/train_net.py registers for `train.preemption` (configs/common/train.py):
    none when `enabled=False`; `requeue` True/False/None (None: requeue when in a SLURM job)."""
    settings = cfg.train.preemption
    return [PreemptionHook(requeue=settings.requeue)] if settings.enabled else []
