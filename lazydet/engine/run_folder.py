"""The run folder (`train.output_dir`): what a run may do to it, so that nothing a user wrote is ever lost.

`open_run_folder(cfg, args)` is called by every rank before logging starts and before anything is written.
The main process checks the folder and, for a training run:

- refuses a folder that is a file or cannot be created/written;
- takes an exclusive `fcntl.flock` on `<output_dir>/.lazydet.lock` (holding pid, host and start time) for
  the run's lifetime; the OS drops it when the process dies, so a crash never leaves a stale lock, and a
  second run into the same folder stops with one line naming the holder;
- refuses a run without `--resume` into a folder that already holds a run (checkpoints, `last_checkpoint`
  or a non-empty `metrics.json`), offering `--resume` or a new `train.output_dir`;
- with `--resume`, picks the checkpoint to continue from (`choose_resume_checkpoint`: the one
  `last_checkpoint` names, or the newest that loads; none loads = one-line error);
- removes the temp files that a process killed mid-write left (`.<name>.<random>.tmp`, our pattern only);
- checks a local `train.init_checkpoint` (missing, empty, truncated, text) when no checkpoint is resumed;
- for `--eval-only`, requires weights (`train.init_checkpoint` or `--resume` with a checkpoint); an
  evaluation neither locks the folder nor writes the config.

Errors are raised on every rank (rank 0's verdict is broadcast), so other ranks never wait for a rank that
gave up. `check_before_launch(cfg, args)` runs the same checks (without locking) in a launching process
that is about to spawn worker processes, so the error is one line from the command line. The returned
`RunFolder` is a hook: it writes `config.yaml`/`config.py` at `before_train` (once the run really starts)
and draws `plots/` at `after_train` (also when the run is stopped or fails), then releases the lock.
"""
import copy
import datetime
import fcntl
import logging
import os
import socket
from typing import Callable, Optional

from ..checkpoint import (CheckpointError, atomic_write_text, checkpoint_problem, choose_resume_checkpoint,
                          leftover_temp_files)
from ..checkpoint.files import LAST_CHECKPOINT, resumable_files
from ..utils import comm
from ..utils.logger import setup_logger
from .trainer import HookBase

logger = logging.getLogger("lazydet")

LOCK_FILE = ".lazydet.lock"
METRICS_FILE = "metrics.json"


class RunFolderError(ValueError):
    """The run folder cannot take this run; the message is one line saying what to change."""


def _folder_error(output_dir: str):
    """Why `output_dir` cannot be a run folder (a file, cannot be created, not writable), or None.
    Creates the folder (and its parents) when it does not exist."""
    where = f"train.output_dir={output_dir!r}"
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        return f"{where} is a file, not a folder: set train.output_dir to a folder"
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
        return f"{where} cannot be created ({e.strerror or e}): set train.output_dir to a writable folder"
    if not os.access(output_dir, os.W_OK | os.X_OK):
        return f"{where} is not writable: set train.output_dir to a writable folder"
    return None


def _holder(lock_path: str) -> str:
    try:
        with open(lock_path) as f:
            return f.read().strip() or "unknown process"
    except OSError:
        return "unknown process"


def _try_lock(lock_path: str, output_dir: str):
    """An open file holding the exclusive lock on `lock_path` (created if needed), or RunFolderError naming
    the process that holds it."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunFolderError(f"train.output_dir={output_dir!r} is in use by another run ({_holder(lock_path)}): "
                             "wait for it to end or set another train.output_dir") from None
    return os.fdopen(fd, "r+")


def _sign(lock) -> None:
    """Write who holds the lock into the lock file (read by a run that is refused)."""
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()} on host {socket.gethostname()}, started "
               f"{datetime.datetime.now().astimezone().isoformat(timespec='seconds')}\n")
    lock.flush()


def previous_run_files(output_dir: str) -> list:
    """The files that show `output_dir` already holds a run: checkpoints, last_checkpoint, metrics.json."""
    found = [os.path.basename(p) for p in resumable_files(output_dir)]
    if os.path.isfile(os.path.join(output_dir, LAST_CHECKPOINT)):
        found.append(LAST_CHECKPOINT)
    metrics = os.path.join(output_dir, METRICS_FILE)
    if os.path.isfile(metrics) and os.path.getsize(metrics) > 0:
        found.append(METRICS_FILE)
    return found


def _check(cfg, args, take_lock: bool):
    """The checks of the module docstring on this process; the lock is taken last (a refused run into a
    folder without a lock file leaves none). Returns the open lock file (take_lock, training) or None."""
    output_dir = cfg.train.output_dir
    resume, eval_only = bool(getattr(args, "resume", False)), bool(getattr(args, "eval_only", False))
    init = cfg.train.init_checkpoint
    problem = _folder_error(output_dir)
    if problem:
        raise RunFolderError(problem)
    lock_path = os.path.join(output_dir, LOCK_FILE)
    lock = _try_lock(lock_path, output_dir) if not eval_only and os.path.exists(lock_path) else None
    try:
        used = previous_run_files(output_dir)
        if used and not resume and not eval_only:
            raise RunFolderError(f"train.output_dir={output_dir!r} already holds a run ({', '.join(used[:4])}): "
                                 "pass --resume to continue it, or set a new train.output_dir")
        choice = choose_resume_checkpoint(output_dir) if resume else None
        resumed = choice is not None and choice.path is not None
        if init and not resumed and "://" not in init:
            problem = checkpoint_problem(init)
            if problem:
                raise CheckpointError(f"train.init_checkpoint={init!r} {problem}")
        if eval_only and not init and not resumed:
            raise RunFolderError("--eval-only needs weights: set train.init_checkpoint=<file.pth>"
                                 + (f" (--resume found no checkpoint in {output_dir!r})" if resume else
                                    f", or pass --resume to evaluate the last checkpoint in {output_dir!r}"))
        if take_lock and not eval_only:
            lock = lock or _try_lock(lock_path, output_dir)
            _sign(lock)
    except BaseException:
        if lock is not None:
            lock.close()
        raise
    if not take_lock and lock is not None:
        lock.close()
        lock = None
    return lock


class _EarlyRecords(logging.Handler):
    """Keeps what the run logs before its folder is open (the dataset check), for log.txt."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def keep_early_log() -> None:
    """Log to the console from now on, and keep the `lazydet` records logged until `open_run_folder` (e.g.
    by `check_datasets`): they are written into log.txt once the folder is accepted (nothing before)."""
    setup_logger(None, rank=comm.get_rank())
    logger.addHandler(_EarlyRecords())


def _write_early_log(early_handlers) -> None:
    """The kept records, into the file handlers (log.txt) that setup_logger has just added."""
    records = [r for h in early_handlers if isinstance(h, _EarlyRecords) for r in h.records]
    for handler in (h for h in logger.handlers if isinstance(h, logging.FileHandler)):
        for record in records:
            if record.levelno >= handler.level:
                handler.handle(record)


def check_before_launch(cfg, args) -> None:
    """The run-folder checks in the launching process, when it is about to spawn worker processes (their
    errors would otherwise come back as a child's traceback). Writes nothing but the (empty) folder."""
    from .launch import env_launched

    world = int(getattr(args, "num_gpus", 1) or 1) * int(getattr(args, "num_machines", 1) or 1)
    if env_launched() or world <= 1:
        return  # main runs in this process (or torchrun/srun started the ranks): open_run_folder checks
    if int(getattr(args, "machine_rank", 0) or 0) == 0:
        _check(cfg, args, take_lock=False)


def open_run_folder(cfg, args, plot: Optional[Callable[[str], Optional[str]]] = None) -> "RunFolder":
    """Collective: rank 0 checks the folder, takes its lock (training), removes temp leftovers; every rank
    gets rank 0's verdict and raises the same error. Call before `default_setup`: nothing is written before
    the verdict; then logging to log.txt starts and the temp files removed are logged. `plot(output_dir)`
    draws the run's curves when it ends and returns the image's path (train_net passes
    `lazydet.analysis.plot_run_folder`; the engine does not depend on the analysis package)."""
    output_dir = cfg.train.output_dir
    lock, error = None, None
    if comm.is_main_process():
        try:
            lock = _check(cfg, args, take_lock=True)
        except Exception as e:  # noqa: BLE001 - every rank must hear the verdict, whatever it is
            error = e
    error = comm.broadcast_object(error)
    if error is not None:
        raise error
    early = list(logger.handlers)
    setup_logger(output_dir, rank=comm.get_rank())  # the folder is accepted: log.txt holds the rest of the run
    _write_early_log(early)
    if lock is not None:
        for path in leftover_temp_files(output_dir):
            size = os.path.getsize(path)
            os.remove(path)
            logger.warning(f"removed {path} ({size} bytes), left by a process killed while writing it")
    return RunFolder(copy.deepcopy(cfg) if lock is not None else None, output_dir, lock, plot)


class RunFolder(HookBase):
    """Holds the folder's lock (rank 0 of a training run); as a hook, writes the config when training
    starts and the plots (`plot(output_dir)`, when given) when it ends, then releases the lock. `cfg` is the
    config as loaded (a copy taken before building puts the model object into `optimizer.params.model`)."""

    def __init__(self, cfg, output_dir: str, lock=None, plot: Optional[Callable[[str], Optional[str]]] = None):
        self.cfg = cfg
        self.output_dir = output_dir
        self._lock = lock
        self._plot = plot

    @property
    def locked(self) -> bool:
        """Whether this process holds the folder's lock (rank 0 of a training run, until released)."""
        return self._lock is not None

    def release(self) -> None:
        """Drop the lock (the OS does it too when the process ends)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def before_train(self):
        """Write config.yaml / config.py: the run really starts now."""
        if self.locked:
            write_config(self.cfg, self.output_dir)

    def after_train(self):
        """Draw plots/ (when a `plot` function was given), also after a stop or a failure, then release the lock."""
        try:
            if self.locked and self._plot is not None:
                path = self._plot(self.output_dir)
                if path:
                    logger.info(f"Training curves drawn in {path}")
        except Exception as e:  # noqa: BLE001 - plots must never hide how the run ended
            logger.warning(f"could not draw {self.output_dir}/plots ({type(e).__name__}: {e})")
        finally:
            self.release()


def write_config(cfg, output_dir: str) -> None:
    """config.yaml (loads back with LazyConfig.load) and config.py (re-runnable) of the run."""
    from ..config import LazyConfig

    unsavable = LazyConfig.unsavable_keys(cfg)
    if unsavable:
        logger.warning("config values that cannot be saved (written as placeholders): " + "; ".join(unsavable))
    LazyConfig.save(cfg, os.path.join(output_dir, "config.yaml"), strict=False)
    try:
        atomic_write_text(os.path.join(output_dir, "config.py"), LazyConfig.to_py(cfg))
    except Exception as e:  # noqa: BLE001 - the yaml dump is the reference copy
        logger.warning(f"could not write config.py ({e}); config.yaml is complete")
    logger.info(f"Full config saved to {os.path.join(output_dir, 'config.yaml')}")
