"""A two-node SLURM cluster on the two emulated machines (machines.py): slurmctld and slurmd `lzmn0` on
machine 0, slurmd `lzmn1` on machine 1, every daemon in its machine's network namespace and with its host
name, talking over the veth link (NodeAddr 10.200.7.1 / .2). The settings tuned for tests (fast requeue,
no cgroups) come from `scripts/slurm/local_cluster.sh settings`, shared with the one-node cluster.

Separate from the one-node cluster of tests/slurm (scripts/slurm/local_cluster.sh): its own folder
(config, state, spool, logs, pid files) and its own network namespaces, so the same default ports do not
collide. munged is shared (its socket is a file, /run/munge, which both namespaces see): one already running
is used and left running; one started here is stopped here. `stop()` cancels the cluster's jobs and stops
exactly the daemons `start()` started, by pid. Client commands (sbatch, scontrol, scancel, submitit) must
run on one of the machines: `run()` runs them on machine 0 with SLURM_CONF set.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from .machines import TwoMachines

MUNGE_PID = Path("/run/munge/munged.pid")
LOCAL_CLUSTER = Path(__file__).resolve().parents[2] / "scripts" / "slurm" / "local_cluster.sh"


class ClusterUnavailable(RuntimeError):
    """slurm-wlm/munge are missing or a daemon did not come up; the message says which and where to look."""


def _alive(pid_file: Path, name: str) -> int:
    """The pid in `pid_file` when it runs a process called `name`, else 0."""
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
        return pid if name in Path(f"/proc/{pid}/comm").read_text() else 0
    except (OSError, ValueError, IndexError):
        return 0


def _wait(predicate, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return False


class TwoNodeCluster:
    """`start()` writes the config and starts the daemons; `env` is the environment of clients and jobs."""

    def __init__(self, machines: TwoMachines, root: Path):
        self.machines, self.root = machines, Path(root)
        self.conf = self.root / "etc" / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._started: list[tuple[int, str]] = []  # (pid, name) of daemons started here, stopped in reverse

    def write_config(self) -> None:
        for sub in ("etc", "state", "log", "run", "spool-lzmn0", "spool-lzmn1"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        r = self.root
        nodes = "".join(f"NodeName={m.hostname} NodeAddr={m.address} CPUs=2 RealMemory=2000 State=UNKNOWN\n"
                        for m in self.machines.machines)
        head = self.machines[0]
        shared = subprocess.run(["bash", str(LOCAL_CLUSTER), "settings"], capture_output=True, text=True,
                                check=True, timeout=30).stdout
        self.conf.write_text(f"""ClusterName=lazydet-mn
SlurmctldHost={head.hostname}({head.address})
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool-%n
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd-%n.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd-%n.log
JobCompLoc={r}/log/jobcomp.log
SlurmdTimeout=30
{shared}{nodes}PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def start(self) -> "TwoNodeCluster":
        tools = ("slurmctld", "slurmd", "munged", "sbatch")
        if not all(shutil.which(t) for t in tools):  # a fresh CI machine: apt-get, as tests/slurm does
            out = subprocess.run(["bash", str(LOCAL_CLUSTER), "install"], capture_output=True, text=True,
                                 timeout=900, env={**os.environ, "LAZYDET_SLURM_ROOT": str(self.root)})
            if out.returncode != 0:
                raise ClusterUnavailable(f"installing slurm-wlm + munge failed: "
                                         f"{(out.stderr.strip().splitlines() or ['no output'])[-1]}")
        self.write_config()
        self._start_munged()
        self._daemon(self.machines[0], "slurmctld", self.root / "run" / "slurmctld.pid", [])
        for m in self.machines.machines:
            self._daemon(m, "slurmd", self.root / "run" / f"slurmd-{m.hostname}.pid", ["-N", m.hostname])
        if not _wait(lambda: self.node_states() == {"idle"}, 60):
            raise ClusterUnavailable(f"nodes not idle after 60 s ({self.run(['sinfo', '-N']).stdout.strip()}); "
                                     f"see {self.root}/log")
        return self

    def _start_munged(self) -> None:
        if _alive(MUNGE_PID, "munged"):
            return
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        if not Path("/etc/munge/munge.key").is_file():
            subprocess.run(["runuser", "-u", "munge", "--", "mungekey", "--create"], check=True, timeout=60)
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True, timeout=60)
        if not _wait(lambda: _alive(MUNGE_PID, "munged"), 10):
            raise ClusterUnavailable("munged did not start (see /var/log/munge/munged.log)")
        self._started.append((_alive(MUNGE_PID, "munged"), "munged"))

    def _daemon(self, machine, name: str, pid_file: Path, args: list) -> None:
        out = machine.run([name, *args], env=self.env)
        if out.returncode != 0 or not _wait(lambda: _alive(pid_file, name), 15):
            raise ClusterUnavailable(f"{name} on {machine.hostname} did not start: {out.stderr.strip()} "
                                     f"(see {self.root}/log)")
        self._started.append((_alive(pid_file, name), name))

    def run(self, argv, **kwargs) -> subprocess.CompletedProcess:
        """A client command on machine 0 (the login node) with this cluster's SLURM_CONF."""
        kwargs.setdefault("env", self.env)
        return self.machines[0].run(argv, **kwargs)

    def node_states(self) -> set:
        out = self.run(["sinfo", "-h", "-N", "-o", "%T"])
        return set(out.stdout.split()) if out.returncode == 0 else set()

    def job_info(self, job_id: str) -> dict:
        """`scontrol show job` as a dict (JobState, Restarts, NodeList, ...); {} once SLURM forgot the job."""
        out = self.run(["scontrol", "show", "job", "-o", job_id], timeout=30)
        return dict(re.findall(r"(\w+)=(\S*)", out.stdout)) if out.returncode == 0 else {}

    def stop(self) -> None:
        if self._started:
            self.run(["scancel", "--user=root"], timeout=30)
        for pid, name in reversed(self._started):
            try:
                os.kill(pid, 15)
            except OSError:
                continue
            _wait(lambda: not Path(f"/proc/{pid}").exists(), 10)
        self._started.clear()
