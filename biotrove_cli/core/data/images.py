"""Image files as field photos come: any format, any mode, EXIF-rotated, sometimes broken.

Every failure has a short reason code so that big jobs count them instead of dying:
``missing``, ``empty``, ``not_image``, ``truncated``, ``corrupt``, ``too_large``.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

#: The photo formats of the web and of shards: what ``biotrove shard`` finds by photo id under
#: ``--images``, keeps as the suffix of a downloaded photo, and reads as a sample's image.
WEB_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
#: Every image file the decoder is given by name (classify, eval tables, info): the web's formats
#: and the scanner's.
IMAGE_SUFFIXES = (*WEB_IMAGE_SUFFIXES, ".bmp", ".tif", ".tiff")
MAX_PIXELS = 200_000_000  # decompression-bomb guard: larger images are refused as too_large

REASONS = ("missing", "empty", "not_image", "truncated", "corrupt", "too_large")


class ImageError(Exception):
    """An image that cannot be used; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def is_image_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_bytes(path: str | Path) -> bytes:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise ImageError("missing", str(path)) from exc
    except IsADirectoryError as exc:
        raise ImageError("not_image", f"{path} is a folder") from exc
    except OSError as exc:
        raise ImageError("corrupt", f"{path}: {exc}") from exc
    if not data:
        raise ImageError("empty", str(path))
    return data


def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def _to_rgb(img):
    """Any PIL mode (CMYK, 16-bit, palette, alpha, float) -> 8-bit RGB."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() or 1.0
        scale = 255.0 / (65535.0 if hi > 255 else max(hi, 1.0))
        return Image.fromarray(np.clip(arr * scale, 0, 255).astype("uint8"), "L").convert("RGB")
    if img.mode == "F":
        import numpy as np

        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / ((hi - lo) or 1.0) * 255.0
        return Image.fromarray(arr.astype("uint8"), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


@dataclass
class Decoded:
    image: object  # PIL.Image in RGB
    original_size: tuple[int, int]  # (width, height) as stored, before EXIF rotation
    format: str


def decode(data: bytes, source: str = "", draft: tuple[int, int] | None = None) -> Decoded:
    """Bytes -> RGB PIL image with EXIF orientation applied.

    Args:
        draft: for JPEGs, let libjpeg decode at a reduced scale no smaller than this size
            (``Image.draft``): several times faster when the target is much smaller.

    Raises:
        ImageError: with a reason code.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ImageError("empty", source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            size = img.size
            fmt = img.format or ""
            if size[0] * size[1] > MAX_PIXELS:
                raise ImageError("too_large", f"{source} is {size[0]}x{size[1]} pixels")
            if draft is not None and fmt == "JPEG":
                img.draft("RGB", draft)
            img.load()
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError("not_image", source) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError("too_large", f"{source}: {exc}") from exc
    except OSError as exc:
        text = str(exc).lower()
        reason = "truncated" if "truncat" in text or "premature" in text else "corrupt"
        raise ImageError(reason, f"{source}: {exc}") from exc
    except (SyntaxError, ValueError, TypeError, IndexError, MemoryError) as exc:
        raise ImageError("corrupt", f"{source}: {exc}") from exc
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not lose the photo
        pass
    try:
        rgb = _to_rgb(img)
    except (OSError, ValueError) as exc:
        raise ImageError("corrupt", f"{source}: {exc}") from exc
    return Decoded(image=rgb, original_size=size, format=fmt)
