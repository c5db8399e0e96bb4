"""Logging set-up: console on every rank (rank > 0 only warnings), log.txt in the output folder on rank 0."""
import logging
import os
import sys

_FMT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"
_DATEFMT = "%m/%d %H:%M:%S"


class _ConsoleHandler(logging.StreamHandler):
    """On a terminal, clears the progress-bar line before each record so log lines start clean."""

    def emit(self, record):
        try:
            if self.stream.isatty():
                self.stream.write("\r\033[K")
        except (AttributeError, ValueError):
            pass
        super().emit(record)


def setup_logger(output_dir=None, rank: int = 0, name: str = "lazydet", level=logging.INFO) -> logging.Logger:
    """Configure the `lazydet` logger once per process; repeated calls replace the old handlers."""
    logger = logging.getLogger(name)
    logger.setLevel(level)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    console = _ConsoleHandler(sys.stdout)
    console.setLevel(level if rank == 0 else logging.WARNING)
    console.setFormatter(logging.Formatter(_FMT, datefmt=_DATEFMT))
    logger.addHandler(console)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        fname = "log.txt" if rank == 0 else f"log.txt.rank{rank}"
        fh = logging.FileHandler(os.path.join(output_dir, fname), mode="a")
        fh.setLevel(level)
        fh.setFormatter(logging.Formatter(_FMT, datefmt=_DATEFMT))
        logger.addHandler(fh)
    return logger


_WARNED = set()


def warn_once(logger: logging.Logger, key: str, msg: str) -> None:
    """Log `msg` as a warning the first time `key` is seen in this process."""
    if key not in _WARNED:
        _WARNED.add(key)
        logger.warning(msg)
