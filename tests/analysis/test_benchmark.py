"""tools.benchmark on the quickstart recipe on CPU: every figure present and positive."""
import json
import os

import pytest

from lazydet.analysis.timing import TimeStats, resize_batch
from tools import benchmark

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICKSTART = os.path.join(REPO, "projects/dino_dinov2/configs/synthetic/dino_dinov2_quickstart.py")


def test_time_stats_median_min_max():
    s = TimeStats.of([3.0, 1.0, 2.0, 10.0])
    assert (s.median, s.min, s.max, s.iters) == (2.5, 1.0, 10.0, 4)


def test_resize_batch_keeps_normalised_boxes_and_masks():
    import torch

    batch = {"images": torch.full((2, 3, 20, 30), 7, dtype=torch.uint8),
             "pixel_mask": torch.ones(2, 20, 30, dtype=torch.bool),
             "targets": [{"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]]), "size": torch.tensor([20, 30])}] * 2}
    out = resize_batch(batch, 28)
    assert out["images"].shape == (2, 3, 28, 28) and out["images"].dtype == torch.uint8
    assert bool((out["images"] == 7).all()) and bool(out["pixel_mask"].all())
    assert out["targets"][0]["size"].tolist() == [28, 28]
    assert torch.equal(out["targets"][0]["boxes"], batch["targets"][0]["boxes"])


@pytest.mark.slow
def test_benchmark_quickstart_cpu(tmp_path, capsys):
    out = tmp_path / "bench.json"
    benchmark.main(["--config-file", QUICKSTART, "--batch-size", "1", "--iters", "2", "--warmup", "1",
                    "--image-size", "84", "--device", "cpu", "--threads", "1", "--json-out", str(out),
                    "dataloader.train.num_workers=0"])
    rep = json.loads(out.read_text())
    for key in ("train_s_per_iter_data_excluded", "train_s_per_iter_data_included"):
        t = rep[key]
        assert 0 < t["min"] <= t["median"] <= t["max"] and t["iters"] == 2
    assert rep["inference_images_per_s"] > 0
    assert rep["memory"]["peak_rss_mib"] > 100
    assert rep["parameters"]["total"] == rep["parameters"]["trainable"] > 100_000
    assert rep["batch_size"] == 1
    assert "| train s/iter, data excluded |" in capsys.readouterr().out
