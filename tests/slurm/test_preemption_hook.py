"""PreemptionHook without a cluster: real Trainer + Checkpointer, signals sent to ourselves, a fake scontrol."""
import multiprocessing as mp
import os
import signal
import socket
import time

import pytest
import torch

from lazydet.checkpoint.checkpointer import Checkpointer
from lazydet.engine.hooks import LRScheduler
from lazydet.engine.preemption import PreemptionHook, build_preemption_hooks
from lazydet.engine.trainer import HookBase, Trainer
from lazydet.utils import comm

from .toy import ToyLoader, ToyRegressor


class SendSignal(HookBase):
    """Sends `sig` to this process at the start of iteration `at` (only on `rank`, if given)."""

    def __init__(self, at: int, sig=signal.SIGUSR1, rank=None):
        self.at, self.sig, self.rank = at, sig, rank

    def before_step(self):
        if self.trainer.iter == self.at and (self.rank is None or comm.get_rank() == self.rank):
            os.kill(os.getpid(), self.sig)


def make_trainer(out_dir, max_iter, hooks=()):
    torch.manual_seed(0)
    model = ToyRegressor()
    if comm.get_world_size() > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    trainer = Trainer(model, ToyLoader(), opt, max_iter=max_iter, output_dir=str(out_dir))
    trainer.checkpointer = Checkpointer(trainer.unwrapped_model, str(out_dir), optimizer=opt, scheduler=sched,
                                        trainer=trainer)
    trainer.register_hooks([LRScheduler(sched), *hooks])
    return trainer


@pytest.fixture
def fake_scontrol(tmp_path, monkeypatch):
    """A `scontrol` on PATH that records its arguments; SLURM_JOB_ID set as in a batch job."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol_calls.txt"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    return calls


def read_calls(path):
    return path.read_text().splitlines() if path.exists() else []


def test_usr1_checkpoints_stops_requeues_and_resume_matches_uninterrupted_run(tmp_path, fake_scontrol):
    reference = make_trainer(tmp_path / "ref", max_iter=10)
    reference.train()
    assert reference.stop_reason is None

    out = tmp_path / "run"
    hook = PreemptionHook()
    assert hook.requeue  # SLURM_JOB_ID is set
    trainer = make_trainer(out, max_iter=10, hooks=[SendSignal(at=4), hook])
    try:
        trainer.train()
    finally:
        hook.uninstall()
    assert trainer.stop_reason == "preempted"
    assert trainer.iter == 4
    assert (out / "last_checkpoint").read_text().strip() == "model_0000004.pth"
    assert hook.requeue_pending and read_calls(fake_scontrol) == []  # requeued at exit, after every hook
    assert hook.requeue_now() and not hook.requeue_now()
    assert read_calls(fake_scontrol) == ["requeue 4242"]

    resumed = make_trainer(out, max_iter=10)
    resumed.checkpointer.resume_or_load("", resume=True)
    assert resumed.start_iter == 5
    resumed.train()
    assert resumed.stop_reason is None
    for a, b in zip(reference.unwrapped_model.parameters(), resumed.unwrapped_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # same iteration, lr, batches and dropout masks
    assert resumed.optimizer.param_groups[0]["lr"] == reference.optimizer.param_groups[0]["lr"]


def test_sigterm_checkpoints_and_stops_without_requeue(tmp_path, fake_scontrol):
    hook = PreemptionHook()
    trainer = make_trainer(tmp_path, max_iter=10, hooks=[SendSignal(at=2, sig=signal.SIGTERM), hook])
    try:
        trainer.train()
    finally:
        hook.uninstall()
    assert trainer.stop_reason == "preempted" and trainer.iter == 2
    assert (tmp_path / "model_0000002.pth").is_file()
    assert not hook.requeue_pending and read_calls(fake_scontrol) == []


def test_signal_in_last_step_lets_training_finish(tmp_path, fake_scontrol):
    hook = PreemptionHook()
    trainer = make_trainer(tmp_path, max_iter=5, hooks=[SendSignal(at=4), hook])
    trainer.train()
    assert trainer.stop_reason is None and trainer.iter == 5
    assert read_calls(fake_scontrol) == []
    assert signal.getsignal(signal.SIGUSR1) is not hook._on_signal  # handlers restored after a normal end


def test_no_signal_no_effect_and_config_switch(tmp_path):
    from omegaconf import OmegaConf

    off = OmegaConf.create({"train": {"preemption": {"enabled": False, "requeue": None}}})
    assert build_preemption_hooks(off) == []
    hooks = build_preemption_hooks(OmegaConf.create({"train": {"preemption": {"enabled": True, "requeue": False}}}))
    assert len(hooks) == 1 and hooks[0].requeue is False
    hooks[0].uninstall()
    hook = PreemptionHook(requeue=False)
    trainer = make_trainer(tmp_path, max_iter=4, hooks=[hook])
    trainer.train()
    assert trainer.stop_reason is None and not (tmp_path / "last_checkpoint").exists()


def _sleep_then_exit():
    time.sleep(1.5)


def test_forked_child_survives_the_signal(tmp_path):
    """SLURM signals every process of the step, data-loader workers included: once the hook exists, a
    forked worker inherits the flag-only handler instead of dying from SIGUSR1."""
    ctx = mp.get_context("fork")
    without = ctx.Process(target=_sleep_then_exit)
    without.start()
    time.sleep(0.3)
    os.kill(without.pid, signal.SIGUSR1)
    without.join(10)
    assert without.exitcode == -signal.SIGUSR1  # the pitfall: default action kills the worker

    hook = PreemptionHook(requeue=False)
    try:
        child = ctx.Process(target=_sleep_then_exit)
        child.start()
        time.sleep(0.3)
        os.kill(child.pid, signal.SIGUSR1)
        child.join(10)
        assert child.exitcode == 0
    finally:
        hook.uninstall()


def _rank_main(rank, world, port, out_dir, calls_file, result_dir):
    os.environ["SLURM_JOB_ID"] = "77"
    bin_dir = os.path.dirname(calls_file)
    os.environ["PATH"] = f"{bin_dir}/bin{os.pathsep}{os.environ['PATH']}"
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=world)
    torch.set_num_threads(1)
    hook = PreemptionHook()
    trainer = make_trainer(out_dir, max_iter=10, hooks=[SendSignal(at=3, rank=1), hook])
    trainer.train()
    with open(os.path.join(result_dir, f"rank{rank}.txt"), "w") as f:
        f.write(f"{trainer.iter} {trainer.stop_reason}")
    torch.distributed.destroy_process_group()


def test_two_ranks_agree_when_only_one_was_signalled(tmp_path, fake_scontrol):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_rank_main, args=(r, 2, port, str(tmp_path / "out"), str(fake_scontrol),
                                                  str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0]
    results = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    assert results == ["3 preempted", "3 preempted"]  # rank 0 stopped too, at the same iteration
    assert (tmp_path / "out" / "last_checkpoint").read_text().strip() == "model_0000003.pth"
    assert read_calls(fake_scontrol) == ["requeue 77"]  # exactly once, from rank 0, at its exit
