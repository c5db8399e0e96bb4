"""Starting one or many training processes: local spawn (`--num-gpus N`), multi-node (`--num-machines`,
`--machine-rank`, `--dist-url`), torchrun (RANK/WORLD_SIZE/LOCAL_RANK) and srun (SLURM_PROCID/...)."""
import logging
import os
import re
import socket
import subprocess
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..utils import comm

logger = logging.getLogger("lazydet")

DEFAULT_TIMEOUT = timedelta(minutes=30)


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM node list: `scontrol show hostnames`, or parsing "gpu[03-05,09],cpu1"."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             timeout=20, check=True).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    first = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not first:
        raise ValueError(f"cannot parse SLURM_JOB_NODELIST={nodelist!r}")
    prefix, ranges = first.group(1), first.group(2)
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def slurm_port(job_id: str) -> int:
    """A port all tasks of a job agree on without talking: 15000 + job id mod 20000."""
    return 15000 + int(re.sub(r"\D", "", job_id) or 0) % 20000


def env_launched() -> str:
    """'torchrun', 'slurm' or '' depending on who started this process as one rank of many."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return "torchrun"
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        # A batch script also has SLURM_PROCID=0 and SLURM_NTASKS=N: only tasks started by srun (a job
        # step) are ranks; python run directly in the script would wait for N-1 ranks that never come.
        if "SLURM_STEP_ID" in os.environ:
            return "slurm"
        print(f"[lazydet] SLURM_NTASKS={os.environ['SLURM_NTASKS']} but this process was not started by srun: "
              "launching as on one machine (--num-gpus); use `srun` (scripts/slurm/train.sbatch) for one "
              "task per GPU", flush=True)
    return ""


def _backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def _say_cpu_once(world_size: int) -> None:
    if not torch.cuda.is_available():
        how = f"{world_size} processes on the CPU with gloo" if world_size > 1 else "on the CPU"
        print(f"[lazydet] No CUDA device: running {how}.", flush=True)


def _init_group(rank, world_size, local_rank, local_size, init_method, timeout):
    backend = _backend()
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method=init_method, world_size=world_size, rank=rank,
                            timeout=timeout)
    comm.set_local_rank(local_rank, local_size)
    comm.synchronize()


def _spawned_worker(local_rank, main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args,
                    timeout):
    rank = machine_rank * num_gpus_per_machine + local_rank
    _init_group(rank, world_size, local_rank, num_gpus_per_machine, dist_url, timeout)
    try:
        main_func(*args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _launch_from_env(kind: str, main_func, args, timeout):
    if kind == "torchrun":
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    else:
        rank, world = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
        local_rank = int(os.environ.get("SLURM_LOCALID", 0))
        local_size = int(os.environ.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0].split(",")[0] or 1)
        os.environ.setdefault("MASTER_ADDR", first_slurm_host(os.environ.get("SLURM_JOB_NODELIST", "127.0.0.1")))
        os.environ.setdefault("MASTER_PORT", str(slurm_port(os.environ.get("SLURM_JOB_ID", "0"))))
    if rank == 0:
        _say_cpu_once(world)
        logger.info(f"Launched by {kind}: {world} ranks, master {os.environ.get('MASTER_ADDR')}:"
                    f"{os.environ.get('MASTER_PORT')}")
    if world == 1:
        comm.set_local_rank(0, 1)
        return main_func(*args)
    _init_group(rank, world, local_rank, local_size, "env://", timeout)
    try:
        return main_func(*args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def launch(main_func, num_gpus_per_machine: int = 1, num_machines: int = 1, machine_rank: int = 0,
           dist_url: str = None, args=(), timeout=DEFAULT_TIMEOUT):
    """Run `main_func(*args)` in every process of the job.

    Under torchrun or srun (with several tasks) the processes already exist: join the group from the
    environment. Otherwise spawn `num_gpus_per_machine` local processes (on CPU-only machines they are
    CPU processes using gloo). `dist_url` "auto" (or None) picks a free local port (single machine only).
    """
    kind = env_launched()
    if kind:
        return _launch_from_env(kind, main_func, args, timeout)
    world_size = int(num_gpus_per_machine) * int(num_machines)
    if torch.cuda.is_available() and num_gpus_per_machine > torch.cuda.device_count():
        raise ValueError(f"--num-gpus {num_gpus_per_machine} but only {torch.cuda.device_count()} CUDA devices")
    if world_size <= 1:
        if not torch.cuda.is_available():
            _say_cpu_once(1)
        return main_func(*args)
    if dist_url in (None, "", "auto"):
        if num_machines > 1:
            raise ValueError("--dist-url auto only works with --num-machines 1; pass tcp://<host of rank 0>:<port>")
        dist_url = f"tcp://127.0.0.1:{find_free_port()}"
    _say_cpu_once(world_size)
    mp.start_processes(_spawned_worker, nprocs=num_gpus_per_machine, start_method="spawn", daemon=False,
                       args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout))
