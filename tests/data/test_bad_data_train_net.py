"""Issue 11 "Bad data, before training", end to end through scripts.train_net: one run over a train and a val
set holding every kind of bad input (tests/data/bad_data_recipe.py, a stand-in detector that predicts the
ground truth), then one test per case: the one line naming the file / annotation ids, the evaluation that does
not crash (AP 100 over what is usable, skipped images counted in the AP table), and the dataset and run
folders whose files are byte-identical afterwards. A missing dataset and an offline hub stop the run."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.data.data_test_utils import encoded_noise_image, save_image, write_coco
from tests.folder_state import assert_unchanged, folder_state

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(REPO, "tests", "data", "bad_data_recipe.py")
RUN_FILES = ("config.", "log.txt", "metrics.json", "events.out.tfevents", "model_", "last_checkpoint",
             "coco_instances_results.json", ".lazydet.lock", "plots/")  # what a run writes into its output folder


def _ann(i, image, bbox, category=3):
    return {"id": i, "image_id": image, "category_id": category, "bbox": bbox, "iscrowd": 0, "area": 1.0}


def _write_16_bit_png(path):
    Image.fromarray(np.linspace(0, 20000, 40 * 60).reshape(40, 60).astype(np.uint16)).save(path)


# file name -> bytes of a bad image, and the reason the start check gives (None: only decoding finds it)
BAD_VAL_IMAGES = {
    "4.png": (b"", "zero-byte file"),
    "5.png": (encoded_noise_image("PNG")[:-1000], "truncated PNG file (no end-of-image marker)"),
    "6.png": (encoded_noise_image("PNG", h=41), "size (h=41, w=60) disagrees with the json's (h=40, w=60)"),
    "7.png": (b"GIF89a garbage", "not a readable image"),
    "8.bmp": (encoded_noise_image("BMP")[:-500], None),  # no end marker in BMP: fails at evaluation, skipped, counted
}


def _write_datasets(root):
    """train: 3 usable images (one 16-bit) + a zero-byte one; val: 3 usable images (one 16-bit) + the 5 bad
    ones above. Each json also holds a NaN bbox, a string bbox and a duplicate annotation id."""
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
    train_images = [{"id": i, "file_name": f"{i}.png", "height": 40, "width": 60} for i in (1, 2, 3, 4)]
    train_anns = [_ann(1, 1, [5, 5, 20, 10]), _ann(2, 2, [10, 10, 20, 20]), _ann(3, 3, [1, 2, math.nan, 4]),
                  _ann(4, 3, [1, 2, "3", 4]), _ann(1, 3, [30, 12, 25, 20]), _ann(5, 3, [2, 3, 30, 30])]
    _, images = write_coco(root / "train", train_images, train_anns)
    for i in (1, 3):
        save_image(images, f"{i}.png", 40, 60)
    _write_16_bit_png(os.path.join(images, "2.png"))
    open(os.path.join(images, "4.png"), "wb").close()

    val_images = [{"id": i, "file_name": f, "height": 40, "width": 60}
                  for i, f in enumerate(["1.png", "2.png", "3.png", *BAD_VAL_IMAGES], start=1)]
    val_anns = [_ann(11, 1, [5, 5, 20, 10]), _ann(12, 1, [1, 2, math.nan, 4]), _ann(13, 2, [10, 10, 20, 20], 7),
                _ann(14, 2, [1, 2, "3", 4]), _ann(15, 3, [2, 3, 30, 30]), _ann(11, 3, [30, 12, 25, 20], 7)]
    val_anns += [_ann(20 + i, i, [5, 5, 10, 10]) for i in range(4, 4 + len(BAD_VAL_IMAGES))]
    _, images = write_coco(root / "val", val_images, val_anns)
    for i in (1, 3):
        save_image(images, f"{i}.png", 40, 60)
    _write_16_bit_png(os.path.join(images, "2.png"))
    for name, (data, _) in BAD_VAL_IMAGES.items():
        with open(os.path.join(images, name), "wb") as f:
            f.write(data)


def _train_net(*argv, env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO, **(env or {})}
    return subprocess.run([sys.executable, "-m", "scripts.train_net", *argv], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One train_net run over the bad datasets; (console output, log.txt, metrics, data folder + its state before,
    run folder + its state before)."""
    tmp = tmp_path_factory.mktemp("bad_data")
    data, out = tmp / "data", tmp / "run"
    _write_datasets(data)
    out.mkdir()
    (out / "notes.txt").write_text("the user's notes\n")
    data_before, out_before = folder_state(str(data)), folder_state(str(out))
    proc = _train_net("--config-file", RECIPE, f"train.output_dir={out}", env={"LAZYDET_BAD_DATA": str(data)})
    console = proc.stdout + proc.stderr
    assert proc.returncode == 0, console[-4000:]
    with open(out / "log.txt") as f:
        log = f.read()
    with open(out / "metrics.json") as f:
        metrics = [json.loads(line) for line in f]
    return console, log, metrics, (data, data_before), (out, out_before)


def _lines_naming(text, fragment):
    return [line for line in text.splitlines() if fragment in line]


def _final_results(metrics):
    return [m for m in metrics if "bbox/AP" in m][-1]


def test_bad_images_are_named_once_and_evaluation_skips_and_counts_them(run):
    console, log, metrics, (data, data_before), (out, out_before) = run
    for split, name, reason in [("train", "4.png", "zero-byte file")] + [
            ("val", name, reason) for name, (_, reason) in BAD_VAL_IMAGES.items() if reason]:
        path = os.path.join(data, split, "images", name)
        (line,) = _lines_naming(console, f"{path}: ")  # once, in one line naming the file, its reason and id
        assert f"dataset 'bad_data_{split}': {path}: {reason}" in line and "left out of training and evaluation" in line
    bmp = os.path.join(data, "val", "images", "8.bmp")
    (line,) = _lines_naming(console, bmp)  # unreadable only when decoded: skipped by the evaluation, not a crash
    assert "(id 8) not scored: cannot decode image" in line
    results = _final_results(metrics)
    assert results["bbox/skipped_images"] == len(BAD_VAL_IMAGES)
    assert f"{len(BAD_VAL_IMAGES)} image(s) could not be read and are not scored" in console
    assert results["bbox/AP"] == pytest.approx(100.0)  # the usable images are all scored
    assert_unchanged(str(data), data_before)
    assert_unchanged(str(out), out_before, allow_new=RUN_FILES)


@pytest.mark.parametrize("split,ids", [("train", "3, 4"), ("val", "12, 14")])
def test_nan_and_string_bboxes_are_skipped_at_load_naming_their_ids(run, split, ids):
    console, log, metrics, (data, data_before), _ = run
    js = os.path.join(data, split, "ann.json")
    (line,) = [line for line in _lines_naming(console, "not 4 finite numbers") if js in line]  # once per json
    assert line.endswith(f"annotation ids: {ids}")
    assert _final_results(metrics)["bbox/AP"] == pytest.approx(100.0)  # evaluation ran over the same records
    assert_unchanged(str(data), data_before)


def test_duplicate_annotation_ids_skipped_and_ground_truth_scores_100(run):
    console, log, metrics, (data, data_before), _ = run
    lines = _lines_naming(console, "duplicate annotation ids")
    assert [line.split(": ")[-1] for line in lines] == ["1", "11"]  # one line per json, naming the id
    assert os.path.join(data, "val", "ann.json") in lines[1]
    assert _final_results(metrics)["bbox/AP"] == pytest.approx(100.0)
    assert_unchanged(str(data), data_before)


def test_16_bit_pngs_pass_the_check_and_are_scored(run):
    console, log, metrics, (data, data_before), _ = run
    for split in ("train", "val"):
        assert not _lines_naming(console, os.path.join(data, split, "images", "2.png"))
    assert _final_results(metrics)["bbox/skipped_images"] == len(BAD_VAL_IMAGES)  # 2.png was scored
    assert_unchanged(str(data), data_before)


def test_offline_coco_recipe_fails_at_once_naming_the_weights_file(tmp_path):
    """COCO recipe, data on disk (the coco_mini fixture), hub offline and no cached weights: one line telling
    which file to put where, from the fast path (no waiting on timm's ~50 s of hub retries). The missing-dataset
    half of this case: tests/data/test_dataset_check.py::test_train_net_names_the_missing_dataset_first..."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("the user's notes\n")
    before = folder_state(str(out))
    proc = _train_net("--config-file", "projects/dino_dinov2/configs/COCO/dino_dinov2_s_12ep.py",
                      f"train.output_dir={out}", "train.device=cpu", "dataloader.train.dataset.names=coco_mini_train",
                      "dataloader.test.dataset.names=coco_mini_val", "dataloader.train.num_workers=0",
                      env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
                           "TORCH_HOME": str(tmp_path / "torch")})
    assert proc.returncode != 0
    line = proc.stderr.strip().splitlines()[-1]
    weights = os.path.join(str(tmp_path / "torch"), "hub", "checkpoints",
                           "vit_small_patch14_dinov2.lvd142m.safetensors")
    assert line.startswith("error: instantiate model.backbone.net:") and weights in line, proc.stderr[-3000:]
    assert "HF_HUB_OFFLINE is set" in line and "Traceback" not in proc.stderr
    assert_unchanged(str(out), before, allow_new=RUN_FILES)
