"""Checkpointer: full training state for `--resume`, and weights-only loading for `train.init_checkpoint`.

A checkpoint file is `{"model": ..., "<name>": obj.state_dict() for each checkpointable, **extra}`.
`save()` is collective (every rank calls it: checkpointables such as the trainer gather per-rank RNG
states); only the main process writes. Files are written atomically and `last_checkpoint` is updated
after the file is complete, so it only ever names a loadable file; `--resume` still checks it and falls
back to the newest checkpoint that loads (files.py). A failed write (full disk) is a one-line
`CheckpointError` naming the file, and the previous checkpoint stays in place.
"""
import logging
import os

import torch

from ..utils import comm
from .atomic import atomic_torch_save, atomic_write_text
from .files import LAST_CHECKPOINT, CheckpointError, choose_resume_checkpoint, load_file
from .load_report import LoadReport, load_state_into

logger = logging.getLogger("lazydet")


def fetch_state_dict(source: str, weights_only: bool = True) -> dict:
    """A model state dict from a local file (ours, detectron2-style {"model": ...} or plain), an http(s)
    URL (torch.hub cache), or `timm://<name>` (timm pretrained weights, downloaded by timm)."""
    if source.startswith("timm://"):
        import timm

        name = source[len("timm://"):]
        logger.info(f"init_checkpoint: creating timm model {name!r} with pretrained weights")
        return timm.create_model(name, pretrained=True).state_dict()
    if source.startswith(("http://", "https://")):
        obj = torch.hub.load_state_dict_from_url(source, map_location="cpu", weights_only=weights_only)
    else:
        from iopath.common.file_io import g_pathmgr

        local = g_pathmgr.get_local_path(source)
        if not os.path.isfile(local):
            raise FileNotFoundError(f"train.init_checkpoint={source!r}: no such file")
        obj = load_file(local, f"train.init_checkpoint={source!r}:", weights_only)
    for key in ("model", "state_dict", "model_state", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return obj[key]
    return obj


class Checkpointer:
    """Saves and restores a run: `model` plus named checkpointables (optimizer, scheduler, trainer, grad
    scaler, EMA: anything with state_dict()/load_state_dict()) in `<save_dir>/<name>.pth`, detectron2's keys
    (`model`, one key per checkpointable, extra entries such as `iteration`). Writes are atomic; loading
    reports what matched (`last_load_report`) and turns a bad file into a one-line CheckpointError.
    `weights_only` is passed to torch.load for resume files."""

    def __init__(self, model: torch.nn.Module, save_dir: str = "", *, weights_only: bool = True,
                 **checkpointables):
        self.model = model
        self.save_dir = save_dir
        self.weights_only = weights_only
        self.checkpointables = {}
        self.last_load_report: LoadReport = None
        for k, v in checkpointables.items():
            self.add_checkpointable(k, v)

    def add_checkpointable(self, name: str, obj) -> None:
        """Any object with state_dict()/load_state_dict(); saved under `name` in every checkpoint."""
        if name in ("model",) or not hasattr(obj, "state_dict"):
            raise ValueError(f"checkpointable {name!r} must be a non-'model' name with a state_dict(): {obj!r}")
        self.checkpointables[name] = obj

    # ---- saving -------------------------------------------------------------------------------------------
    def save(self, name: str, update_last: bool = True, **extra) -> str:
        """Write `<save_dir>/<name>.pth` atomically and (by default) point `last_checkpoint` at it afterwards.
        Collective: every rank calls it, the main process writes."""
        data = {"model": self.model.state_dict()}
        for k, obj in self.checkpointables.items():
            data[k] = obj.state_dict()
        data.update(extra)
        path = os.path.join(self.save_dir, f"{name}.pth")
        if comm.is_main_process() and self.save_dir:
            try:
                atomic_torch_save(data, path)
                if update_last:
                    atomic_write_text(os.path.join(self.save_dir, LAST_CHECKPOINT), os.path.basename(path))
            except OSError as e:  # full disk, quota, folder removed: the temp file is gone, the old files stay
                kept = self.get_checkpoint_file()
                raise CheckpointError(f"could not write checkpoint {path} ({e.strerror or e}); "
                                      + (f"the last good checkpoint {kept} is kept" if kept else
                                         "no earlier checkpoint exists") + "; free space and --resume") from None
            logger.info(f"Saved checkpoint {path}")
        return path

    # ---- finding --------------------------------------------------------------------------------------------
    def get_checkpoint_file(self):
        """The checkpoint `--resume` continues from (normally the one `last_checkpoint` names, see
        `choose_resume_checkpoint`), or None when there is none that loads."""
        try:
            return choose_resume_checkpoint(self.save_dir).path if self.save_dir else None
        except CheckpointError:
            return None

    def has_checkpoint(self) -> bool:
        """Whether `--resume` finds a checkpoint in `save_dir` that loads."""
        return self.get_checkpoint_file() is not None

    # ---- loading --------------------------------------------------------------------------------------------
    def resume_or_load(self, path: str, *, resume: bool = True) -> dict:
        """With `resume` and a checkpoint in `save_dir` (`choose_resume_checkpoint`: the one `last_checkpoint`
        names, else the newest that loads; CheckpointError when there are some but none loads): restore
        everything from it (returns the file's extra entries, e.g. `iteration`). Otherwise load model weights
        from `path` if given (returns {})."""
        choice = choose_resume_checkpoint(self.save_dir) if resume else None  # raises when none loads
        if choice is not None and choice.path:
            (logger.warning if choice.fell_back else logger.info)(f"--resume: {choice.reason}")
            return self.load(choice.path)
        if resume:
            logger.info(f"--resume: {choice.reason}; starting from "
                        + (f"train.init_checkpoint={path}" if path else "scratch"))
        if path:
            self.load_model_weights(path)
        return {}

    def load(self, path: str, checkpointables=None) -> dict:
        """Restore model and checkpointables (all, or the names given) from one of our checkpoint files."""
        logger.info(f"Resuming from {path}")
        data = load_file(path, path, self.weights_only)
        report = load_state_into(self.model, data.pop("model"), source=path, auto_prefix=False)
        self._log_report(report)
        names = self.checkpointables if checkpointables is None else checkpointables
        for k in names:
            if k in data:
                self.checkpointables[k].load_state_dict(data.pop(k))
            else:
                logger.warning(f"checkpoint {path} has no state for {k!r}; it keeps its current state")
        return data

    def load_model_weights(self, source: str) -> LoadReport:
        """Load `train.init_checkpoint` (path, URL or timm://name) into the model, keys matched by name (with
        automatic module prefix), shape mismatches skipped; the report is logged and kept in
        `self.last_load_report`."""
        state = fetch_state_dict(source, self.weights_only)
        report = load_state_into(self.model, state, source=source, auto_prefix=True)
        self._log_report(report)
        return report

    def _log_report(self, report: LoadReport) -> None:
        self.last_load_report = report
        text = report.format()
        if report.missing or report.unexpected or report.shape_mismatched:
            logger.warning(text)
        else:
            logger.info(text)
