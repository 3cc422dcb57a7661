"""Image files as field photos come: any format, any mode, EXIF-rotated, sometimes broken.

Every failure has a short reason code so that big jobs count them instead of dying:
``missing``, ``empty``, ``not_image``, ``truncated``, ``corrupt``, ``too_large``,
``unsupported`` (a photo in an image format biotrove does not read) and ``ambiguous`` (a photo
id that names several files, in case only).

Which files are photos biotrove reads is decided here, once: :func:`check_format` for a file
named directly, :class:`PhotoIndex` for a photo found by its id under a folder.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

#: The photo formats of the web and of shards: what ``biotrove shard`` finds by photo id under
#: ``--images``, keeps as the suffix of a downloaded photo, and reads as a sample's image.
WEB_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
#: Every image file the decoder is given by name (classify, eval tables, info): the web's formats
#: and the scanner's.
IMAGE_SUFFIXES = (*WEB_IMAGE_SUFFIXES, ".bmp", ".tif", ".tiff")
#: Image formats biotrove does not read: a photo in one is reported as ``unsupported`` (rather
#: than as missing, or as not an image), with the formats it does read.
UNSUPPORTED_IMAGE_SUFFIXES = (
    ".gif", ".heic", ".heif", ".avif", ".jp2", ".j2k", ".jxl", ".svg", ".ico", ".psd", ".pdf",
    ".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf", ".raw",
)  # fmt: skip
MAX_PIXELS = 200_000_000  # decompression-bomb guard: larger images are refused as too_large

REASONS = (
    "missing", "empty", "not_image", "truncated", "corrupt", "too_large", "unsupported",
    "ambiguous",
)  # fmt: skip


class ImageError(Exception):
    """An image that cannot be used; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def is_image_path(path: str | Path) -> bool:
    """Whether ``path`` names a photo biotrove reads (by its suffix, in any case)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def is_unsupported_image(path: str | Path) -> bool:
    """Whether ``path`` names a photo in a format biotrove does not read (``.gif``...)."""
    return Path(path).suffix.lower() in UNSUPPORTED_IMAGE_SUFFIXES


def _readable_formats() -> str:
    return ", ".join(s.lstrip(".") for s in IMAGE_SUFFIXES)


def unsupported_error(path: str | Path) -> ImageError:
    """The ``unsupported`` error of a photo in a format biotrove does not read."""
    suffix = Path(path).suffix.lower() or "(none)"
    return ImageError(
        "unsupported",
        f"{path}: {suffix} is not a format biotrove reads ({_readable_formats()}); convert it",
    )


def check_format(path: str | Path) -> None:
    """Raise ``unsupported`` for a photo in a format biotrove does not read; other files are
    left to the decoder (which names a text file ``not_image``)."""
    if is_unsupported_image(path):
        raise unsupported_error(path)


def read_bytes(path: str | Path) -> bytes:
    """The bytes of the photo at ``path``.

    Raises:
        ImageError: ``unsupported`` (by suffix), ``missing``, ``not_image`` (a folder),
            ``corrupt`` (an OS error) or ``empty``.
    """
    check_format(path)
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


def missing_error(path: str | Path) -> ImageError:
    """Why no photo is at ``path``: ``unsupported`` when a file of the same name in a format
    biotrove does not read is there instead (``{photo_id}.gif`` for ``{photo_id}.jpg``), else
    ``missing``. A few ``stat`` calls, no folder listing."""
    p = Path(path)
    if p.name:  # a bare folder or root has no name to give another suffix
        for suffix in UNSUPPORTED_IMAGE_SUFFIXES:
            for variant in (suffix, suffix.upper()):
                cand = p.with_suffix(variant)
                if cand.is_file():
                    return unsupported_error(cand)
    return ImageError("missing", str(path))


class PhotoIndex:
    """Every file under a folder by file stem, listed once: finds a photo by its id or stem.

    An exact stem always wins (``Ab`` finds ``Ab.jpg`` even when ``ab.jpg`` is there too); a
    stem that differs in case only is taken when exactly one file matches it that way, and is
    ``ambiguous`` when several do. A stem whose only files are in formats biotrove does not
    read is ``unsupported``; one with no file at all is ``missing``.
    """

    def __init__(self, folder: str | Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES):
        self.exact: dict[str, str] = {}
        self.folded: dict[str, list[str]] = {}
        self.unsupported: dict[str, str] = {}
        if not Path(folder).is_dir():
            return
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            for name in sorted(files):
                stem, dot, ext = name.rpartition(".")
                if not dot:
                    continue
                path = os.path.join(root, name)
                suffix = f".{ext.lower()}"
                if suffix in suffixes:
                    if stem not in self.exact:  # the first in sorted order
                        self.exact[stem] = path
                        self.folded.setdefault(stem.lower(), []).append(path)
                elif suffix in UNSUPPORTED_IMAGE_SUFFIXES:
                    self.unsupported.setdefault(stem.lower(), path)

    def find(self, *stems: str) -> str:
        """The photo of the first stem that names one (each tried exactly, then in any case).

        Raises:
            ImageError: ``ambiguous``, ``unsupported`` or ``missing`` (for the first stem).
        """
        stems = tuple(s for s in stems if s)
        for stem in stems:
            if stem in self.exact:
                return self.exact[stem]
        for stem in stems:
            matches = self.folded.get(stem.lower(), [])
            if len(matches) == 1:
                return matches[0]
            if matches:
                names = ", ".join(os.path.basename(m) for m in matches[:5])
                raise ImageError(
                    "ambiguous",
                    f"{stem}: {len(matches)} files match it when case is ignored ({names}) "
                    "and none exactly; rename the photo or fix the photo id",
                )
        for stem in stems:
            if stem.lower() in self.unsupported:
                raise unsupported_error(self.unsupported[stem.lower()])
        raise ImageError("missing", stems[0] if stems else "")


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
