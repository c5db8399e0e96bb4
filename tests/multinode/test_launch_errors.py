"""launch's one-line errors for multi-machine runs, without namespaces (runs anywhere, in a second)."""
import socket
import subprocess
import time

import pytest

from lazydet.engine.launch import (DEFAULT_RENDEZVOUS_TIMEOUT_S, RENDEZVOUS_TIMEOUT_ENV, PeerLostError,
                                   RendezvousError, WorkerError, _run_rank, gloo_interface_toward, launch,
                                   rendezvous_timeout_s, wait_for_rendezvous)


def closed_local_port() -> int:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wait_for_rendezvous_gives_up_with_the_address_after_the_timeout(capsys):
    port = closed_local_port()
    start = time.monotonic()
    with pytest.raises(RendezvousError) as err:
        wait_for_rendezvous("127.0.0.1", port, 1.5, "--dist-url")
    assert 1.4 <= time.monotonic() - start < 10
    message = str(err.value)
    assert f"127.0.0.1:{port} (--dist-url) within 1.5 s" in message and "\n" not in message
    assert "waiting up to 1.5 s for rank 0" in capsys.readouterr().out


def test_wait_for_rendezvous_returns_once_rank_0_listens():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        wait_for_rendezvous("127.0.0.1", server.getsockname()[1], 5, "MASTER_ADDR:MASTER_PORT")


def test_rendezvous_timeout_from_the_environment(monkeypatch):
    monkeypatch.delenv(RENDEZVOUS_TIMEOUT_ENV, raising=False)
    assert rendezvous_timeout_s() == DEFAULT_RENDEZVOUS_TIMEOUT_S
    monkeypatch.setenv(RENDEZVOUS_TIMEOUT_ENV, "12.5")
    assert rendezvous_timeout_s() == 12.5
    monkeypatch.setenv(RENDEZVOUS_TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match="LAZYDET_RENDEZVOUS_TIMEOUT='soon'"):
        rendezvous_timeout_s()


def test_a_collective_losing_its_peer_becomes_one_line():
    gloo = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer "
            "[10.200.7.2]:19653. This is typically caused by a remote worker crashing.\nmore text")

    def main():
        raise RuntimeError(gloo)

    with pytest.raises(PeerLostError) as err:
        _run_rank(3, main, ())
    message = str(err.value)
    assert message.startswith("rank 3 lost another rank of the job (Connection closed by peer [10.200.7.2]:19653)")
    assert "--resume" in message and "\n" not in message


def test_other_errors_pass_through_unchanged():
    def main():
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="^shape mismatch$"):
        _run_rank(0, main, ())


def _stop_on_bad_data(path):
    from lazydet.data import DataError

    raise DataError(f"{path}: not a COCO json (expected an object with 'images', 'annotations', 'categories')")


def test_a_spawned_processs_one_line_error_stays_one_line():
    """--num-gpus 2: a DataError in the spawned processes reaches the launching process as its one line."""
    with pytest.raises(WorkerError) as err:
        launch(_stop_on_bad_data, 2, args=("/data/val.json",))
    assert str(err.value) == "/data/val.json: not a COCO json (expected an object with 'images', 'annotations', " \
                             "'categories')"


def outward_interfaces() -> list:
    """Interfaces with a non-loopback IPv4 address, from `ip -4 -o addr` (independent of launch's ioctl)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        pytest.skip("`ip` is not available")
    names = {ln.split()[1] for ln in out.stdout.splitlines() if not ln.split()[3].startswith("127.")}
    return sorted(names)


def test_gloo_interface_only_when_the_host_name_is_loopback(monkeypatch):
    monkeypatch.setattr(socket, "gethostbyname", lambda name: "10.1.2.3")
    assert gloo_interface_toward("127.0.0.1") is None  # gloo's own choice (the host name's address) works
    monkeypatch.setattr(socket, "gethostbyname", lambda name: "127.0.1.1")
    # rank 0 on this machine (its address is loopback too): the one outward interface, or None if several
    outward = outward_interfaces()
    assert gloo_interface_toward("127.0.0.1") == (outward[0] if len(outward) == 1 else None)
