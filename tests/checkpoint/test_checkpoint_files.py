"""Which checkpoint files load, which one --resume picks, temp leftovers, and a full disk while saving."""
import errno
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from lazydet.checkpoint import (CheckpointError, Checkpointer, checkpoint_problem, choose_resume_checkpoint,
                                leftover_temp_files)
from lazydet.checkpoint import atomic as atomic_mod
from tests.folder_state import assert_unchanged, folder_state

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _save(folder, name, iteration, update_last=True):
    torch.manual_seed(iteration)
    return Checkpointer(nn.Linear(2, 2), str(folder)).save(name, iteration=iteration, update_last=update_last)


def _truncate(path, keep=0.5):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])


def test_checkpoint_problem_names_each_kind_of_bad_file(tmp_path):
    good = _save(tmp_path, "model_0000001", 1)
    legacy = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    assert checkpoint_problem(good) is None and checkpoint_problem(str(legacy)) is None
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "text.pth").write_text("version https://git-lfs.github.com/spec/v1\n")
    (tmp_path / "blank.pth").write_text("\n\n")
    (tmp_path / "binary.pth").write_bytes(bytes([0xFF, 0xFE, 0x00, 0x81]))
    trunc = tmp_path / "trunc.pth"
    trunc.write_bytes(open(good, "rb").read()[:100])
    assert checkpoint_problem(str(tmp_path / "nope.pth")) == "does not exist"
    assert checkpoint_problem(str(tmp_path)) == "is not a file"
    assert checkpoint_problem(str(tmp_path / "empty.pth")) == "is empty (0 bytes)"
    assert checkpoint_problem(str(tmp_path / "text.pth")) == \
        "is not a torch checkpoint (a text file starting 'version https://git-lfs.github')"
    assert checkpoint_problem(str(tmp_path / "blank.pth")) == "is not a torch checkpoint (whitespace only)"
    assert checkpoint_problem(str(tmp_path / "binary.pth")) == "is not a torch checkpoint (4 bytes of unknown format)"
    assert checkpoint_problem(str(trunc)) == "is truncated (100 bytes, the end of its zip archive is missing)"
    for name in ("empty.pth", "text.pth", "trunc.pth"):  # what load_model_weights says: the same, one line
        with pytest.raises(CheckpointError, match=r"^train.init_checkpoint='.*%s': (is|is not) " % name):
            Checkpointer(nn.Linear(2, 2)).load_model_weights(str(tmp_path / name))


def test_resume_choice_is_the_marker_else_the_highest_saved_iteration(tmp_path):
    _save(tmp_path, "model_0000004", 4)
    _save(tmp_path, "model_final", 9)  # a finished 10-iteration run ...
    _save(tmp_path, "model_0000014", 14)  # ... extended with train.max_iter=20
    _save(tmp_path, "model_best", 99, update_last=False)  # never a resume point
    assert choose_resume_checkpoint(str(tmp_path)).path == str(tmp_path / "model_0000014.pth")
    _truncate(tmp_path / "model_0000014.pth")
    choice = choose_resume_checkpoint(str(tmp_path))
    assert choice.path == str(tmp_path / "model_final.pth") and choice.fell_back
    assert choice.problems == [f"{tmp_path / 'model_0000014.pth'} (named by last_checkpoint) is truncated "
                               f"({os.path.getsize(tmp_path / 'model_0000014.pth')} bytes, the end of its zip "
                               "archive is missing)"]
    assert "resuming from" in choice.reason and "(iteration 9)" in choice.reason
    (tmp_path / "model_final.pth").write_bytes(b"")
    assert choose_resume_checkpoint(str(tmp_path)).path == str(tmp_path / "model_0000004.pth")


def test_a_folder_without_checkpoints_resumes_nothing_and_one_with_only_bad_ones_raises(tmp_path):
    assert choose_resume_checkpoint(str(tmp_path)).path is None
    assert choose_resume_checkpoint(str(tmp_path / "absent")).path is None
    (tmp_path / "last_checkpoint").write_text("model_0000099.pth")
    with pytest.raises(CheckpointError, match=r"no checkpoint in .* can be loaded \(.*model_0000099.pth \(named "
                                              r"by last_checkpoint\) does not exist\); restore a good checkpoint"):
        choose_resume_checkpoint(str(tmp_path))
    with pytest.raises(CheckpointError):
        Checkpointer(nn.Linear(2, 2), str(tmp_path)).resume_or_load("", resume=True)


def test_a_killed_atomic_write_leaves_a_temp_file_that_is_found(tmp_path):
    code = ("import os, sys\nfrom lazydet.checkpoint import atomic_open\n"
            "with atomic_open(os.path.join(sys.argv[1], 'last_checkpoint'), 'w') as f:\n"
            "    f.write('model_0000004.pth'); f.flush(); os._exit(9)\n")
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO_ROOT).returncode == 9
    left = os.listdir(tmp_path)
    assert len(left) == 1 and left[0].startswith(".last_checkpoint.") and left[0].endswith(".tmp")
    for mine in (".last_checkpoint.tmp", ".x.12345678.tmp.bak", "model_0000004.pth.abcdefgh.tmp"):
        (tmp_path / mine).write_text("mine")
    assert leftover_temp_files(str(tmp_path)) == [str(tmp_path / left[0])]


def test_disk_full_while_saving_is_one_line_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    ck = Checkpointer(nn.Linear(2, 2), str(tmp_path))
    ck.save("model_0000004", iteration=4)
    before = folder_state(str(tmp_path))

    def full_disk(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic_mod.torch, "save", full_disk)
    with pytest.raises(CheckpointError) as e:
        ck.save("model_0000009", iteration=9)
    assert str(e.value) == (f"could not write checkpoint {tmp_path / 'model_0000009.pth'} (No space left on "
                            f"device); the last good checkpoint {tmp_path / 'model_0000004.pth'} is kept; free "
                            "space and --resume")
    assert_unchanged(str(tmp_path), before)  # no partial file, no temp file, last_checkpoint untouched
