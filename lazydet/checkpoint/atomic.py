"""Crash-safe writes: a temp file in the same folder, fsync, then os.replace (atomic on POSIX).

A process killed mid-write (SIGKILL, power loss) leaves its temp file `.<name>.<8 random chars>.tmp` behind;
`leftover_temp_files(folder)` finds exactly those (the next run in the folder removes them).
"""
import contextlib
import os
import re
import tempfile

import torch


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _temp_prefix(path: str) -> str:
    return f".{os.path.basename(path)}."


TEMP_SUFFIX = ".tmp"
# mkstemp's random part: 8 characters of [a-z0-9_]
_TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX))


def leftover_temp_files(folder: str) -> list:
    """Paths of the temp files that `atomic_open` left in `folder` when its process died mid-write (sorted)."""
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if _TEMP_NAME.fullmatch(f) and os.path.isfile(os.path.join(folder, f)))


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb"):
    """Yield a file object; `path` appears (complete) only if the block finishes without error."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=_temp_prefix(path), suffix=TEMP_SUFFIX)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # the permissions of a plain open(path, "w"), not mkstemp's 0600
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj, path: str) -> None:
    """`torch.save(obj)` to `path` through `atomic_open`: a reader (or a crash) sees the old file or the whole
    new one, never a partial write."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def atomic_write_text(path: str, text: str) -> None:
    """Write `text` to `path` atomically (same guarantee as `atomic_torch_save`)."""
    with atomic_open(path, "w") as f:
        f.write(text)
