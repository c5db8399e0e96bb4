"""Decode an image file the way annotations expect it: EXIF orientation applied, 3-channel RGB."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .catalog import DataError


def read_image(path: str) -> torch.Tensor:
    """Return uint8 [3, H, W] RGB. Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit
    images are converted; EXIF rotation is applied (COCO boxes refer to the displayed image)."""
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float32)
                arr = (arr / max(float(arr.max()), 1.0) * 255.0).astype(np.uint8)
                img = Image.fromarray(arr, mode="L")
            img = img.convert("RGB")
            arr = np.array(img, dtype=np.uint8)  # copy: decoding is lazy until here
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot decode image {path}: {type(e).__name__}: {e}") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
