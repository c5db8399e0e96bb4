"""Run folders: every way a run can meet a folder that already holds one, through `scripts.train_net.cli`.

A finished toy run (10 iterations, checkpoints model_0000004.pth and model_final.pth, a row per iteration in
metrics.json) is made once; each test works on a copy. A refused run must stop with one line naming the
file/key/value at fault and leave every file of the folder byte-identical (tests/folder_state.py).
"""
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from scripts.train_net import cli
from tests.engine.conftest import REPO_ROOT
from tests.folder_state import assert_unchanged, folder_state

RECIPE = os.path.join(REPO_ROOT, "tests", "engine", "toy_recipe.py")
SHORT = ["train.max_iter=10", "train.checkpointer.period=5", "train.log_period=1", "train.eval_period=0",
         "train.best_checkpointer.enabled=False"]


def run(out, *argv):
    """One in-process train_net run on the toy recipe into `out` (flags first, then overrides)."""
    flags = [a for a in argv if a.startswith("--")]
    cli(["--config-file", RECIPE, *flags, f"train.output_dir={out}", *SHORT, *(a for a in argv if a not in flags)])


def refused(out, *argv) -> str:
    """The run's error message; asserts it is a single line."""
    with pytest.raises(SystemExit) as e:
        run(out, *argv)
    message = str(e.value.code)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


RUN_WRITES = ("log.txt", ".lazydet.lock")  # a run that starts appends to its log and signs the lock file


def state_before_a_run(folder, *also) -> dict:
    """folder_state without the files a run that starts may change (RUN_WRITES) and `also`."""
    return {p: d for p, d in folder_state(folder).items() if p not in (*RUN_WRITES, *also)}


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def train_rows(out):
    with open(os.path.join(out, "metrics.json")) as f:
        rows = [json.loads(line) for line in f]
    return [r["iteration"] for r in rows if "total_loss" in r], [r["iteration"] for r in rows if "toy/mse" in r]


@pytest.fixture(autouse=True)
def _restore_signal_handlers():
    """The preemption hook installs its handlers when built and removes them in after_train; an in-process
    run that ends before training (a finished run resumed) never gets there: restore them for later tests."""
    signals = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)
    saved = {s: signal.getsignal(s) for s in signals}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A real command-line run (a subprocess: in-process runs reconfigure the logger of later tests)."""
    out = str(tmp_path_factory.mktemp("finished") / "run")
    subprocess.run([sys.executable, "-m", "scripts.train_net", "--config-file", RECIPE, f"train.output_dir={out}",
                    *SHORT], cwd=REPO_ROOT, check=True,
                   capture_output=True, timeout=240)
    return out


@pytest.fixture
def copy(finished, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(finished, out)
    return out


def test_a_finished_run_has_its_files_config_plots_and_lock(finished):
    for f in ("config.yaml", "config.py", "log.txt", "metrics.json", "model_0000004.pth", "model_final.pth",
              "last_checkpoint", os.path.join("plots", "metrics.png"), ".lazydet.lock"):
        assert os.path.isfile(os.path.join(finished, f)), f
    with open(os.path.join(finished, "plots", "metrics.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert train_rows(finished) == (list(range(10)), [9])


# ---- --resume with a damaged last_checkpoint: the newest checkpoint that loads, never iteration 0 ----------
def _marker_names_missing(out):
    os.remove(os.path.join(out, "model_final.pth"))


def _marker_empty(out):
    os.remove(os.path.join(out, "model_final.pth"))
    open(os.path.join(out, "last_checkpoint"), "w").close()


def _named_file_truncated(out):
    path = os.path.join(out, "model_final.pth")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def _named_file_empty(out):
    open(os.path.join(out, "model_final.pth"), "w").close()


@pytest.mark.parametrize("damage, why", [
    (_marker_names_missing, "model_final.pth (named by last_checkpoint) does not exist"),
    (_marker_empty, "last_checkpoint is empty"),
    (_named_file_truncated, "model_final.pth (named by last_checkpoint) is truncated"),
    (_named_file_empty, "model_final.pth (named by last_checkpoint) is empty (0 bytes)"),
])
def test_resume_falls_back_to_the_newest_checkpoint_that_loads(finished, copy, damage, why):
    damage(copy)
    run(copy, "--resume")
    with open(os.path.join(copy, "log.txt")) as f:
        log = f.read()
    assert f"resuming from {os.path.join(copy, 'model_0000004.pth')} (iteration 4)" in log and why in log
    assert "Starting training from iteration 5 to 10" in log
    a, b = weights(os.path.join(finished, "model_final.pth")), weights(os.path.join(copy, "model_final.pth"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the resumed run ends where the uninterrupted one did
    assert train_rows(copy) == (list(range(10)), [9])


def test_resume_when_no_checkpoint_loads_stops_and_keeps_everything(copy):
    _named_file_truncated(copy)
    with open(os.path.join(copy, "model_0000004.pth"), "w") as f:
        f.write("not a checkpoint\n")
    before = folder_state(copy)
    message = refused(copy, "--resume")
    assert f"--resume: no checkpoint in {copy} can be loaded" in message
    assert "model_final.pth (named by last_checkpoint) is truncated" in message
    assert "model_0000004.pth is not a torch checkpoint (a text file starting 'not a checkpoint')" in message
    assert_unchanged(copy, before)


# ---- the folder lock -----------------------------------------------------------------------------------
HOLD_LOCK = """
import sys, time
from omegaconf import OmegaConf
from lazydet.engine.run_folder import open_run_folder
class Args: resume = True; eval_only = False
folder = open_run_folder(OmegaConf.create({"train": {"output_dir": sys.argv[1], "init_checkpoint": ""}}), Args())
print("locked", flush=True)
time.sleep(120)
"""


def test_a_second_run_into_a_locked_folder_names_the_holder_and_a_dead_holder_leaves_no_lock(copy):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, copy], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = folder_state(copy)
        message = refused(copy, "--resume")
        assert f"train.output_dir={copy!r} is in use by another run (pid {holder.pid} on host " \
               f"{socket.gethostname()}, started " in message
        assert_unchanged(copy, before)
    finally:
        holder.kill()
        holder.wait()
    run(copy, "--resume")  # the OS released the killed holder's lock: no stale lock


# ---- a run without --resume into a used folder ----------------------------------------------------------
def test_a_new_run_into_a_used_folder_is_refused(copy):
    before = folder_state(copy)
    message = refused(copy)
    assert f"train.output_dir={copy!r} already holds a run (model_0000004.pth, model_final.pth, last_checkpoint, " \
           "metrics.json): pass --resume to continue it, or set a new train.output_dir" in message
    with pytest.raises(SystemExit, match="already holds a run"):  # checked before worker processes start
        cli(["--config-file", RECIPE, "--num-gpus", "2", f"train.output_dir={copy}", *SHORT])
    assert_unchanged(copy, before)


def test_metrics_alone_mark_a_used_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text('{"iteration": 3, "total_loss": 1.0}\n')
    before = folder_state(out)
    assert "already holds a run (metrics.json)" in refused(str(out))
    assert_unchanged(str(out), before)


# ---- a run that fails after the config loads keeps the previous run's files ----------------------------
def test_a_run_failing_before_it_starts_keeps_the_config_files(copy):
    before = state_before_a_run(copy)
    with pytest.raises((ValueError, SystemExit), match="fp8"):
        run(copy, "--resume", "train.max_iter=20", "train.amp.enabled=True", "train.amp.dtype=fp8")
    assert_unchanged(copy, before, allow_new=RUN_WRITES)


# ---- after --resume every iteration is logged once (metrics.json and TensorBoard) -----------------------
def test_resumed_iterations_are_logged_once(finished, copy):
    _marker_names_missing(copy)  # as if killed after iteration 9 was logged, before model_final was written
    run(copy, "--resume")
    assert train_rows(copy) == (list(range(10)), [9])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = [e.step for e in EventAccumulator(copy).Reload().Scalars("total_loss")]
    assert steps == list(range(10))


# ---- temp files of a write killed mid-way ---------------------------------------------------------------
KILLED_WRITE = """
import os, sys
from lazydet.checkpoint import atomic_open
with atomic_open(os.path.join(sys.argv[1], "model_0000009.pth")) as f:
    f.write(b"half a checkpoint")
    f.flush()
    os._exit(9)  # SIGKILL-like: no cleanup runs
"""


def test_the_next_run_removes_only_its_own_temp_leftovers(copy):
    subprocess.run([sys.executable, "-c", KILLED_WRITE, copy], cwd=REPO_ROOT, check=False)
    leftovers = [f for f in os.listdir(copy) if f.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".model_0000009.pth.")
    for name in ("notes.tmp", ".notes.tmp", ".model_final.pth.tmp"):  # a user's files: not our pattern
        with open(os.path.join(copy, name), "w") as f:
            f.write("mine")
    before = state_before_a_run(copy, *leftovers)
    run(copy, "--resume")  # finished run: nothing to train, but the folder is cleaned
    assert_unchanged(copy, before, allow_new=RUN_WRITES)
    assert not os.path.exists(os.path.join(copy, leftovers[0]))
    with open(os.path.join(copy, "log.txt")) as f:
        assert f"removed {os.path.join(copy, leftovers[0])} (17 bytes)" in f.read()


# ---- --resume of a finished run ------------------------------------------------------------------------
def test_resuming_a_finished_run_does_nothing(copy, capsys):
    before = state_before_a_run(copy)
    run(copy, "--resume")
    assert_unchanged(copy, before, allow_new=RUN_WRITES)
    with open(os.path.join(copy, "log.txt")) as f:
        log = f.read()
    assert "Training already finished: resumed at iteration 10 of train.max_iter=10; nothing to do" in log
    assert "iter: 11/10" not in log and log.count("toy/neg_mse=") == 1  # no second final evaluation


# ---- --eval-only without weights -----------------------------------------------------------------------
@pytest.mark.parametrize("flags", [(), ("--resume",)])
def test_eval_only_without_weights_is_an_error(tmp_path, flags):
    out = tmp_path / "run"
    out.mkdir()
    (out / "coco_instances_results.json").write_text("[]")
    before = folder_state(out)
    message = refused(str(out), "--eval-only", *flags)
    assert "--eval-only needs weights: set train.init_checkpoint=<file.pth>" in message
    assert_unchanged(str(out), before)


# ---- one line instead of a traceback --------------------------------------------------------------------
def test_init_checkpoint_text_or_truncated_is_one_line(finished, tmp_path):
    out = str(tmp_path / "run")
    text = tmp_path / "weights.pth"
    text.write_text("hello\n")
    assert refused(out, f"train.init_checkpoint={text}") == \
        f"error: train.init_checkpoint={str(text)!r} is not a torch checkpoint (a text file starting 'hello')"
    truncated = tmp_path / "truncated.pth"
    with open(os.path.join(finished, "model_final.pth"), "rb") as f:
        truncated.write_bytes(f.read()[:1000])
    assert refused(out, f"train.init_checkpoint={truncated}") == \
        f"error: train.init_checkpoint={str(truncated)!r} is truncated (1000 bytes, the end of its zip archive " \
        "is missing)"
    assert folder_state(out) == {}


def test_output_dir_that_is_a_file_or_not_writable_is_one_line(tmp_path):
    a_file = tmp_path / "results.txt"
    a_file.write_text("mine")
    assert refused(str(a_file)) == f"error: train.output_dir={str(a_file)!r} is a file, not a folder: set " \
                                   "train.output_dir to a folder"
    assert refused(str(a_file / "run")).startswith(f"error: train.output_dir={str(a_file / 'run')!r} cannot be "
                                                   "created (Not a directory)")
    assert a_file.read_text() == "mine"
    if not os.path.isdir("/sys"):
        pytest.skip("no /sys (a folder nobody may create entries in, not even root)")
    assert refused("/sys/lazydet_run").startswith("error: train.output_dir='/sys/lazydet_run' cannot be created (")


def test_disk_full_while_saving_is_one_line_and_the_run_resumes_from_the_last_good_checkpoint(finished, tmp_path,
                                                                                              monkeypatch):
    from lazydet.checkpoint import atomic

    real_save, saves = torch.save, []

    def save_until_the_disk_is_full(obj, f, *a, **k):  # model_0000004.pth fits, model_final.pth does not
        saves.append(obj["iteration"])
        if len(saves) > 1:
            f.write(b"the first blocks")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, f, *a, **k)

    out = str(tmp_path / "run")
    monkeypatch.setattr(atomic.torch, "save", save_until_the_disk_is_full)
    assert refused(out) == (f"error: could not write checkpoint {out}/model_final.pth (No space left on device); "
                            f"the last good checkpoint {out}/model_0000004.pth is kept; free space and --resume")
    assert saves == [4, 9] and not [f for f in os.listdir(out) if f.endswith(".tmp")]
    monkeypatch.setattr(atomic.torch, "save", real_save)
    run(out, "--resume")
    a, b = weights(os.path.join(finished, "model_final.pth")), weights(os.path.join(out, "model_final.pth"))
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---- a run that is stopped still draws its plots and releases the lock -----------------------------------
def test_a_stopped_run_draws_plots_and_releases_the_lock(tmp_path):
    from lazydet.analysis.plots import plot_run_folder
    from lazydet.config import LazyConfig
    from lazydet.engine import HookBase, StopTraining, default_setup
    from lazydet.engine.run_folder import open_run_folder
    from scripts.train_net import build_trainer

    class Stop(HookBase):
        def after_step(self):
            if self.trainer.iter == 6:
                raise StopTraining("stopped by the test")

    class Args:
        resume = eval_only = False

    out = str(tmp_path / "run")
    cfg = LazyConfig.apply_overrides(LazyConfig.load(RECIPE), [f"train.output_dir={out}", *SHORT])
    folder = open_run_folder(cfg, Args(), plot=plot_run_folder)
    default_setup(cfg, Args())
    trainer = build_trainer(Args(), cfg)
    trainer.register_hooks([Stop(), folder])
    trainer.train()
    assert trainer.stop_reason == "stopped by the test" and os.path.isfile(os.path.join(out, "plots", "metrics.png"))
    assert not folder.locked
    assert train_rows(out)[0] == list(range(7))
    Args.resume = True
    open_run_folder(cfg, Args()).release()  # the lock is free again


@pytest.mark.slow
def test_two_ranks_under_torchrun_both_stop_with_rank0s_verdict(copy):
    """No launching process of ours checks first under torchrun: rank 0 decides, rank 1 must not hang."""
    from lazydet.engine.launch import find_free_port

    before = folder_state(copy)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                           str(find_free_port()), "-m", "scripts.train_net", "--config-file", RECIPE,
                           f"train.output_dir={copy}", *SHORT], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode != 0
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error: ")]
    # each rank stops on the verdict; torchrun may kill rank 1 as soon as rank 0 has failed, before it prints
    assert 1 <= len(errors) <= 2 and all(f"train.output_dir={copy!r} already holds a run" in e for e in errors), errors
    assert_unchanged(copy, before)


def test_the_dataset_check_lines_reach_log_txt(tmp_path, monkeypatch):
    import logging

    import scripts.train_net as train_net

    def check_datasets(cfg):
        logging.getLogger("lazydet").info("dataset check: 64 images, all readable")
        logging.getLogger("lazydet").warning("dataset check: a.jpg is truncated; left out")

    monkeypatch.setattr(train_net, "check_datasets", check_datasets)
    out = tmp_path / "run"
    run(str(out))
    log = (out / "log.txt").read_text().splitlines()
    assert "INFO] dataset check: 64 images, all readable" in log[0]
    assert "WARNING] dataset check: a.jpg is truncated; left out" in log[1]
    assert "Rank 0 of 1; command line:" in log[2]
