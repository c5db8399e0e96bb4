"""check_datasets: every dataset a recipe names exists, each unusable image file is reported once and left
out of training and evaluation; train_net runs the check before it builds or writes anything."""
import hashlib
import logging
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf
from PIL import Image

from lazydet.config import LazyConfig
from lazydet.data import (DataError, MetadataCatalog, check_datasets, dataset_names, get_detection_dataset_dicts,
                          image_problem, register_coco_instances)

from data_test_utils import encoded_noise_image, save_image, write_coco

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _dataset(tmp_path, name, files):
    """Register `name`: one 40x60 (h x w) json record per file; `files` maps file name -> bytes or None (a
    valid image written by PIL). Returns the image folder."""
    images = [{"id": i + 1, "file_name": f, "height": 40, "width": 60} for i, f in enumerate(files)]
    anns = [{"id": i + 1, "image_id": i + 1, "category_id": 3, "bbox": [1, 1, 9, 9], "iscrowd": 0, "area": 81}
            for i in range(len(files))]
    js, root = write_coco(tmp_path, images, anns)
    for f, data in files.items():
        if data is None:
            save_image(root, f, 40, 60)
        else:
            with open(os.path.join(root, f), "wb") as out:
                out.write(data)
    register_coco_instances(name, js, root)
    return root


def _cfg(*names):
    return OmegaConf.create({"dataloader": {"train": {"dataset": {"names": list(names)}}}})


BAD_FILES = {
    "zero-byte": (b"", "zero-byte file"),
    "not an image": (b"GIF89a garbage", "not a readable image"),
    "truncated jpeg": (encoded_noise_image("JPEG")[:-1000], "truncated JPEG file"),
    "truncated png": (encoded_noise_image("PNG")[:-1000], "truncated PNG file"),
    "size disagrees": (encoded_noise_image("PNG", h=41), "size (h=41, w=60) disagrees with the json's (h=40, w=60)"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_each_bad_image_reported_once_by_file_and_left_out(tmp_path, caplog, case):
    data, reason = BAD_FILES[case]
    name = f"t_check_{case.replace(' ', '_')}"
    root = _dataset(tmp_path, name, {"good.png": None, "bad.img": data})
    with caplog.at_level(logging.WARNING, logger="lazydet.data.check"):
        found = check_datasets(_cfg(name))
    bad_path = os.path.join(root, "bad.img")
    assert list(found[name]) == [bad_path] and reason in found[name][bad_path]
    (line,) = [r.getMessage() for r in caplog.records]  # one line, naming the file and its image id
    assert bad_path in line and reason in line and "image id 2" in line
    assert [r["file_name"] for r in get_detection_dataset_dicts(name)] == [os.path.join(root, "good.png")]


def test_exif_rotation_is_read_from_the_header(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees: the json's size is the displayed (swapped) one
    save_image(tmp_path, "rot.jpg", 40, 60, exif=exif)
    assert image_problem(str(tmp_path / "rot.jpg"), 60, 40) is None
    assert "disagrees" in image_problem(str(tmp_path / "rot.jpg"), 40, 60)


def test_decode_finds_damage_the_header_does_not_show(tmp_path):
    data = bytearray(encoded_noise_image("BMP"))
    path = tmp_path / "short.bmp"
    path.write_bytes(bytes(data[:-500]))  # BMP has no end marker: only decoding sees the missing pixels
    assert image_problem(str(path), 40, 60) is None
    assert "not a readable image" in image_problem(str(path), 40, 60, decode=True)


def test_recipe_dataset_names_in_order():
    cfg = LazyConfig.load(os.path.join(REPO, "configs", "common", "data", "coco_detr.py"))
    assert dataset_names(cfg) == ["coco_2017_train", "coco_2017_val"]  # evaluator's name repeats the test's


def test_first_missing_dataset_is_the_first_error(tmp_path):
    register_coco_instances("t_check_absent", str(tmp_path / "none.json"), str(tmp_path))
    with pytest.raises(DataError, match="did you mean 't_check_absent'"):
        check_datasets(_cfg("t_check_absnt", "t_check_absent"))
    with pytest.raises(DataError, match=r"'t_check_absent': annotation file not found: .*none\.json"):
        check_datasets(_cfg("t_check_absent"))


def test_dataset_without_a_usable_image_stops(tmp_path):
    _dataset(tmp_path, "t_check_allbad", {"a.png": b"", "b.png": b""})
    with pytest.raises(DataError, match=r"'t_check_allbad': none of its 2 images is usable .*a\.png: zero-byte"):
        check_datasets(_cfg("t_check_allbad"))


def _digests(folder):
    return {f: hashlib.sha256(open(os.path.join(folder, f), "rb").read()).hexdigest() for f in os.listdir(folder)}


def test_train_net_names_the_missing_dataset_first_and_leaves_the_run_folder_alone(tmp_path):
    """COCO recipe without COCO on disk: one line naming the json, before the model or any file is made."""
    out = tmp_path / "run"
    out.mkdir()
    for f, text in {"config.yaml": "old: 1\n", "metrics.json": '{"iteration": 4}\n', "last_checkpoint": "m.pth"}.items():
        (out / f).write_text(text)
    before = _digests(out)
    env = dict(os.environ, LAZYDET_DATASETS=str(tmp_path / "datasets"), PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-m", "scripts.train_net", "--config-file",
                           "projects/dino_dinov2/configs/synthetic/dino_dinov2_quickstart.py",
                           f"train.output_dir={out}", "train.device=cpu", "dataloader.train.dataset.names=coco_2017_train",
                           "dataloader.test.dataset.names=coco_2017_val"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    expected = os.path.join(str(tmp_path / "datasets"), "coco", "annotations", "instances_train2017.json")
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"error: dataset 'coco_2017_train': annotation file not found: {expected}"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert _digests(out) == before
