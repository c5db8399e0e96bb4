"""Writers that read the EventStorage: console, metrics.json (JSON lines), TensorBoard, wandb.

Each writer's `write()` is called by the PeriodicWriter hook every `train.log_period` iterations and at the
end; each writes only what is new since its last call. The file writers open their files at the first
`write()`, when the storage knows where the run started (`storage.start_iter`): a resumed run first drops
what the interrupted one logged from that iteration on (it is about to be redone), so that the folder holds
each iteration once.
"""
import datetime
import json
import logging
import netrc
import os
import re
import sys
import uuid

from .events import get_event_storage
from .logger import warn_once

logger = logging.getLogger("lazydet")


class EventWriter:
    """Writes what the hooks put into the current EventStorage somewhere (console, file, dashboard).
    `PeriodicWriter` calls `write()` every `log_period` iterations and at the end, then `close()`."""

    def write(self):
        """Write the metrics put since the last call."""
        raise NotImplementedError

    def close(self):
        """Flush and release files or connections (nothing by default)."""


def _new_scalars(storage, window: int, last_written: dict) -> dict:
    """iteration -> {name: value} for every metric put since this writer last wrote it (smoothed where
    hinted). Tracked per metric, so values put at an already-written iteration (the final evaluation) still
    go out."""
    by_iter = {}
    for k, (v, it) in storage.latest_with_smoothing_hint(window).items():
        if it > last_written.get(k, -1):
            by_iter.setdefault(it, {})[k] = v
            last_written[k] = it
    return by_iter


def is_main_loss(name: str) -> bool:
    """`total_loss` and the loss terms without a decoder-layer suffix (`loss_bbox`, not `loss_bbox_3`)."""
    return name == "total_loss" or (name.startswith("loss") and not re.search(r"_\d+$", name))


def stdout_is_tty() -> bool:
    """Whether stdout is a terminal (the progress bar redraws in place only then)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


class ConsoleWriter(EventWriter):
    """One log line: ETA, iteration/max_iter, epoch, losses (without per-layer auxiliary terms), grad_norm,
    time, data_time, lr, max memory."""

    def __init__(self, max_iter: int, window_size: int = 20):
        self.max_iter = max_iter
        self.window = window_size
        self._last = -1

    def write(self):
        """Log one line for the current iteration (once per iteration)."""
        storage = get_event_storage()
        it = storage.iter
        if it == self._last:
            return
        self._last = it
        hist = storage.histories()

        def med(name, fmt):
            return fmt.format(hist[name].median(self.window)) if name in hist else None

        parts = []
        if "eta_seconds" in hist:
            parts.append(f"eta: {datetime.timedelta(seconds=int(hist['eta_seconds'].latest()))}")
        parts.append(f"iter: {it + 1}/{self.max_iter}")
        if storage.epoch is not None:
            parts.append(f"epoch: {storage.epoch:.2f}")
        # auxiliary decoder-layer terms (`loss_x_0`, `loss_x_dn_3`) stay in metrics.json / TensorBoard only
        losses = [k for k in hist if is_main_loss(k)]
        losses.sort(key=lambda k: (k != "total_loss", k))
        parts += [f"{k}: {hist[k].median(self.window):.4g}" for k in losses]
        for name, fmt in (("grad_norm", "{:.3g}"), ("time", "{:.4f}"), ("data_time", "{:.4f}")):
            s = med(name, fmt)
            if s is not None:
                parts.append(f"{name}: {s}")
        if "lr" in hist:
            parts.append(f"lr: {hist['lr'].latest():.3g}")
        if "max_mem_mb" in hist:
            parts.append(f"max_mem: {hist['max_mem_mb'].latest():.0f}M")
        logger.info("  ".join(parts))


def drop_rows_from(path: str, start_iter: int) -> int:
    """Remove the JSON-lines rows of `path` whose `iteration` is >= `start_iter` (atomically; other lines,
    even unparsable ones, are kept, each ending with a newline). Returns the number of rows dropped."""
    if not os.path.isfile(path):
        return 0
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        lines = f.read().splitlines()
    kept = []
    for line in lines:
        try:
            iteration = json.loads(line).get("iteration")
        except (ValueError, AttributeError):
            iteration = None
        if not (isinstance(iteration, int) and iteration >= start_iter):
            kept.append(line)
    dropped = len(lines) - len(kept)
    if dropped:
        from ..checkpoint.atomic import atomic_open  # lazy: lazydet.checkpoint imports lazydet.utils

        with atomic_open(path, "w") as f:
            f.write("".join(line + "\n" for line in kept))
        logger.info(f"{path}: dropped {dropped} rows from iteration {start_iter} on (the resumed run redoes them)")
    return dropped


class JSONWriter(EventWriter):
    """metrics.json: one JSON object per logged iteration with `iteration` and (when known) `epoch`."""

    def __init__(self, path: str, window_size: int = 20):
        self.path = path
        self.window = window_size
        self._file = None
        self._written = {}

    def _open(self, start_iter: int):
        drop_rows_from(self.path, start_iter)
        self._file = open(self.path, "a")

    def write(self):
        """Append one JSON row per iteration with new metrics (after dropping rows from the resumed iteration on,
        at the first write), flushed and fsynced."""
        storage = get_event_storage()
        if self._file is None:
            self._open(storage.start_iter)
        by_iter = _new_scalars(storage, self.window, self._written)
        for it in sorted(by_iter):
            row = {"iteration": it}
            if storage.iters_per_epoch:
                row["epoch"] = round((it + 1) / storage.iters_per_epoch, 4)
            row.update(by_iter[it])
            self._file.write(json.dumps(row, sort_keys=False) + "\n")
        self._file.flush()
        try:
            os.fsync(self._file.fileno())
        except OSError:
            pass

    def close(self):
        """Close metrics.json."""
        if self._file is not None:
            self._file.close()


class TensorboardWriter(EventWriter):
    """TensorBoard event files in the output folder (torch.utils.tensorboard). A resumed run opens its
    file with `purge_step=start_iter`: TensorBoard then hides the older files' events from that step on."""

    def __init__(self, log_dir: str, window_size: int = 20):
        self.log_dir = log_dir
        self.window = window_size
        self._writer = None
        self._written = {}

    def write(self):
        """Add the new scalars to the event file (opened at the first write, with `purge_step` on resume)."""
        storage = get_event_storage()
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(self.log_dir, purge_step=storage.start_iter or None)
        by_iter = _new_scalars(storage, self.window, self._written)
        for it in sorted(by_iter):
            for k, v in by_iter[it].items():
                self._writer.add_scalar(k, v, it)
        self._writer.flush()

    def close(self):
        """Close the event file."""
        if self._writer is not None:
            self._writer.close()


def _wandb_has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class WandbWriter(EventWriter):
    """Weights & Biases run; never prompts and never stops training.

    With no API key and no WANDB_MODE the run is logged offline (sync later with `wandb sync <dir>`).
    Any wandb failure (not installed, init or log error) is warned about once and the writer goes quiet.
    """

    def __init__(self, project="lazydet", name=None, entity=None, config=None, output_dir=None, window_size=20,
                 resume: bool = False):
        self.window = window_size
        self._written = {}
        self._run = None
        try:
            import wandb
        except Exception as e:  # noqa: BLE001 - optional dependency
            warn_once(logger, "wandb-import", f"wandb is not usable ({e}); train.wandb is ignored.")
            return
        if not os.environ.get("WANDB_MODE") and not _wandb_has_api_key():
            os.environ["WANDB_MODE"] = "offline"
            logger.info("wandb: no API key found (WANDB_API_KEY / ~/.netrc) and WANDB_MODE unset: logging offline; "
                        "upload later with `wandb sync`.")
        wandb_dir = os.environ.get("WANDB_DIR") or output_dir
        if wandb_dir:
            os.makedirs(wandb_dir, exist_ok=True)
        try:
            kwargs = dict(project=project, name=name, entity=entity, config=config, dir=wandb_dir,
                          settings=wandb.Settings(silent=True), **self._run_id(output_dir, resume))
            try:
                self._run = wandb.init(reinit="finish_previous", **kwargs)
            except (TypeError, ValueError):  # wandb < 0.19 only knows a boolean reinit
                self._run = wandb.init(reinit=True, **kwargs)
            logger.info(f"wandb: run {self._run.name} in {self._run.dir} (mode {os.environ.get('WANDB_MODE', 'online')})")
        except Exception as e:  # noqa: BLE001 - wandb must never stop training
            warn_once(logger, "wandb-init", f"wandb.init failed ({type(e).__name__}: {e}); continuing without wandb.")
            self._run = None

    @staticmethod
    def _run_id(output_dir, resume: bool) -> dict:
        """A resumed training (--resume) continues the wandb run of its output folder (id kept in
        `<output_dir>/wandb_run_id`); a fresh training starts a new run."""
        if not output_dir:
            return {}
        path = os.path.join(output_dir, "wandb_run_id")
        if resume and os.path.isfile(path):
            with open(path) as f:
                return {"id": f.read().strip(), "resume": "allow"}
        run_id = uuid.uuid4().hex[:8]
        os.makedirs(output_dir, exist_ok=True)
        with open(path, "w") as f:
            f.write(run_id)
        return {"id": run_id}

    def write(self):
        """Log the new metrics to the wandb run (stops logging, with one warning, if wandb fails)."""
        if self._run is None:
            return
        by_iter = _new_scalars(get_event_storage(), self.window, self._written)
        try:
            for it in sorted(by_iter):
                self._run.log(by_iter[it], step=it)
        except Exception as e:  # noqa: BLE001
            warn_once(logger, "wandb-log", f"wandb.log failed ({type(e).__name__}: {e}); wandb logging stops here.")
            self._run = None
            return

    def close(self):
        """Finish the wandb run."""
        if self._run is not None:
            try:
                self._run.finish()
            except Exception as e:  # noqa: BLE001
                warn_once(logger, "wandb-finish", f"wandb.finish failed: {e}")
            self._run = None
