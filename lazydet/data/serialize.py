"""A list whose items live pickled in one numpy byte buffer.

A Python list of dicts is thousands of small refcounted objects; every DataLoader worker that
reads an item bumps refcounts, which un-shares the fork's copy-on-write pages, so each worker's
RSS grows towards a full copy of the dataset (the classic "RAM keeps growing" DataLoader bug).
Two numpy arrays (bytes + offsets) are two objects: reading never writes to their pages.
"""
from __future__ import annotations

import pickle

import numpy as np
import torch.utils.data


class SerializedList(torch.utils.data.Dataset):
    """Read-only list of picklable ``items``: ``len``, ``[i]`` (a fresh unpickled copy of item i)."""

    def __init__(self, items):
        blobs = [np.frombuffer(pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8) for x in items]
        self._offsets = np.cumsum([len(b) for b in blobs], dtype=np.int64)
        self._buffer = np.concatenate(blobs) if blobs else np.zeros(0, dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, idx: int):
        if idx < 0:
            idx += len(self)
        if not 0 <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {len(self)} items")
        start = 0 if idx == 0 else int(self._offsets[idx - 1])
        return pickle.loads(memoryview(self._buffer[start:int(self._offsets[idx])]))

    @property
    def nbytes(self) -> int:
        """Bytes held (buffer + offsets)."""
        return self._buffer.nbytes + self._offsets.nbytes
