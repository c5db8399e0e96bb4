import hashlib
import json
import os

from lazydet.data import (DatasetCatalog, MetadataCatalog, generate_synthetic_shapes, get_detection_dataset_dicts,
                          register_synthetic_shapes)
from lazydet.data.synthetic import ensure_synthetic_shapes


def _digest(folder):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for f in sorted(files):
            h.update(f.encode())
            h.update(open(os.path.join(root, f), "rb").read())
    return h.hexdigest()


def test_generator_is_deterministic_and_seed_dependent(tmp_path):
    kw = dict(num_images=6, image_size=96)
    generate_synthetic_shapes(str(tmp_path / "a"), seed=3, **kw)
    generate_synthetic_shapes(str(tmp_path / "b"), seed=3, **kw)
    generate_synthetic_shapes(str(tmp_path / "c"), seed=4, **kw)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_generated_dataset_content(tmp_path):
    generate_synthetic_shapes(str(tmp_path), num_images=40, image_size=120, seed=0, max_objects=5)
    data = json.load(open(tmp_path / "annotations.json"))
    per_image = {}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 120 and y + h <= 120
        per_image.setdefault(a["image_id"], []).append(a)
    assert 1 <= min(map(len, per_image.values())) and max(map(len, per_image.values())) <= 5
    assert len({a["category_id"] for a in data["annotations"]}) == 4
    assert sum(len(v) > 1 for v in per_image.values()) > 10  # several objects per image


def test_register_generates_once_and_loads_through_coco(tmp_path):
    register_synthetic_shapes("t_syn", num_images=5, image_size=64, seed=1, root=str(tmp_path))
    recs = get_detection_dataset_dicts("t_syn")
    assert len(recs) == 5
    meta = MetadataCatalog.get("t_syn")
    assert os.path.isfile(meta.json_file) and meta.thing_classes == ["circle", "square", "triangle", "cross"]
    mtime = os.path.getmtime(meta.json_file)
    DatasetCatalog.get("t_syn")
    assert os.path.getmtime(meta.json_file) == mtime  # cached, not regenerated
    assert [p for p in os.listdir(os.path.dirname(os.path.dirname(meta.json_file))) if ".tmp" in p] == []


def test_concurrent_generation_is_safe(tmp_path):
    import multiprocessing as mp

    params = dict(num_images=20, image_size=64, seed=2, classes=["circle", "star"], min_objects=1, max_objects=3,
                  min_scale=0.15, max_scale=0.45, min_visible=0.6)
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=ensure_synthetic_shapes, args=(str(tmp_path),), kwargs=params) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    out = ensure_synthetic_shapes(str(tmp_path), **params)
    assert len(json.load(open(os.path.join(out, "annotations.json")))["images"]) == 20
    assert len(os.listdir(os.path.dirname(out))) == 1
