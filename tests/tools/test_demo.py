"""tools.demo: boxes drawn where the model says, on the original image, for PNG and JPG inputs."""
from pathlib import Path
import json

import numpy as np
import pytest
import torch
from PIL import Image

from lazydet.config import LazyConfig, instantiate
from tools import demo

QUICKSTART = str(Path(__file__).resolve().parents[2] / "projects/dino_dinov2/configs/synthetic/dino_dinov2_quickstart.py")


def _write_image(path, h, w, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 120, (h, w, 3), dtype=np.uint8)).save(path)  # dark: red boxes stand out


def test_draw_puts_box_edges_on_the_given_pixels():
    image = torch.zeros(3, 90, 120, dtype=torch.uint8)
    det = {"boxes": torch.tensor([[10.0, 20.0, 60.0, 80.0], [0.0, 0.0, 5.0, 5.0]]),
           "scores": torch.tensor([0.9, 0.1]), "labels": torch.tensor([1, 0])}
    drawn, kept = demo.draw(image, det, ["a", "b"], threshold=0.5)
    assert kept == [{"box_xyxy": [10.0, 20.0, 60.0, 80.0], "score": 0.9, "label": "b"}]
    red = (drawn[0] == 255) & (drawn[1] == 0) & (drawn[2] == 0)
    assert red[50, 10] and red[50, 60] and red[80, 30]  # left, right, bottom edges
    assert not red[50, 35] and not red[2, 2]  # inside the box; the low-score box is not drawn


def test_demo_end_to_end(tmp_path):
    cfg = LazyConfig.load(QUICKSTART)
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    weights = tmp_path / "model.pth"
    torch.save({"model": model.state_dict()}, weights)
    inputs = [tmp_path / "a.png", tmp_path / "b.jpg"]
    _write_image(inputs[0], 150, 200, 0)
    _write_image(inputs[1], 100, 90, 1)
    out_dir = tmp_path / "out"
    written = demo.main(["--config-file", QUICKSTART, "--weights", str(weights), "--input", *map(str, inputs),
                         "--output", str(out_dir), "--score-threshold", "0", "--device", "cpu"])
    assert [Path(p).name for p in written] == ["a.png", "b.jpg"]
    for src, out in zip(inputs, written):
        original, drawn = Image.open(src), Image.open(out)
        assert drawn.size == original.size  # drawn on the original image, not the resized one
        dets = json.loads(Path(out).with_suffix(".json").read_text())["detections"]
        assert len(dets) == cfg.model.select_box_nums_for_evaluation  # threshold 0 keeps every box
        w, h = original.size
        boxes = np.array([d["box_xyxy"] for d in dets])
        assert (boxes[:, [0, 2]] >= 0).all() and (boxes[:, [0, 2]] <= w).all()
        assert (boxes[:, [1, 3]] >= 0).all() and (boxes[:, [1, 3]] <= h).all()
        assert {d["label"] for d in dets} <= {"circle", "square", "triangle", "cross"}
        assert not np.array_equal(np.asarray(drawn), np.asarray(original))


def test_missing_weights_is_one_clear_error(tmp_path):
    img = tmp_path / "a.png"
    _write_image(img, 50, 50, 0)
    with pytest.raises(SystemExit, match=r"--weights .*nope\.pth: no such file"):
        demo.main(["--config-file", QUICKSTART, "--weights", str(tmp_path / "nope.pth"), "--input", str(img),
                   "--output", str(tmp_path / "o")])
