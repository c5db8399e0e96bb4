"""Checkpointer: atomic writes survive a crash mid-write, init weights report what loaded, weights_only."""
import os
import pickle

import pytest
import torch
from torch import nn

from lazydet.checkpoint import Checkpointer, load_state_into
from lazydet.checkpoint import atomic as atomic_mod


class Net(nn.Module):
    def __init__(self, width=4, head=3):
        super().__init__()
        self.stem = nn.Linear(2, width)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, head)


class Wrapper(nn.Module):
    """A detector that holds a 'pretrained' backbone under a prefix (as timm weights would be loaded)."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.net = Net()
        self.decoder = nn.Linear(3, 3)


def test_save_resume_roundtrip_with_checkpointables(tmp_path):
    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    loss = model.head(model.norm(model.stem(torch.randn(5, 2)))).sum()
    loss.backward()
    opt.step()
    ck = Checkpointer(model, str(tmp_path), optimizer=opt)
    ck.save("model_0000004", iteration=4)
    assert ck.get_checkpoint_file() == str(tmp_path / "model_0000004.pth")

    model2 = Net()
    opt2 = torch.optim.AdamW(model2.parameters(), lr=0.1)
    extra = Checkpointer(model2, str(tmp_path), optimizer=opt2).resume_or_load("", resume=True)
    assert extra["iteration"] == 4
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert all(torch.equal(s1[k]["exp_avg"], s2[k]["exp_avg"]) for k in s1)


def test_crash_mid_write_keeps_last_checkpoint_loadable(tmp_path, monkeypatch):
    model = Net()
    ck = Checkpointer(model, str(tmp_path))
    ck.save("model_0000009", iteration=9)

    real_save = torch.save

    def crashing_save(obj, f, *a, **k):
        f.write(b"half a checkpoint")  # bytes hit the temp file, then the process "dies"
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(atomic_mod.torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        ck.save("model_0000019", iteration=19)
    monkeypatch.setattr(atomic_mod.torch, "save", real_save)

    assert not (tmp_path / "model_0000019.pth").exists()
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]  # temp file cleaned up
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_0000009.pth"
    extra = Checkpointer(Net(), str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 9


def test_last_checkpoint_never_names_a_missing_file(tmp_path):
    ck = Checkpointer(Net(), str(tmp_path))
    (tmp_path / "last_checkpoint").write_text("model_0000099.pth")
    assert ck.get_checkpoint_file() is None and not ck.has_checkpoint()


def test_best_checkpoint_does_not_move_last_checkpoint(tmp_path):
    ck = Checkpointer(Net(), str(tmp_path))
    ck.save("model_0000009", iteration=9)
    ck.save("model_best", update_last=False, iteration=9)
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_0000009.pth"


def test_init_checkpoint_report_counts(tmp_path):
    src = Net(width=4, head=5)  # head has a different number of outputs -> shape mismatch
    state = src.state_dict()
    del state["norm.bias"]                       # missing in the checkpoint
    state["extra.weight"] = torch.zeros(2)       # unexpected
    path = tmp_path / "init.pth"
    torch.save({"model": state}, path)

    model = Net(width=4, head=3)
    before_head = model.head.weight.detach().clone()
    ck = Checkpointer(model, str(tmp_path / "out"))
    report = ck.load_model_weights(str(path))
    assert ck.last_load_report is report
    assert sorted(report.matched) == ["norm.weight", "stem.bias", "stem.weight"]
    assert report.missing == ["norm.bias"]
    assert report.unexpected == ["extra.weight"]
    assert sorted(k for k, _, _ in report.shape_mismatched) == ["head.bias", "head.weight"]
    assert report.counts() == {"matched": 3, "missing": 1, "unexpected": 1, "shape_mismatched": 2, "model_keys": 6}
    assert report.coverage == pytest.approx(0.5)
    assert torch.equal(model.stem.weight, src.stem.weight)
    assert torch.equal(model.head.weight, before_head)  # mismatched shapes keep their init
    text = report.format()
    assert "3/6 model tensors matched (50.0%)" in text and "head.weight: (5, 4) -> (3, 4)" in text


def test_backbone_weights_find_their_prefix(tmp_path):
    backbone = Net()
    path = tmp_path / "backbone.pth"
    torch.save(backbone.state_dict(), path)  # plain state dict, keys without the detector's prefix
    model = Wrapper()
    report = Checkpointer(model, "").load_model_weights(str(path))
    assert report.prefix == "backbone.net."
    assert len(report.matched) == 6 and report.missing == ["decoder.weight", "decoder.bias"]
    assert torch.equal(model.backbone.net.stem.weight, backbone.stem.weight)


def test_ddp_module_prefix_is_stripped():
    src = Net()
    state = {f"module.{k}": v for k, v in src.state_dict().items()}
    model = Net()
    report = load_state_into(model, state, "ddp", auto_prefix=False)
    assert report.coverage == 1.0


class Evil:
    def __reduce__(self):
        return (os.system, ("true",))


def test_weights_only_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        torch.save({"model": Net().state_dict(), "payload": Evil()}, f, pickle_module=pickle)
    with pytest.raises(pickle.UnpicklingError):
        Checkpointer(Net(), "").load_model_weights(str(path))


def test_missing_init_checkpoint_is_one_clear_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.init_checkpoint=.*no such file"):
        Checkpointer(Net(), "").load_model_weights(str(tmp_path / "nope.pth"))
