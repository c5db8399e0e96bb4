"""COCO json loading: category id round trip, and every bad-input case handled or rejected."""
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from lazydet.data import (DataError, DatasetCatalog, DetrDatasetMapper, MapDataset, MetadataCatalog,
                          build_detection_test_loader, load_coco_json, read_image, register_coco_instances)

from data_test_utils import save_image, write_coco


def _img(i, h=40, w=60, fn=None):
    return {"id": i, "file_name": fn or f"{i}.png", "height": h, "width": w}


def _ann(i, img, cat, bbox, crowd=0):
    return {"id": i, "image_id": img, "category_id": cat, "bbox": bbox, "iscrowd": crowd, "area": 1}


def test_category_round_trip_and_metadata(tmp_path):
    js, root = write_coco(tmp_path, [_img(1)], [_ann(10, 1, 7, [1, 2, 10, 5]), _ann(11, 1, 3, [0, 0, 4, 4])],
                         categories=[{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}])
    save_image(root, "1.png", 40, 60)
    recs = load_coco_json(js, root, "t_roundtrip")
    meta = MetadataCatalog.get("t_roundtrip")
    assert meta.thing_classes == ["cat", "dog"]  # sorted by dataset id
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1}
    assert recs[0]["labels"].tolist() == [1, 0]
    back = [meta.thing_contiguous_id_to_dataset_id[k] for k in recs[0]["labels"].tolist()]
    assert back == [7, 3]
    np.testing.assert_allclose(recs[0]["boxes"][0], [1, 2, 11, 7])  # xywh -> xyxy


def test_missing_json_and_image_folder(tmp_path):
    with pytest.raises(DataError, match="annotation file not found: .*nope.json"):
        load_coco_json(str(tmp_path / "nope.json"), str(tmp_path), "t_missing")
    js, _ = write_coco(tmp_path, [], [])
    with pytest.raises(DataError, match="image folder not found: .*noimg"):
        load_coco_json(js, str(tmp_path / "noimg"), "t_missing2")


def test_malformed_json(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [1, 2,}')
    with pytest.raises(DataError, match=r"malformed JSON in .*bad.json at line 1"):
        load_coco_json(str(bad), str(tmp_path), "t_bad")
    bad.write_text('{"images": []}')
    with pytest.raises(DataError, match="lacks the COCO list"):
        load_coco_json(str(bad), str(tmp_path), "t_bad")


def test_bad_annotations_skipped_counted_and_reported(tmp_path, caplog):
    anns = [_ann(1, 1, 3, [10, 10, 5, 5]),           # good
            _ann(2, 99, 3, [1, 1, 5, 5]),            # image id absent
            _ann(3, 1, 42, [1, 1, 5, 5]),            # unknown category
            _ann(4, 1, 3, [1, 1, 0, 5]),             # zero width
            _ann(5, 1, 3, [1, 1, 5, -2]),            # negative height
            _ann(6, 1, 3, [50, 30, 20, 20]),         # partly outside: clipped
            _ann(7, 1, 3, [100, 100, 5, 5]),         # entirely outside
            _ann(8, 2, 3, [1, 1, 5, 5]),             # image file missing
            _ann(9, 1, 3, [1, 1, "x", 3])]           # malformed bbox
    js, root = write_coco(tmp_path, [_img(1), _img(2)], anns)
    save_image(root, "1.png", 40, 60)
    with caplog.at_level(logging.WARNING, logger="lazydet.data.coco"):
        recs = load_coco_json(js, root, "t_badann")
    assert len(recs) == 1
    assert recs[0]["annotation_ids"].tolist() == [1, 6]
    np.testing.assert_allclose(recs[0]["boxes"][1], [50, 30, 60, 40])
    counts = MetadataCatalog.get("t_badann").load_report
    assert sum(counts.values()) == 8 and len(counts) == 7  # two zero-size boxes share a reason
    text = caplog.text
    for fragment in ["absent from 'images'", "category id not in", "zero or negative", "(clipped)",
                     "entirely outside", "file is missing", "not 4 finite numbers"]:
        assert fragment in text
    assert js in text and ": 4, 5" in text  # names the file and the annotation ids
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lazydet.data.coco"):
        load_coco_json(js, root, None)
    assert caplog.text == ""  # reported once


def test_exif_rotation_grayscale_rgba_cmyk(tmp_path):
    root = tmp_path
    # raw pixels 40 (h) x 60 (w) with a red block; EXIF orientation 6 shows it rotated 90 deg clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    save_image(root, "rot.jpg", 40, 60, box=(0, 0, 20, 10), exif=exif)
    img = read_image(str(root / "rot.jpg"))
    assert img.shape == (3, 60, 40)
    # rotating clockwise moves the raw top-left block to the top-right corner
    assert img[0, :20, 30:].float().mean() > 200 and img[0, 40:, :10].float().mean() < 50
    for mode, ext in [("L", "png"), ("RGBA", "png"), ("CMYK", "jpg"), ("P", "png")]:
        save_image(root, f"m.{ext}", 20, 30, mode=mode, fill=(200, 200, 200))
        out = read_image(str(root / f"m.{ext}"))
        assert out.shape == (3, 20, 30) and out.dtype == torch.uint8
        assert abs(out.float().mean().item() - 200) < 8, mode


def test_exif_record_size_mismatch_rejected(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    js, root = write_coco(tmp_path, [_img(1, h=40, w=60, fn="r.jpg")], [_ann(1, 1, 3, [1, 1, 5, 5])])
    save_image(root, "r.jpg", 40, 60, exif=exif)
    recs = load_coco_json(js, root)
    with pytest.raises(DataError, match=r"r.jpg decodes to \(h=60, w=40\) after EXIF rotation .*image id 1"):
        DetrDatasetMapper(is_train=False)(recs[0])


def test_undecodable_image_replaced_in_training_and_listed_as_skipped_in_test(tmp_path, caplog):
    js, root = write_coco(tmp_path, [_img(1), _img(2, fn="broken.png")],
                         [_ann(1, 1, 3, [1, 1, 5, 5]), _ann(2, 2, 3, [1, 1, 5, 5])])
    save_image(root, "1.png", 40, 60)
    (tmp_path / "images" / "broken.png").write_bytes(b"not an image at all")
    recs = load_coco_json(js, root)
    mapper = DetrDatasetMapper(is_train=True)
    ds = MapDataset(recs, mapper, replace_bad=True)
    with caplog.at_level(logging.WARNING, logger="lazydet.data.build"):
        for _ in range(3):
            assert ds[1]["target"]["image_id"] == 1
    assert len(caplog.records) == 1 and "broken.png" in caplog.text  # counted, warned once
    loader = build_detection_test_loader(recs, DetrDatasetMapper(is_train=False), batch_size=2, num_workers=0)
    (batch,) = list(loader)
    assert [t["image_id"] for t in batch["targets"]] == [1] and batch["images"].shape[0] == 1
    (skipped,) = batch["skipped"]
    assert skipped["image_id"] == 2 and skipped["file_name"].endswith("broken.png")
    assert "cannot decode image" in skipped["reason"]


def test_register_and_unknown_name(tmp_path):
    js, root = write_coco(tmp_path, [_img(1)], [_ann(1, 1, 3, [1, 1, 5, 5])])
    save_image(root, "1.png", 40, 60)
    register_coco_instances("t_registered", js, root)
    assert len(DatasetCatalog.get("t_registered")) == 1
    with pytest.raises(DataError, match="did you mean 't_registered'"):
        DatasetCatalog.get("t_registerd")


def test_coco_mini_loads_clean(coco_mini):
    """The in-repo real-COCO fixture: every record and box survives validation, crowd flags and areas kept."""
    import json

    recs = DatasetCatalog.get("coco_mini_val")
    raw = json.load(open(f"{coco_mini}/annotations/instances_val2017.json"))
    assert len(recs) == len(raw["images"]) == 16
    assert sum(len(r["labels"]) for r in recs) == len(raw["annotations"])
    assert sum(int(r["iscrowd"].sum()) for r in recs) == sum(a["iscrowd"] for a in raw["annotations"]) == 3
    by_id = {a["id"]: a for a in raw["annotations"]}
    for r in recs:
        for ann_id, box, area in zip(r["annotation_ids"], r["boxes"], r["areas"]):
            x, y, w, h = by_id[int(ann_id)]["bbox"]
            np.testing.assert_allclose(box, [x, y, x + w, y + h], rtol=1e-6)
            assert area == pytest.approx(by_id[int(ann_id)]["area"], rel=1e-6)
    assert MetadataCatalog.get("coco_mini_val").load_report == {}
    assert len(MetadataCatalog.get("coco_mini_val").thing_classes) == 80


def test_16_bit_png_scaled_by_the_dtype_range_like_its_8_bit_copy(tmp_path):
    """A dark 16-bit image (max 20000 of 65535) must stay dark: v -> round(v * 255 / 65535), as the 8-bit copy."""
    values = np.linspace(0, 20000, 40 * 60).reshape(40, 60).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    Image.fromarray(np.round(values / 257.0).astype(np.uint8)).save(tmp_path / "eight.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")  # really stored as 16 bits
    deep, eight = read_image(str(tmp_path / "deep.png")), read_image(str(tmp_path / "eight.png"))
    assert (deep.int() - eight.int()).abs().max() <= 1
    assert deep.max().item() == 78  # 20000 / 257, not stretched to 255


def test_register_coco_layout_by_path(coco_mini):
    from lazydet.data import register_coco_layout

    assert register_coco_layout("t_layout", coco_mini) == ["t_layout_train", "t_layout_val"]
    assert [len(DatasetCatalog.get(n)) for n in ("t_layout_train", "t_layout_val")] == [6, 16]
    assert MetadataCatalog.get("t_layout_val").image_root == f"{coco_mini}/val2017"
