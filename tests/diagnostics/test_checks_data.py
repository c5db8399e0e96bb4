"""Data checks on batches in the contract's format, with planted faults and a healthy counterpart."""
import torch
from torchvision.ops import box_convert

from lazydet.diagnostics.checks_data import DataSample, InputStatsRecorder


def make_batch(seed=0, n_images=4, boxes_per_image=5, num_classes=4, fmt="cxcywh", size=(120, 160)):
    g = torch.Generator().manual_seed(seed)
    targets = []
    for i in range(n_images):
        xy0 = torch.rand(boxes_per_image, 2, generator=g) * 0.7
        wh = 0.05 + torch.rand(boxes_per_image, 2, generator=g) * 0.25
        xyxy = torch.cat([xy0, (xy0 + wh).clamp(max=1.0)], 1)
        boxes = xyxy if fmt == "xyxy" else box_convert(xyxy, "xyxy", "cxcywh")
        labels = torch.randint(0, num_classes, (boxes_per_image,), generator=g)
        targets.append({"image_id": 100 * seed + i, "labels": labels, "boxes": boxes,
                        "size": torch.tensor(size), "orig_size": torch.tensor(size)})
    images = torch.randint(0, 256, (n_images, 3) + size, dtype=torch.uint8, generator=g)
    return {"images": images, "pixel_mask": torch.ones((n_images,) + size, dtype=torch.bool), "targets": targets}


class Model(torch.nn.Module):
    def __init__(self, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)):
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(mean).view(3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(std).view(3, 1, 1))


def findings(batches, model=None, num_classes=4):
    s = DataSample()
    for b in batches:
        s.observe_batch(b, model or Model())
    return {f.name: f for f in s.findings(num_classes)}


def test_healthy_batches_raise_nothing():
    assert findings([make_batch(seed) for seed in range(5)]) == {}


def test_xyxy_boxes_are_recognised():
    fs = findings([make_batch(seed, fmt="xyxy") for seed in range(5)])
    assert "boxes_look_xyxy" in fs and "boxes_outside_image" not in fs


def test_pixel_boxes_are_not_normalised():
    b = make_batch()
    for t in b["targets"]:
        t["boxes"] = t["boxes"] * 160
    assert "boxes_not_normalised" in findings([b])


def test_outside_and_degenerate_boxes_with_image_ids():
    b = make_batch()
    b["targets"][1]["boxes"][0] = torch.tensor([0.95, 0.5, 0.3, 0.2])  # leaves the image on the right
    b["targets"][2]["boxes"][0] = torch.tensor([0.5, 0.5, 0.0, 0.2])
    fs = findings([b])
    assert "boxes_outside_image" in fs and "boxes_degenerate" in fs and "boxes_look_xyxy" not in fs
    assert "image ids [1, 2]" in fs["boxes_outside_image"].evidence


def test_labels_out_of_range_num_classes_one_too_small():
    fs = findings([make_batch(seed, num_classes=4) for seed in range(3)], num_classes=3)
    assert set(fs) == {"labels_out_of_range"} and fs["labels_out_of_range"].data["max_label"] == 3


def test_empty_targets_and_imbalance():
    b = make_batch(n_images=4)
    for t in b["targets"][:3]:
        t["boxes"], t["labels"] = t["boxes"][:0], t["labels"][:0]
    assert findings([b])["empty_targets"].severity == "warning"
    skewed = [make_batch(seed, boxes_per_image=20) for seed in range(2)]
    for b in skewed:
        for t in b["targets"]:
            t["labels"][:] = 0
    skewed[0]["targets"][0]["labels"][0] = 1
    assert findings(skewed)["class_imbalance"].severity == "info"


def test_inputs_not_normalised_from_model_stats_and_from_backbone_hook():
    assert "inputs_not_normalised" in findings([make_batch()], Model(mean=(0, 0, 0), std=(1, 1, 1)))
    unit_scale = Model(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))  # 0..1 statistics on 0..255 pixels
    assert "inputs_not_normalised" in findings([make_batch()], unit_scale)
    s = DataSample()
    backbone = torch.nn.Identity()
    rec = InputStatsRecorder(backbone, s)
    x = torch.randn(2, 3, 8, 8) * 2 + 0.5
    backbone(x)
    rec.remove()
    backbone(x * 100)  # not recorded after remove()
    assert len(s.input_mean) == 1 and abs(s.input_mean[0] - float(x.mean())) < 1e-6
