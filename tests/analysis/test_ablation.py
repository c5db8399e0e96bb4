"""Precision ablation on the quickstart recipe on CPU: complete table, real positive figures, failures reported."""
import csv
import json
import os

import pytest

from lazydet.analysis.ablation import Cell, CellResult, add_relative_figures, markdown_table, run_ablation
from lazydet.analysis.ablation import run_cell_subprocess
from tools import ablate_precision

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICKSTART = os.path.join(REPO, "projects/dino_dinov2/configs/synthetic/dino_dinov2_quickstart.py")
SMALL = ["dataloader.train.num_workers=0"]


def test_relative_figures_against_fp32_of_same_backbone_and_batch():
    rs = [CellResult("v", "fp32", 2, "ok", time_median=2.0, time_min=2.0, time_max=2.0, memory_mib=100.0),
          CellResult("v", "bf16", 2, "ok", time_median=1.0, time_min=1.0, time_max=1.0, memory_mib=60.0),
          CellResult("v", "bf16", 4, "ok", time_median=1.0, time_min=1.0, time_max=1.0, memory_mib=60.0),
          CellResult("v", "fp16", 2, "OOM", reason="x")]
    add_relative_figures(rs)
    assert rs[1].speedup == pytest.approx(2.0) and rs[1].memory_saving == pytest.approx(0.4)
    assert rs[2].speedup is None  # no fp32 cell at batch 4
    assert "| v | fp16 | 2 | OOM: x | OOM | - | - |" in markdown_table(rs)


@pytest.mark.slow
def test_quickstart_fp32_bf16_two_batch_sizes_complete_table(tmp_path, capsys):
    out = tmp_path / "abl"
    ablate_precision.main(["--config-file", QUICKSTART, "--precisions", "fp32", "bf16", "fp16", "--batch-sizes", "1", "2",
                           "--iters", "2", "--warmup", "1", "--image-size", "84", "--device", "cpu", "--threads", "1",
                           "--out", str(out), *SMALL])
    results = json.loads((out / "results.json").read_text())["results"]
    assert len(results) == 6
    ok = [r for r in results if r["status"] == "ok"]
    assert {(r["precision"], r["batch_size"]) for r in ok} == {("fp32", 1), ("bf16", 1), ("fp32", 2), ("bf16", 2)}
    for r in ok:
        assert 0 < r["time_min"] <= r["time_median"] <= r["time_max"]
        assert r["memory_mib"] > 100 and r["memory_kind"] == "peak RSS"  # torch alone is > 100 MiB resident
        assert r["speedup"] > 0
    assert all(r["status"] == "skipped" for r in results if r["precision"] == "fp16")  # CPU: noted, not a crash
    table = (out / "table.md").read_text()
    assert "| Backbone | Precision | Batch Size | Time per Iteration | Memory Usage |" in table
    assert len(list(csv.DictReader(open(out / "results.csv")))) == 6
    assert (out / "chart.png").stat().st_size > 10_000
    assert table.strip().splitlines()[-1] in capsys.readouterr().out


@pytest.mark.slow
def test_failed_and_oom_cells_are_reported_and_the_table_completes(tmp_path, monkeypatch):
    # The children import tests.analysis.standin, so the repository root must be on their path.
    monkeypatch.setenv("PYTHONPATH", REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cells = [
        Cell(QUICKSTART, "not_a_timm_model", "fp32", 1, 1, 0, device="cpu", overrides=SMALL, threads=1),
        Cell(QUICKSTART, "recipe", "fp32", 1, 1, 0, device="cpu", threads=1,
             overrides=SMALL + ["model._target_=tests.analysis.standin.OutOfMemoryModel"]),
        Cell(QUICKSTART, "recipe", "fp32", 1, 1, 0, device="cpu", threads=1, overrides=SMALL, image_size=56),
    ]
    results = run_ablation(cells, log=lambda m: None)
    assert [r.status for r in results] == ["failed", "OOM", "ok"]
    assert "Unknown model (not_a_timm_model)" in results[0].reason
    assert "simulated" in results[1].reason and "OutOfMemoryError" in results[1].reason
    assert results[2].time_median > 0


def test_cell_killed_without_result_is_reported(tmp_path):
    # A cell whose process dies before printing a result (bad recipe path) is a 'failed' row with the reason.
    r = run_cell_subprocess(Cell(str(tmp_path / "missing.py"), "recipe", "fp32", 1, 1, 0, device="cpu"))
    assert r.status == "failed" and "missing.py" in r.reason
