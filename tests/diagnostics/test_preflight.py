"""Preflight pieces: batch/lr against a reference, the audit table, load coverage, GT-as-predictions."""
import os

import pytest
import torch
from torch import nn

from lazydet.checkpoint.load_report import load_state_into
from lazydet.diagnostics.preflight import (GroundTruthAsPredictions, check_batch_and_lr, check_load_coverage,
                                           gt_eval, parameter_audit)
from tests.diagnostics.runs import REPO


def test_batch_and_lr_linear_scaling():
    line, f = check_batch_and_lr(16, 1e-4, 16, 1e-4)
    assert f is None and "suggests lr 0.0001" in line
    line, f = check_batch_and_lr(64, 1e-4, 16, 1e-4)  # 4x the batch, same lr
    assert f.name == "batch_lr_mismatch" and abs(f.data["suggested_lr"] - 4e-4) < 1e-12
    assert check_batch_and_lr(8, 1e-4, None, None)[1] is None


def test_parameter_audit_counts_and_lrs():
    m = nn.Sequential()
    m.add_module("backbone", nn.Linear(4, 4))
    m.add_module("head", nn.Linear(4, 2))
    m.add_module("extra", nn.Linear(2, 2))
    m.backbone.requires_grad_(False)
    opt = torch.optim.AdamW([{"params": m.head.parameters(), "lr": 1e-4, "weight_decay": 0.05}])
    table = parameter_audit(m, opt, depth=1)
    assert "| backbone | 0 | 20 | 0 | - |" in table
    assert "| head | 10 | 0 | 0 | 1.00e-04 (wd 0.05) |" in table
    assert "| extra | 6 | 0 | 6 | - |" in table and "| **total** | 16 | 20 | 6 | |" in table


def test_load_coverage_within_the_target_module():
    model = nn.Sequential()
    model.add_module("backbone", nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)))
    model.add_module("head", nn.Linear(4, 2))
    full = {k: torch.zeros_like(v) for k, v in model.backbone.state_dict().items()}
    report = load_state_into(model, full, "full.pth")
    line, f = check_load_coverage(report)
    assert f is None and "4/4 tensors loaded" in line and "into 'backbone.'" in line
    partial = {k: v for k, v in full.items() if k.startswith("0.")}
    partial["1.weight"] = torch.zeros(3, 3)  # shape mismatch
    line, f = check_load_coverage(load_state_into(model, partial, "partial.pth"))
    assert f.name == "pretrained_coverage" and "1 shape-mismatched" in f.evidence
    assert check_load_coverage(None)[1] is None


def test_gt_as_predictions_reaches_ap_100_on_the_real_eval_path():
    from lazydet.config import LazyConfig
    cfg = LazyConfig.load(os.path.join(REPO, "configs/common/data/synthetic_shapes.py"))
    cfg.dataloader.test.num_workers = 0
    res = gt_eval(cfg, 6)
    assert res["bbox/AP"] == pytest.approx(100.0)


def test_gt_as_predictions_converts_to_original_pixels():
    t = {"boxes": torch.tensor([[0.5, 0.25, 0.2, 0.1]]), "labels": torch.tensor([2]),
         "orig_size": torch.tensor([200, 400]), "size": torch.tensor([100, 200])}
    out = GroundTruthAsPredictions()({"targets": [t]})[0]
    assert torch.allclose(out["boxes"], torch.tensor([[160.0, 40.0, 240.0, 60.0]]))
    assert out["labels"].tolist() == [2] and out["scores"].tolist() == [1.0]


def test_random_flip_in_the_test_mapper_is_caught_by_the_gt_evaluation():
    """Planted data-path fault: training augmentation (random flips) in the test mapper; the targets are
    mirrored, the evaluator's json is not, so ground truth scores below AP 100."""
    from types import SimpleNamespace

    from lazydet.config import LazyCall as L
    from lazydet.config import LazyConfig
    from lazydet.data import resize_flip_augmentation
    from lazydet.diagnostics.findings import DoctorReport
    from lazydet.diagnostics.preflight import run_preflight
    from lazydet.diagnostics.settings import DEFAULTS

    cfg = LazyConfig.load(os.path.join(REPO, "configs/common/data/synthetic_shapes.py"))
    cfg.dataloader.test.num_workers = 0
    cfg.dataloader.test.mapper.augmentation = L(resize_flip_augmentation)(min_sizes=[140], max_size=None, flip=True)
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    trainer = SimpleNamespace(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), cfg=cfg,
                              data_loader=None, checkpointer=None)
    report = DoctorReport(log=False)
    run_preflight(trainer, dict(DEFAULTS["preflight"], gt_eval_images=12), report, cfg)
    f = report.findings["gt_eval_not_perfect"]
    assert f.severity == "error" and "expected 100" in f.evidence
