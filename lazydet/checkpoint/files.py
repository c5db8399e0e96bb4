"""Which checkpoint files can be read, and which one `--resume` continues from.

`last_checkpoint` normally names the newest complete checkpoint (files are written atomically). When it is
empty, names a missing file, or the file it names is empty or truncated (copied folders, a full disk, a
hand edit), `choose_resume_checkpoint` falls back to the newest periodic or final checkpoint of the folder
that loads, and says which and why; when checkpoints exist but none loads it raises `CheckpointError`, so a
resumed run never restarts from iteration 0 over them.
"""
import logging
import os
import re
import zipfile
from dataclasses import dataclass, field

import torch

logger = logging.getLogger("lazydet")

LAST_CHECKPOINT = "last_checkpoint"
# the files `last_checkpoint` may name: periodic `model_<iter>.pth` and `model_final.pth` (not model_best)
RESUMABLE_NAME = re.compile(r"model_(\d{7}|final)\.pth")
_LEGACY_TORCH_MAGIC = b"\x80\x02"  # torch.save(_use_new_zipfile_serialization=False) starts with a pickle


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or written; the message is one line naming the file."""


def checkpoint_problem(path: str):
    """Why `path` cannot be a torch checkpoint (missing, a folder, empty, truncated zip, not a torch file),
    or None when its structure is sound. Cheap: reads the file's first bytes and the zip directory only."""
    if not os.path.exists(path):
        return "does not exist"
    if not os.path.isfile(path):
        return "is not a file"
    size = os.path.getsize(path)
    if size == 0:
        return "is empty (0 bytes)"
    if zipfile.is_zipfile(path):
        return None
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(_LEGACY_TORCH_MAGIC):
        return None
    if head.startswith(b"PK"):
        return f"is truncated ({size} bytes, the end of its zip archive is missing)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"is not a torch checkpoint ({size} bytes of unknown format)"
    return f"is not a torch checkpoint (a text file starting {text.splitlines()[0][:30]!r})" if text.strip() \
        else "is not a torch checkpoint (whitespace only)"


def load_file(path: str, what: str, weights_only: bool = True, mmap: bool = False):
    """torch.load of a local file onto the CPU. A file that is missing, empty, truncated or not a checkpoint
    is a one-line CheckpointError "<what> <why>" (`what`: the file, or e.g. "train.init_checkpoint='w.pth'").
    Pickled code refused by `weights_only` keeps torch's own UnpicklingError, which explains the choice.
    `mmap`: map the tensors instead of reading them (zip files only)."""
    problem = checkpoint_problem(path)
    if problem:
        raise CheckpointError(f"{what} {problem}")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap and zipfile.is_zipfile(path))
    except (RuntimeError, EOFError, OSError, KeyError, IndexError, ValueError) as e:
        raise CheckpointError(f"{what} cannot be loaded ({type(e).__name__}: {str(e).splitlines()[0][:120]})") \
            from None


def saved_iteration(path: str) -> int:
    """The iteration stored in one of our training checkpoints (memory-mapped: tensors are not read).
    Raises CheckpointError when it cannot be read or is not a training checkpoint."""
    data = load_file(path, path, mmap=True)
    trainer = data.get("trainer") if isinstance(data, dict) else None
    iteration = data.get("iteration", (trainer or {}).get("iteration")) if isinstance(data, dict) else None
    if "model" not in (data if isinstance(data, dict) else {}) or iteration is None:
        raise CheckpointError(f"{path} is not a lazydet training checkpoint (no 'model' and 'iteration')")
    return int(iteration)


@dataclass
class ResumeChoice:
    """`path`: the checkpoint to resume from (None: nothing to resume). `problems`: "<file> <why>" for each
    file that was passed over. `reason`: one sentence for the log."""
    path: str = None
    problems: list = field(default_factory=list)
    reason: str = ""

    @property
    def fell_back(self) -> bool:
        """Whether the chosen checkpoint is not the first choice (files were passed over as unloadable)."""
        return self.path is not None and bool(self.problems)


def _named_by_marker(folder: str):
    """(file name in `last_checkpoint`, or None when there is no marker; problem with the marker or None)."""
    marker = os.path.join(folder, LAST_CHECKPOINT)
    if not os.path.isfile(marker):
        return None, None
    with open(marker, errors="replace") as f:
        name = f.read().strip()
    if not name:
        return "", f"{marker} is empty"
    return name, None


def resumable_files(folder: str) -> list:
    """The periodic and final checkpoint files in `folder` (sorted by name)."""
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if RESUMABLE_NAME.fullmatch(f))


def choose_resume_checkpoint(folder: str) -> ResumeChoice:
    """The file `last_checkpoint` names when it is sound; else the loadable periodic/final checkpoint with
    the highest saved iteration (model_final.pth wins a tie). Raises CheckpointError when the folder has a
    `last_checkpoint` or checkpoint files but none of them loads."""
    name, marker_problem = _named_by_marker(folder)
    if name is None and not resumable_files(folder):
        return ResumeChoice(reason=f"no checkpoint in {folder!r}")
    problems = [marker_problem] if marker_problem else []
    if name:
        named = os.path.join(folder, name)
        problem = checkpoint_problem(named)
        if problem is None:
            return ResumeChoice(named, reason=f"{LAST_CHECKPOINT} names {named}")
        problems.append(f"{named} (named by {LAST_CHECKPOINT}) {problem}")
    best = None
    for path in resumable_files(folder):
        if name and os.path.basename(path) == name:
            continue
        try:
            key = (saved_iteration(path), path.endswith("model_final.pth"))
        except CheckpointError as e:
            problems.append(str(e))
            continue
        if best is None or key > best[0]:
            best = (key, path)
    if best is None:
        raise CheckpointError(f"--resume: no checkpoint in {folder} can be loaded ({'; '.join(problems)}); "
                              "restore a good checkpoint there, or set a new train.output_dir to start afresh")
    path = best[1]
    return ResumeChoice(path, problems, reason=f"resuming from {path} (iteration {best[0][0]}), the newest "
                                               f"checkpoint that loads, because {'; '.join(problems)}")
