"""A NaN/inf ground-truth box reaching the model is the data's fault: one DataError line naming the image (id and
file), not the matcher's "the predictions diverged" (which blamed the model and suggested lowering the lr)."""
import os

import pytest
import torch

from lazydet.data import DataError
from lazydet.modeling.dino import HungarianMatcher
from tests.folder_state import assert_unchanged, folder_state
from tests.modeling.test_dino_model import tiny_batch, tiny_dino

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _predictions(batch=2, queries=5, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, queries, classes, generator=g), torch.rand(batch, queries, 4, generator=g) * 0.5 + 0.2


def _targets():
    return [{"image_id": 11, "file_name": "images/11.jpg", "labels": torch.tensor([0, 2]),
             "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.2]])},
            {"image_id": 12, "file_name": "images/12.jpg", "labels": torch.tensor([1]),
             "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_target_box_names_the_image(bad):
    logits, boxes = _predictions()
    targets = _targets()
    expected = HungarianMatcher()(logits, boxes, targets)
    targets[0]["boxes"][1, 2] = bad
    with pytest.raises(DataError) as info:
        HungarianMatcher()(logits, boxes, targets)
    assert str(info.value) == (
        f"target boxes of image id 11 (file images/11.jpg) are not finite: 1 of its 2 boxes (indices [1]), e.g. "
        f"[0.6, 0.6, {bad}, 0.2] (cx, cy, w, h); fix the annotations or the dataset/mapper that produced them (the "
        f"predictions are not at fault)")
    targets[0]["boxes"][1, 2] = 0.3  # repaired: the same assignment as before
    assert all(torch.equal(a, b) for got, want in zip(HungarianMatcher()(logits, boxes, targets), expected)
               for a, b in zip(got, want))


def test_diverged_predictions_are_still_blamed_on_the_model():
    logits, boxes = _predictions()
    boxes[1, 3, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="the predictions diverged"):
        HungarianMatcher()(logits, boxes, _targets())


def test_through_the_dino_forward_pass():
    model = tiny_dino().train()
    batch = tiny_batch()
    batch["targets"][1]["boxes"][0, 1] = float("nan")  # image 1 has no file_name: the id alone is named
    with pytest.raises(DataError, match=r"^target boxes of image id 1 are not finite: 1 of its 1 boxes \(indices "
                                        r"\[0\]\), e\.g\. \[0\.5, nan, 0\.5, 0\.4\]"):
        model(batch)


def test_train_net_stops_in_one_line_and_keeps_the_users_files(tmp_path):
    """The tiny quickstart with a mapper that makes the first box of each training image NaN."""
    from lazydet.data import DatasetCatalog
    from scripts import train_net

    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("my notes\n")
    (out / "backbone_weights.bin").write_bytes(b"weights the user keeps here")  # not a run's file: no refusal
    before = folder_state(str(out))
    with pytest.raises(SystemExit) as info:
        train_net.cli(["--config-file", os.path.join(REPO, "tests", "modeling", "nan_box_recipe.py"),
                       f"train.output_dir={out}"])
    message = str(info.value.code)
    assert message.startswith("error: target boxes of image id ") and "\n" not in message
    image_id = int(message.split("image id ")[1].split()[0])
    (record,) = [r for r in DatasetCatalog.get("synthetic_shapes_train16") if r["image_id"] == image_id]
    boxes = len(record["boxes"])
    assert f"(file {record['file_name']}) are not finite: 1 of its {boxes} boxes (indices [0])" in message
    assert "diverged" not in message
    assert_unchanged(str(out), before, allow_new=("config.", "log.txt", "metrics.json", "events.out.tfevents",
                                                  ".lazydet.lock", "plots/"))
