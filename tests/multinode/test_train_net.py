"""train_net with --num-machines 2 on two emulated machines (own network namespace, address and host name
each), CPU processes with gloo over the veth link between them."""
import dataclasses
import re
import signal
import time

import pytest
import torch

from .conftest import (LONG, QUICKSTART_TINY, rank_env, read_metrics, start_on, train_net_argv, wait_all,
                       wait_until_true)

pytestmark = [pytest.mark.slow]
PORT = 29511


def final_weights(out_dir):
    return torch.load(out_dir / "model_final.pth", map_location="cpu", weights_only=False)["model"]


def quickstart_overrides(out_dir, max_iter=24):
    return ["train.device=cpu", f"train.output_dir={out_dir}", f"train.max_iter={max_iter}",
            "train.checkpointer.period=12"]


@pytest.mark.parametrize("per_machine", [1, pytest.param(2, marks=pytest.mark.skipif(
    not LONG, reason="2 processes per machine: set LAZYDET_MULTINODE_LONG=1"))])
def test_two_machines_equal_one_machine_with_the_same_total_batch(machines, tmp_path, per_machine):
    """The quickstart (real DINO, COCO evaluator) for 24 iterations with a collective evaluation, on 2 machines
    x `per_machine` processes: bit-identical weights and metrics to one machine with as many processes.

    The machines' /etc/hosts map their own host name to 127.0.1.1 (as Debian does) and GLOO_SOCKET_IFNAME
    is unset: gloo alone would advertise 127.0.1.1 to the other machine (connectFullMesh fails or hangs);
    launch picks the interface that routes to rank 0."""
    world = 2 * per_machine
    debian_like = []
    for i, m in enumerate(machines.machines):
        other = machines[1 - i]
        hosts = tmp_path / f"hosts{i}"
        hosts.write_text(f"127.0.0.1 localhost\n127.0.1.1 {m.hostname}\n{other.address} {other.hostname}\n")
        debian_like.append(dataclasses.replace(m, hosts_file=str(hosts)))
    env = rank_env()
    del env["GLOO_SOCKET_IFNAME"]
    one, two = tmp_path / "one_machine", tmp_path / "two_machines"
    single = start_on(machines[0], train_net_argv("--config-file", QUICKSTART_TINY, "--num-gpus", world,
                                                  *quickstart_overrides(one)), tmp_path / "one.log")
    assert wait_all([single], 600) == [0], (tmp_path / "one.log").read_text()[-3000:]

    procs = [start_on(m, train_net_argv("--config-file", QUICKSTART_TINY, "--num-gpus", per_machine,
                                        "--num-machines", 2, "--machine-rank", i, "--dist-url",
                                        f"tcp://{machines[0].hostname}:{PORT}", *quickstart_overrides(two)),
                      tmp_path / f"machine{i}.log", env=env) for i, m in enumerate(debian_like)]
    codes = wait_all(procs, 600)
    logs = [(tmp_path / f"machine{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs[0][-2000:] + logs[1][-2000:]

    # each machine's ranks, on that machine's host name, in its own output and in the per-rank log files
    for i, m in enumerate(machines.machines):
        assert f"host name {m.hostname} resolves to a loopback address: gloo uses interface lzmn-eth" in logs[i]
        for local in range(per_machine):
            rank = i * per_machine + local
            assert f"rank {rank} of {world} (local rank {local} of {per_machine}) on host {m.hostname}" in logs[i]
            rank_log = two / ("log.txt" if rank == 0 else f"log.txt.rank{rank}")
            assert f"Rank {rank} of {world}" in rank_log.read_text()
            assert f"inference done: {16 // world} images" in rank_log.read_text()

    a, b = final_weights(one), final_weights(two)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "two-machine weights differ from the one-machine run"
    (m1,), (m2,) = ([m for m in read_metrics(d) if "bbox/AP" in m] for d in (one, two))
    assert m1["iteration"] == m2["iteration"] == 23
    assert m1["bbox/AP"] == pytest.approx(m2["bbox/AP"], abs=1e-9)


def test_unreachable_master_fails_with_one_line_naming_the_address(machines, tmp_path):
    """Machine 1 alone, its --dist-url pointing at machine 0 where nothing listens: a bounded wait, then one
    line naming address:port and exit code 1 (instead of waiting 30 min in init_process_group)."""
    url = f"tcp://{machines[0].address}:{PORT + 1}"
    log = tmp_path / "machine1.log"
    start = time.time()
    proc = start_on(machines[1], train_net_argv("--config-file", "tests/slurm/toy_recipe.py", "--num-machines", 2,
                                                "--machine-rank", 1, "--dist-url", url,
                                                f"train.output_dir={tmp_path / 'out'}"),
                    log, env=rank_env(LAZYDET_RENDEZVOUS_TIMEOUT="6"))
    assert wait_all([proc], 120) == [1]
    elapsed = time.time() - start
    errors = [ln for ln in log.read_text().splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"{machines[0].address}:{PORT + 1}" in errors[0], log.read_text()
    assert "within 6 s" in errors[0] and "Traceback" not in log.read_text()
    assert elapsed < 90


@pytest.mark.skipif(not LONG, reason="a machine dying mid-run: set LAZYDET_MULTINODE_LONG=1")
def test_machine_dying_mid_run_stops_the_other_and_the_run_resumes(machines, tmp_path):
    """SIGKILL machine 1's rank mid-run: machine 0 stops within a bounded time, the last checkpoint loads,
    and both machines started again with --resume finish the run from it."""
    out = tmp_path / "run"

    def argv(machine_rank, *extra):
        return train_net_argv("--config-file", "tests/slurm/toy_recipe.py", "--num-machines", 2, "--machine-rank",
                              machine_rank, "--dist-url", f"tcp://{machines[0].hostname}:{PORT + 2}", *extra,
                              f"train.output_dir={out}", "train.max_iter=60", "train.eval_period=0",
                              "dataloader.train.step_sleep=0.2")

    procs = [start_on(m, argv(i), tmp_path / f"m{i}.log") for i, m in enumerate(machines.machines)]
    wait_until_true(lambda: any(m["iteration"] >= 12 for m in read_metrics(out)), 300, "iteration 12", procs)
    killed_at = time.time()
    procs[1].send_signal(signal.SIGKILL)
    code0 = wait_all([procs[0]], 120)[0]
    stop_s = time.time() - killed_at
    assert code0 == 1
    assert stop_s < 60, f"machine 0 took {stop_s:.0f} s to stop"
    text = (tmp_path / "m0.log").read_text()
    errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "lost another rank" in errors[0] and machines[1].address in errors[0], text[-3000:]
    assert "Traceback" not in text
    last = (out / "last_checkpoint").read_text().strip()
    saved = torch.load(out / last, map_location="cpu", weights_only=False)
    assert saved["iteration"] >= 9
    procs = [start_on(m, argv(i, "--resume"), tmp_path / f"r{i}.log") for i, m in enumerate(machines.machines)]
    assert wait_all(procs, 300) == [0, 0]
    starts = re.findall(r"Starting training from iteration (\d+)", (out / "log.txt").read_text())
    assert [int(s) for s in starts] == [0, saved["iteration"] + 1]
    assert max(m["iteration"] for m in read_metrics(out)) == 59
    print(f"machine 0 stopped {stop_s:.1f} s after machine 1 was killed")
