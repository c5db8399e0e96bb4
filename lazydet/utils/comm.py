"""Process-group helpers that also work (as no-ops) in a single process."""
import functools

import numpy as np
import torch.distributed as dist

_LOCAL_RANK = 0
_LOCAL_SIZE = 1


def set_local_rank(local_rank: int, local_size: int) -> None:
    """Recorded by `launch` so that code can pick its device without reading env vars."""
    global _LOCAL_RANK, _LOCAL_SIZE
    _LOCAL_RANK, _LOCAL_SIZE = int(local_rank), int(local_size)


def is_dist() -> bool:
    """Whether a torch.distributed process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Number of processes in the job (1 without a process group)."""
    return dist.get_world_size() if is_dist() else 1


def get_rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if is_dist() else 0


def get_local_rank() -> int:
    """This process's rank on its machine (its GPU index; 0 without a process group)."""
    return _LOCAL_RANK if is_dist() else 0


def get_local_size() -> int:
    """Processes on this machine (1 without a process group)."""
    return _LOCAL_SIZE if is_dist() else 1


def is_main_process() -> bool:
    """Rank 0: the process that writes files and logs."""
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all ranks (no-op in one process)."""
    if get_world_size() > 1:
        dist.barrier()


@functools.lru_cache()
def _cpu_group():
    """A gloo group for gathering python objects without touching the accelerator."""
    if dist.get_backend() == "nccl":
        return dist.new_group(backend="gloo")
    return dist.group.WORLD


def all_gather(obj) -> list:
    """Every rank gets the list of `obj` from all ranks (any picklable object)."""
    if get_world_size() == 1:
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj, group=_cpu_group())
    return out


def gather(obj, dst: int = 0) -> list:
    """Rank `dst` gets the list of `obj` from all ranks, the others get []."""
    if get_world_size() == 1:
        return [obj]
    out = [None] * get_world_size() if get_rank() == dst else None
    dist.gather_object(obj, out, dst=dst, group=_cpu_group())
    return out if get_rank() == dst else []


def broadcast_object(obj, src: int = 0):
    """The object of rank `src`, on every rank."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=_cpu_group())
    return box[0]


def shared_random_seed() -> int:
    """A random int that is the same on all ranks (rank 0 draws it)."""
    return broadcast_object(int(np.random.randint(2**31)))


__all__ = [
    "set_local_rank", "is_dist", "get_world_size", "get_rank", "get_local_rank", "get_local_size",
    "is_main_process", "synchronize", "all_gather", "gather", "broadcast_object", "shared_random_seed",
]
