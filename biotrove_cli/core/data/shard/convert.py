"""One photo -> the JPEG stored in a shard (:func:`process_image`): header probe, EXIF
orientation, resize modes, and a reason code for every failure."""

from __future__ import annotations

import io
import math
import warnings


class ImageFail(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"II*\x00", b"MM\x00*")


def _probe(data: bytes, source: str):
    """Open the image lazily (header only); map every failure to a reason code."""
    from PIL import Image, UnidentifiedImageError

    from biotrove_cli.core.data.images import MAX_PIXELS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        if data.startswith(_IMAGE_SIGNATURES) or data[8:12] == b"WEBP":
            # it says it is an image but its headers are broken
            raise ImageFail("corrupt", f"{source}: unreadable image headers") from exc
        raise ImageFail("not_image", source) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageFail("too_large", f"{source}: {exc}") from exc
    except (OSError, SyntaxError, ValueError, TypeError, IndexError, EOFError) as exc:
        text = str(exc).lower()
        reason = "truncated" if "truncat" in text or "premature" in text else "corrupt"
        raise ImageFail(reason, f"{source}: {exc}") from exc
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise ImageFail("too_large", f"{source} is {w}x{h} pixels")
    if w < 1 or h < 1:
        raise ImageFail("corrupt", f"{source} is {w}x{h} pixels")
    return img


def _orientation(img) -> int:
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # a broken EXIF block is no reason to lose the photo
        return 1


def _jpeg_ends(data: bytes) -> bool:
    return data.rstrip(b"\x00\r\n ")[-2:] == b"\xff\xd9"


def process_image(
    data: bytes, source: str, mode: str, size: int, quality: int
) -> tuple[bytes, tuple[int, int], tuple[int, int], str]:
    """One photo -> (JPEG bytes, original (w, h), stored (w, h), conversion note or '').

    ``none`` passes an RGB/greyscale JPEG through byte for byte after reading its header and
    checking its end marker; anything else (PNG, CMYK, 16-bit, EXIF-rotated) is re-encoded at
    its own size. The other modes decode (JPEGs at a reduced DCT scale when the target is much
    smaller: ``draft``) and re-encode.

    Raises:
        ImageFail: with a reason code of :data:`images.REASONS`.
    """
    from PIL import Image

    from biotrove_cli.core.data.images import ImageError, decode

    img0 = _probe(data, source)
    w, h = img0.size
    fmt = img0.format or ""
    note = "" if img0.mode in ("RGB", "L") else img0.mode
    if mode == "none":
        if fmt == "JPEG" and not note and _orientation(img0) == 1:
            if not _jpeg_ends(data):
                try:  # no end marker: truncated, or trailing bytes after a complete image
                    decode(data, source)
                except ImageError as exc:
                    raise ImageFail(exc.reason, exc.detail) from exc
            return data, (w, h), (w, h), ""
        note = note or (fmt if fmt != "JPEG" else "exif_rotated")
    draft = None
    if fmt == "JPEG":
        side = {"keep_ratio_largest": max(w, h), "center_crop": min(w, h)}.get(mode)
        if side and side > size:
            r = size / side
            draft = (max(1, math.ceil(w * r)), max(1, math.ceil(h * r)))
    try:
        img = decode(data, source, draft=draft).image
    except ImageError as exc:
        raise ImageFail(exc.reason, exc.detail) from exc
    iw, ih = img.size
    # the full-resolution size in the decoded orientation (EXIF may have turned it)
    ow, oh = (w, h) if (iw >= ih) == (w >= h) or w == h else (h, w)
    try:
        if mode == "keep_ratio_largest" and max(ow, oh) > size:
            r = size / max(ow, oh)
            target = (max(1, round(ow * r)), max(1, round(oh * r)))
            if target != img.size:
                img = img.resize(target, Image.BICUBIC)
        elif mode == "center_crop":
            r = size / min(ow, oh)
            tw, th = max(size, round(ow * r)), max(size, round(oh * r))
            if (tw, th) != img.size:
                img = img.resize((tw, th), Image.BICUBIC)
            left, top = (tw - size) // 2, (th - size) // 2
            img = img.crop((left, top, left + size, top + size))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
    except (OSError, ValueError) as exc:
        raise ImageFail("corrupt", f"{source}: {exc}") from exc
    return buf.getvalue(), (w, h), img.size, note
