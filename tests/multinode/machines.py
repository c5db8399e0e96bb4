"""Two emulated machines on this host: Linux network namespaces joined by a veth pair, each with its own
address and (through a UTS namespace per process) its own host name.

    machine 0: host name lzmn0, 10.200.7.1 on interface lzmn-eth (namespace lzmn<pid>-0)
    machine 1: host name lzmn1, 10.200.7.2 on interface lzmn-eth (namespace lzmn<pid>-1)

Traffic stays between the two namespaces: nothing is routed to or from the host's own network. Each
program runs through `nsenter --net` (not `ip netns exec`, which remounts /sys and so hides the cgroup
file system slurmd needs) plus `unshare --mount --uts`: in its private mount namespace a hosts file naming
both machines (in a temporary folder) is bind-mounted over /etc/hosts, so nothing under /etc changes.
`close()` removes exactly what `create()` made. Needs root and `ip netns`; `create()` raises `NamespacesUnavailable`
with the reason when they cannot be made (the fixtures skip on it).
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

SUBNET = "10.200.7"
INTERFACE = "lzmn-eth"  # the same name inside both namespaces (GLOO_SOCKET_IFNAME=lzmn-eth on both)


class NamespacesUnavailable(RuntimeError):
    """Network namespaces (or veth pairs) cannot be made here: not root, no `ip`, or a sandbox without them."""


def _ip(*args, check=True) -> subprocess.CompletedProcess:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise NamespacesUnavailable(f"`ip {' '.join(args)}` failed: {out.stderr.strip() or out.returncode}")
    return out


@dataclass
class Machine:
    """One emulated machine: its namespace, host name and address."""

    namespace: str
    hostname: str
    address: str
    hosts_file: str

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run on this machine: in its network namespace, with its host name (own UTS namespace) and
        its /etc/hosts (own mount namespace)."""
        inner = (f"mount --bind {shlex.quote(self.hosts_file)} /etc/hosts && hostname {shlex.quote(self.hostname)}"
                 f" && exec {shlex.join(map(str, argv))}")
        return ["nsenter", f"--net=/run/netns/{self.namespace}", "unshare", "--mount", "--uts", "sh", "-c", inner]

    def run(self, argv, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 60)
        return subprocess.run(self.command(argv), **kwargs)

    def popen(self, argv, **kwargs) -> subprocess.Popen:
        """Start `argv` on this machine; the Popen's pid is the program's own pid (ip/unshare/sh exec it)."""
        return subprocess.Popen(self.command(argv), **kwargs)


@dataclass
class TwoMachines:
    """The pair of machines; `create()` builds them, `close()` removes them (idempotent)."""

    prefix: str = field(default_factory=lambda: f"lzmn{os.getpid()}")
    machines: list[Machine] = field(default_factory=list)
    _made: list[str] = field(default_factory=list)
    _folder: str = ""

    def create(self) -> "TwoMachines":
        if os.geteuid() != 0:
            raise NamespacesUnavailable("network namespaces need root")
        names = [f"{self.prefix}-{i}" for i in range(2)]
        self._folder = tempfile.mkdtemp(prefix=f"{self.prefix}-")
        hosts_file = str(Path(self._folder) / "hosts")
        self.machines = [Machine(n, f"lzmn{i}", f"{SUBNET}.{i + 1}", hosts_file) for i, n in enumerate(names)]
        try:
            for m in self.machines:
                _ip("netns", "add", m.namespace)
                self._made.append(m.namespace)
            # veth created in machine 0's namespace, its peer moved to machine 1's: the host never holds it
            ns0, ns1 = names
            _ip("-n", ns0, "link", "add", INTERFACE, "type", "veth", "peer", "name", "lzmn-peer")
            _ip("-n", ns0, "link", "set", "lzmn-peer", "netns", ns1)
            _ip("-n", ns1, "link", "set", "lzmn-peer", "name", INTERFACE)
            Path(hosts_file).write_text("127.0.0.1 localhost\n" +
                                        "".join(f"{m.address} {m.hostname}\n" for m in self.machines))
            for m in self.machines:
                _ip("-n", m.namespace, "addr", "add", f"{m.address}/24", "dev", INTERFACE)
                _ip("-n", m.namespace, "link", "set", INTERFACE, "up")
                _ip("-n", m.namespace, "link", "set", "lo", "up")
            probe = self.machines[0].run(["getent", "hosts", self.machines[1].hostname])
            if self.machines[1].address not in probe.stdout:
                raise NamespacesUnavailable(f"host names do not resolve inside the namespace: {probe.stderr}")
        except (NamespacesUnavailable, OSError, subprocess.SubprocessError) as e:
            self.close()
            raise NamespacesUnavailable(str(e)) from e
        return self

    def close(self) -> None:
        for ns in reversed(self._made):
            _ip("netns", "del", ns, check=False)  # also removes the veth pair inside
        self._made.clear()
        if self._folder:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = ""

    def __getitem__(self, i) -> Machine:
        return self.machines[i]
