"""tools.benchmark on the quickstart recipe on CPU: each figure measures what it says (planted delays in the
model and in the data pipeline show up where they should), the parameter count is exact."""
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
def test_benchmark_quickstart_cpu(tmp_path, capsys, monkeypatch):
    import time

    from lazydet.analysis.timing import load_recipe
    from lazydet.config import instantiate
    from lazydet.data.mapper import DetrDatasetMapper
    from lazydet.modeling.dino.dino import DINO

    model_s, data_s = 0.25, 0.6  # planted: per model forward, per image mapped (batch 1)
    forward, mapper = DINO.forward, DetrDatasetMapper.__call__
    monkeypatch.setattr(DINO, "forward", lambda self, batch: (time.sleep(model_s), forward(self, batch))[1])
    monkeypatch.setattr(DetrDatasetMapper, "__call__", lambda self, r: (time.sleep(data_s), mapper(self, r))[1])
    out = tmp_path / "bench.json"
    args = ["--config-file", QUICKSTART, "--batch-size", "1", "--iters", "2", "--warmup", "1", "--image-size", "84",
            "--device", "cpu", "--threads", "1", "--json-out", str(out), "dataloader.train.num_workers=0"]
    benchmark.main(args)
    rep = json.loads(out.read_text())
    excluded, included = rep["train_s_per_iter_data_excluded"], rep["train_s_per_iter_data_included"]
    for t in (excluded, included):
        assert t["min"] <= t["median"] <= t["max"] and t["iters"] == 2
    assert excluded["min"] >= model_s  # the forward is inside the timed step
    assert included["min"] >= model_s + data_s  # loading the batch is too, when data is included ...
    assert excluded["median"] + data_s / 2 < included["median"]  # ... and only then
    assert rep["inference_images_per_s"] <= 1 / model_s
    assert rep["memory"]["peak_rss_mib"] > 100

    model = instantiate(load_recipe(QUICKSTART, ["dataloader.train.num_workers=0"], 1, "cpu").model)
    total = sum(p.numel() for p in model.parameters())
    assert rep["parameters"] == {"total": total, "trainable": sum(p.numel() for p in model.parameters()
                                                                   if p.requires_grad)}
    assert rep["batch_size"] == 1 and rep["image_size"] == 84
    printed = capsys.readouterr().out
    assert f"| train s/iter, data excluded | {excluded['median']:.4f} (min {excluded['min']:.4f}" in printed
    assert f"| inference images/s | {rep['inference_images_per_s']:.2f} |" in printed
    assert f"| parameters | {total:,} (" in printed
