"""Starting one or many training processes: local spawn (`--num-gpus N`), multi-node (`--num-machines`,
`--machine-rank`, `--dist-url`), torchrun (RANK/WORLD_SIZE/LOCAL_RANK) and srun (SLURM_PROCID/...)."""
import fcntl
import ipaddress
import logging
import os
import re
import socket
import struct
import subprocess
import time
from datetime import timedelta
from urllib.parse import urlparse

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..utils import comm

logger = logging.getLogger("lazydet")

DEFAULT_TIMEOUT = timedelta(minutes=30)
# How long a rank other than 0 waits for rank 0's rendezvous port to accept connections before it gives up
# with RendezvousError (machines of one job may start minutes apart when launched by hand).
RENDEZVOUS_TIMEOUT_ENV = "LAZYDET_RENDEZVOUS_TIMEOUT"
DEFAULT_RENDEZVOUS_TIMEOUT_S = 300.0


# What gloo / NCCL / c10d say when a collective fails because another rank's process or machine is gone.
PEER_LOST_SIGNS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
                   "NCCL communicator was aborted")


class LaunchError(ConnectionError):
    """A multi-process run could not start or lost a rank; the message is one line (train_net prints it)."""


class RendezvousError(LaunchError):
    """Rank 0's rendezvous address (--dist-url or MASTER_ADDR:MASTER_PORT) cannot be reached; the message
    names the address and port."""


class PeerLostError(LaunchError):
    """A collective failed because another rank (its process or its machine) is gone."""


class WorkerError(LaunchError):
    """A spawned process stopped on a one-line error of the run (config, data, run folder, checkpoint);
    the message is that line."""


# Errors whose message is a whole, actionable line (lazydet's ConfigError, DataError, RunFolderError,
# CheckpointError are ValueErrors raised with one line): a spawned child's is re-raised in the parent as that
# line instead of the child's traceback. Named, not imported: the launcher does not depend on those packages.
ONE_LINE_ERRORS = {"PeerLostError": PeerLostError, "RendezvousError": RendezvousError,
                   **{name: WorkerError for name in ("ConfigError", "DataError", "RunFolderError", "CheckpointError")}}


def find_free_port() -> int:
    """A TCP port on this machine that was free a moment ago (for --dist-url auto)."""
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


def rendezvous_timeout_s() -> float:
    """Seconds to wait for rank 0's port: $LAZYDET_RENDEZVOUS_TIMEOUT, default 300."""
    text = os.environ.get(RENDEZVOUS_TIMEOUT_ENV, "")
    try:
        return float(text) if text else DEFAULT_RENDEZVOUS_TIMEOUT_S
    except ValueError:
        raise ValueError(f"{RENDEZVOUS_TIMEOUT_ENV}={text!r}: expected a number of seconds") from None


def wait_for_rendezvous(host: str, port: int, timeout_s: float, what: str) -> None:
    """Block until a TCP connection to `host:port` (rank 0's store) succeeds, retrying every second.

    Without this a rank whose master address is wrong or unreachable waits inside init_process_group for
    the whole process-group timeout (30 min) and then fails with a message that does not name the address.
    Raises RendezvousError after `timeout_s` seconds; `what` says where the address came from.
    """
    deadline = time.monotonic() + timeout_s
    said_waiting = False
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=max(0.1, min(5.0, left))):
                return
        except OSError as e:
            error = e
        left = deadline - time.monotonic()
        if left <= 0:
            raise RendezvousError(
                f"cannot reach the rendezvous {host}:{port} ({what}) within {timeout_s:g} s: "
                f"{error.strerror or error.__class__.__name__}; is rank 0 running there and the port open? "
                f"(wait longer with {RENDEZVOUS_TIMEOUT_ENV}=<seconds>)")
        if not said_waiting:
            print(f"[lazydet] waiting up to {timeout_s:g} s for rank 0 at {host}:{port} ({what})", flush=True)
            said_waiting = True
        time.sleep(min(1.0, left))


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


def _ipv4_of(interface: str) -> str | None:
    """The IPv4 address of a network interface (SIOCGIFADDR), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", interface.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def _is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


def gloo_interface_toward(master_host: str) -> str | None:
    """The interface gloo should use in a multi-machine run when gloo's default would not work, else None.

    gloo binds to the address of this machine's host name; where /etc/hosts maps the host name to a
    loopback address (Debian's `127.0.1.1 <hostname>`, containers), every rank advertises 127.x to its
    peers and connecting fails ("connectFullMesh failed ... remote=[127.0.1.1]") or hangs. Then use the
    interface carrying this machine's route to rank 0 (`master_host`); on rank 0's own machine, whose name
    is loopback too, the only interface with a non-loopback IPv4 address (None when there are several:
    then GLOO_SOCKET_IFNAME must say)."""
    try:
        if not _is_loopback(socket.gethostbyname(socket.gethostname())):
            return None
    except (OSError, ValueError):
        pass  # the host name does not resolve: gloo would fail too
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((master_host, 9))  # UDP: picks the route, sends nothing
            local = s.getsockname()[0]
    except OSError:
        return None
    addresses = {name: _ipv4_of(name) for _, name in socket.if_nameindex()}
    if not _is_loopback(local):
        return next((name for name, address in addresses.items() if address == local), None)
    outward = [name for name, address in addresses.items() if address and not _is_loopback(address)]
    return outward[0] if len(outward) == 1 else None


def _init_group(rank, world_size, local_rank, local_size, init_method, timeout, master_host=None):
    backend = _backend()
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if backend == "gloo" and world_size > local_size and master_host and "GLOO_SOCKET_IFNAME" not in os.environ:
        interface = gloo_interface_toward(master_host)
        if interface:
            os.environ["GLOO_SOCKET_IFNAME"] = interface
            print(f"[lazydet] host name {socket.gethostname()} resolves to a loopback address: gloo uses "
                  f"interface {interface} (toward rank 0 at {master_host}); set GLOO_SOCKET_IFNAME to choose",
                  flush=True)
    dist.init_process_group(backend=backend, init_method=init_method, world_size=world_size, rank=rank,
                            timeout=timeout)
    comm.set_local_rank(local_rank, local_size)
    comm.synchronize()
    if world_size > local_size:  # several machines: say which rank landed on which host
        print(f"[lazydet] rank {rank} of {world_size} (local rank {local_rank} of {local_size}) on host "
              f"{socket.gethostname()}: process group up ({backend})", flush=True)


def _spawned_worker(local_rank, main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args,
                    timeout):
    rank = machine_rank * num_gpus_per_machine + local_rank
    _init_group(rank, world_size, local_rank, num_gpus_per_machine, dist_url, timeout, urlparse(dist_url).hostname)
    _run_rank(rank, main_func, args)


def _run_rank(rank: int, main_func, args):
    """`main_func(*args)` on one member of the process group, which is destroyed afterwards. A collective
    that fails because another rank is gone (its process died, its machine went down) becomes a one-line
    PeerLostError instead of a library traceback: the survivors stop as soon as the transport notices."""
    try:
        return main_func(*args)
    except RuntimeError as e:
        text = str(e).strip()
        if not any(sign in text for sign in PEER_LOST_SIGNS):
            raise
        # "[.../gloo/transport/tcp/pair.cc:561] Connection closed by peer [10.0.0.2]:19653. This is ..." -> the cause
        cause = re.sub(r"^\[[^\]]*\]\s*", "", text.splitlines()[0]).split(". ")[0]
        raise PeerLostError(f"rank {rank} lost another rank of the job ({cause}): a process or machine of the "
                            "job died or lost its network; the last checkpoint in train.output_dir is complete, "
                            "start every machine again with --resume") from None
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
    if rank != 0 and os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT"):
        wait_for_rendezvous(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), rendezvous_timeout_s(),
                            "MASTER_ADDR:MASTER_PORT")
    _init_group(rank, world, local_rank, local_size, "env://", timeout, os.environ.get("MASTER_ADDR"))
    return _run_rank(rank, main_func, args)


def launch(main_func, num_gpus_per_machine: int = 1, num_machines: int = 1, machine_rank: int = 0,
           dist_url: str = None, args=(), timeout=DEFAULT_TIMEOUT):
    """Run `main_func(*args)` in every process of the job.

    Under torchrun or srun (with several tasks) the processes already exist: join the group from the
    environment. Otherwise spawn `num_gpus_per_machine` local processes (on CPU-only machines they are
    CPU processes using gloo). `dist_url` "auto" (or None) picks a free local port (single machine only).
    Ranks other than 0 first wait (bounded, `rendezvous_timeout_s()`) until rank 0's address accepts
    connections, and raise RendezvousError naming the address when it does not.
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
    if machine_rank != 0:
        url = urlparse(dist_url)
        if url.scheme == "tcp" and url.hostname and url.port:
            wait_for_rendezvous(url.hostname, url.port, rendezvous_timeout_s(), "--dist-url")
    _say_cpu_once(world_size)
    try:
        mp.start_processes(_spawned_worker, nprocs=num_gpus_per_machine, start_method="spawn", daemon=False,
                           args=(main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args,
                                 timeout))
    except mp.ProcessRaisedException as e:  # a child's one-line error stays one line in the parent
        last_line = str(e).strip().splitlines()[-1]  # "<module>.<Class>: <message>" of the child's traceback
        error = re.fullmatch(r"(?:[\w.]+\.)?(\w+): (.*)", last_line)
        if error and error.group(1) in ONE_LINE_ERRORS:
            raise ONE_LINE_ERRORS[error.group(1)](error.group(2)) from None
        raise
