"""EventStorage: the one place where the trainer and hooks put metrics, and where every writer reads them."""
from collections import defaultdict

import torch
from fvcore.common.history_buffer import HistoryBuffer

_CURRENT_STORAGE = []


def get_event_storage() -> "EventStorage":
    """The storage of the running trainer (inside `with EventStorage():`)."""
    if not _CURRENT_STORAGE:
        raise RuntimeError("get_event_storage() called outside of a `with EventStorage(...)` block.")
    return _CURRENT_STORAGE[-1]


class EventStorage:
    """Scalar histories by name, each entry tagged with the iteration it was put at.

    `history(name).values()` is the list of (value, iteration); `latest()` maps name -> (value, iteration)
    of the last put; `smoothing_hint` tells writers whether to show a windowed median or the raw value.
    """

    def __init__(self, start_iter: int = 0, iters_per_epoch=None):
        self.iter = self.start_iter = start_iter  # start_iter: where this run began (writers drop later rows)
        self.iters_per_epoch = iters_per_epoch
        self._history = defaultdict(HistoryBuffer)
        self._smoothing_hints = {}
        self._latest = {}

    @property
    def epoch(self):
        """Fractional epochs completed after the current iteration (None when the epoch length is unknown)."""
        if not self.iters_per_epoch:
            return None
        return (self.iter + 1) / self.iters_per_epoch

    def put_scalar(self, name: str, value, smoothing_hint: bool = True, cur_iter=None) -> None:
        """Appends `value` (a number or a one-element tensor, read to the host) to `name`'s history at
        `cur_iter` (default: the current iteration). A metric keeps the `smoothing_hint` of its first put:
        True shows a windowed median, False the raw value; a different hint later is a ValueError."""
        if isinstance(value, torch.Tensor):
            value = value.detach().float().item()
        value = float(value)
        it = self.iter if cur_iter is None else int(cur_iter)
        self._history[name].update(value, it)
        self._latest[name] = (value, it)
        if self._smoothing_hints.setdefault(name, smoothing_hint) != smoothing_hint:
            raise ValueError(f"metric {name!r} was put with two different smoothing hints")

    def put_scalars(self, *, smoothing_hint: bool = True, cur_iter=None, **kwargs) -> None:
        """`put_scalar(name, value)` for each `name=value` keyword, with the same hint and iteration."""
        for k, v in kwargs.items():
            self.put_scalar(k, v, smoothing_hint=smoothing_hint, cur_iter=cur_iter)

    def history(self, name: str) -> HistoryBuffer:
        """The fvcore `HistoryBuffer` of `name` (`.values()`: list of (value, iteration)); KeyError naming the
        metrics there are when `name` was never put."""
        if name not in self._history:
            raise KeyError(f"no metric named {name!r} in the event storage (have: {sorted(self._history)})")
        return self._history[name]

    def histories(self) -> dict:
        """{name: HistoryBuffer} of every metric put so far (a shallow copy)."""
        return dict(self._history)

    def latest(self) -> dict:
        """{name: (value, iteration)} of each metric's last put."""
        return dict(self._latest)

    def latest_with_smoothing_hint(self, window_size: int = 20) -> dict:
        """name -> (value, iteration): windowed median for smoothed metrics, last value for the others."""
        out = {}
        for k, (v, it) in self._latest.items():
            if self._smoothing_hints[k]:
                out[k] = (self._history[k].median(window_size), it)
            else:
                out[k] = (v, it)
        return out

    def smoothing_hints(self) -> dict:
        """{name: bool}: whether writers should smooth each metric (its first put's hint)."""
        return dict(self._smoothing_hints)

    def __enter__(self):
        _CURRENT_STORAGE.append(self)
        return self

    def __exit__(self, *exc):
        assert _CURRENT_STORAGE[-1] is self
        _CURRENT_STORAGE.pop()
        return False
