"""Seeds, RNG state capture/restore (for exact resume) and environment info."""
import os
import random
import sys
from datetime import datetime

import numpy as np
import torch


def seed_all_rng(seed=None) -> int:
    """Seed python, numpy and torch. `None` or a negative seed draws a random one; returns the seed used."""
    if seed is None or seed < 0:
        seed = (os.getpid() + int(datetime.now().strftime("%S%f")) + int.from_bytes(os.urandom(2), "big")) % 2**31
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return int(seed)


def _numpy_state_to_torch(state):
    """numpy's legacy state with the key array as a tensor, so `torch.load(weights_only=True)` accepts it."""
    name, keys, pos, has_gauss, cached = state
    return (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))


def get_rng_state() -> dict:
    """Python, numpy, torch (and CUDA) generator states, picklable with plain types and tensors."""
    state = {
        "python": random.getstate(),
        "numpy": _numpy_state_to_torch(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of `get_rng_state`; missing entries are left untouched."""
    if "python" in state:
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
    if "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    if "torch" in state:
        torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


class preserve_rng_state:
    """Context manager: code inside (e.g. evaluation) must not change the training random streams."""

    def __enter__(self):
        self._state = get_rng_state()
        return self

    def __exit__(self, *exc):
        set_rng_state(self._state)
        return False


def collect_env_info() -> str:
    """A short multi-line summary of the software and hardware this run used."""
    lines = [
        f"python: {sys.version.split()[0]}",
        f"torch: {torch.__version__} (cuda build {torch.version.cuda})",
        f"numpy: {np.__version__}",
    ]
    for mod in ("torchvision", "timm", "fvcore", "omegaconf"):
        try:
            lines.append(f"{mod}: {__import__(mod).__version__}")
        except Exception:  # noqa: BLE001 - optional information only
            lines.append(f"{mod}: not importable")
    if torch.cuda.is_available():
        names = {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
        lines.append(f"cuda devices: {torch.cuda.device_count()} x {', '.join(sorted(names))}")
    else:
        lines.append("cuda devices: none (CPU only)")
    lines.append(f"cpu threads: {torch.get_num_threads()}")
    return "\n".join(lines)
