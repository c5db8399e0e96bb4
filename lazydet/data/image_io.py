"""Decode an image file the way annotations expect it: EXIF orientation applied, 3-channel RGB."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .catalog import DataError

# Pillow opens 16-bit grayscale PNG/TIFF as "I;16*" (newer versions) or as 32-bit "I" holding 0..65535
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


def read_image(path: str) -> torch.Tensor:
    """Decode ``path`` to uint8 [3, H, W] RGB, H and W as displayed. Grayscale, palette, RGBA (alpha dropped),
    CMYK and 16-bit images are converted (16-bit values v become round(v * 255 / 65535), like the 8-bit copy
    of the same image); EXIF rotation is applied (COCO boxes refer to the displayed image). Raises
    ``DataError`` naming the file when it is missing or cannot be decoded (corrupt, truncated, zero-byte)."""
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in _SIXTEEN_BIT_MODES:  # scaled by the dtype's range, never by the image's own maximum
                arr = np.asarray(img, dtype=np.float32).clip(0, 65535)
                img = Image.fromarray(np.round(arr * (255.0 / 65535.0)).astype(np.uint8), mode="L")
            img = img.convert("RGB")
            arr = np.array(img, dtype=np.uint8)  # copy: decoding is lazy until here
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"cannot decode image {path}: {type(e).__name__}: {e}") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
