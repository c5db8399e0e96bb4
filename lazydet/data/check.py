"""The start-of-run dataset check: every dataset a recipe names exists, and every image file is usable.

``check_datasets(cfg)`` runs before the model is built, so the first error a user sees is the first thing
wrong. For each dataset named under ``cfg.dataloader`` (train, test, evaluator) it loads and validates the
json (``load_coco_json``: a missing or malformed file is a one-line ``DataError``), then reads the header of
every image (format, size, EXIF orientation and, for JPEG/PNG, the end-of-image marker; no pixel decoding
unless ``decode=True``). Each unusable image (missing, zero-byte, not an image, truncated, size disagreeing
with the json) is reported once, in one line naming the file, and left out of training and evaluation alike
(``bad_images`` in the dataset's metadata, read by ``dataset_records``).
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

from PIL import Image, UnidentifiedImageError
from omegaconf import DictConfig, ListConfig

from lazydet.utils import comm

from .catalog import DataError, DatasetCatalog, MetadataCatalog

logger = logging.getLogger(__name__)

_TAIL_BYTES = 1024  # where the end-of-image marker of a complete file must lie
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}
_SWAPS_AXES = (5, 6, 7, 8)  # EXIF orientations that rotate by 90 degrees
# files read at a time: 2.2x the images/s of one at a time on the synthetic set (docs/data.md), more on NFS
SCAN_THREADS = 8


def dataset_names(cfg) -> list[str]:
    """Dataset names a recipe uses, in recipe order without repeats: every ``names`` of a ``dataset`` node and
    every ``dataset_name`` (the evaluator's) anywhere under ``cfg.dataloader``."""
    found: list[str] = []

    def add(value):
        values = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
        found.extend(str(v) for v in values if str(v) not in found)

    def walk(node):
        if isinstance(node, (dict, DictConfig)):
            for key, value in node.items():
                if key == "dataset" and isinstance(value, (dict, DictConfig)) and "names" in value:
                    add(value["names"])
                elif key == "dataset_name" and value is not None:
                    add(value)
                walk(value)

    walk(cfg.get("dataloader") if isinstance(cfg, (dict, DictConfig)) else None)
    return found


def _truncated(path: str, image_format: str, size: int) -> bool:
    marker = _END_MARKERS.get(image_format)
    if marker is None:
        return False  # no cheap check for this format: only decode=True finds it
    with open(path, "rb") as f:
        f.seek(max(size - _TAIL_BYTES, 0))
        return marker not in f.read()


def image_problem(path: str, height: int, width: int, decode: bool = False) -> str | None:
    """Why the image file at ``path`` cannot serve a record of json size (``height``, ``width``), or None.

    Reads the header only (size, EXIF orientation, the end marker of JPEG/PNG files); ``decode=True`` also
    decodes the pixels, which finds damage inside the data too, about 50x slower.
    """
    try:
        size = os.path.getsize(path)
    except OSError as e:
        return f"cannot be opened ({type(e).__name__}: {e.strerror or e})"
    if size == 0:
        return "zero-byte file"
    try:
        with Image.open(path) as img:
            w, h = img.size
            image_format = img.format
            # only when the header carries EXIF: PNG's getexif() would decode the whole image to find it
            if "exif" in img.info and img.getexif().get(0x0112, 1) in _SWAPS_AXES:
                w, h = h, w
            if decode:
                img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return f"not a readable image ({type(e).__name__}: {e})"
    if not decode and _truncated(path, image_format, size):
        return f"truncated {image_format} file (no end-of-image marker)"
    if (h, w) != (int(height), int(width)):
        return f"size (h={h}, w={w}) disagrees with the json's (h={height}, w={width})"
    return None


def scan_images(records, decode: bool = False, threads: int = SCAN_THREADS) -> dict[str, str]:
    """``{file_name: reason}`` of the unusable images among ``records`` (dicts with ``file_name``, ``height``,
    ``width``, ``image_id``), in record order. Reads ``threads`` files at a time (the reads wait on the disk or
    network file system, not on Python). With several processes each scans a 1/world share and the results
    are merged (collective)."""
    mine = [records[i] for i in range(comm.get_rank(), len(records), comm.get_world_size())]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        reasons = pool.map(lambda r: image_problem(r["file_name"], r["height"], r["width"], decode), mine)
        bad = {r["file_name"]: f"{reason} (image id {r['image_id']})" for r, reason in zip(mine, reasons)
               if reason is not None}
    merged = {}
    for part in comm.all_gather(bad):
        merged.update(part)
    return merged


def check_datasets(cfg, decode: bool = False) -> dict[str, dict[str, str]]:
    """Check every dataset ``cfg`` names (see the module docstring); call it before building the model.

    Raises ``DataError`` (one line) for an unregistered name, a missing or malformed json or image folder, or
    a dataset none of whose images is usable. Logs each unusable image once (main process) and records them as
    the dataset's ``bad_images``, so loaders and evaluator leave them out. Returns ``{name: {file: reason}}``.
    Collective when several processes run: every rank must call it.
    """
    found = {}
    for name in dataset_names(cfg):
        records = DatasetCatalog.get(name)  # the first missing/broken dataset raises its one-line error here
        start = time.perf_counter()
        bad = scan_images(records, decode)
        seconds = time.perf_counter() - start
        meta = MetadataCatalog.get(name)
        meta.bad_images = bad
        meta.checked_records = records  # handed to the first loader (dataset_records): the json is read once
        if comm.is_main_process():
            for file_name, reason in bad.items():
                logger.warning(f"dataset {name!r}: {file_name}: {reason}; left out of training and evaluation")
            logger.info(f"checked {len(records)} images of {name!r} in {seconds:.1f} s "
                        f"({len(records) / max(seconds, 1e-9):.0f} images/s{', decoded' if decode else ''}): "
                        f"{len(bad)} unusable")
        if records and len(bad) == len(records):
            first = next(iter(bad.items()))
            raise DataError(f"dataset {name!r}: none of its {len(records)} images is usable (e.g. {first[0]}: "
                            f"{first[1]}); check its image folder {meta.get('image_root', '')}")
        found[name] = bad
    return found
