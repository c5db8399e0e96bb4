"""Run a test's worker on two real gloo ranks in forked processes and collect what each rank reports.

    def _worker(rank, init_file, *args):   # inside each process, after the process group is up
        ...
        return (whatever the test asserts on)

    results = on_two_gloo_ranks(_worker, tmp_path, *args)   # {0: result of rank 0, 1: result of rank 1}

A worker that raises is reported as an AssertionError naming the rank and the exception, instead of the test
hanging on a rank stuck in a collective.
"""
import multiprocessing as mp

import torch
import torch.distributed as dist


def _run_rank(worker, rank, init_file, args, queue):
    try:
        # a forked child must not enter the OpenMP pool the parent's tests started (libgomp is not fork-safe):
        # one thread runs ATen's parallel loops inline
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
        result = worker(rank, *args)
        dist.destroy_process_group()
        queue.put((rank, True, result))
    except Exception as e:  # noqa: BLE001 - reported to the parent, which fails the test
        queue.put((rank, False, repr(e)))


def on_two_gloo_ranks(worker, tmp_path, *args, timeout: float = 240) -> dict:
    """{rank: worker(rank, *args)} for ranks 0 and 1 of a 2-process gloo group rendezvousing in `tmp_path`."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    init_file = str(tmp_path / "gloo_init")
    procs = [ctx.Process(target=_run_rank, args=(worker, rank, init_file, args, queue)) for rank in range(2)]
    for p in procs:
        p.start()
    reports = [queue.get(timeout=timeout) for _ in procs]
    for p in procs:
        p.join(30)
        if p.is_alive():  # a rank stuck in a collective after the other failed
            p.terminate()
    failed = {rank: error for rank, ok, error in reports if not ok}
    assert not failed, f"worker failed: {failed}"
    return {rank: result for rank, _, result in reports}
