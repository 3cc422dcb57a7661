"""open_clip's eval transform in numpy: resize (PIL, the same resampling), center crop,
normalisation; equal to open_clip's tensors on the same decoded image (tested to 1e-5).

open_clip (``transform.image_transform``, ``is_train=False``) does, for a square size S:

* ``resize_mode`` ``shortest`` (the default): torchvision ``Resize(S)`` (the shorter side to S,
  the longer to ``int(S * long / short)``), then ``CenterCrop(S)``;
* ``squash``: ``Resize((S, S))``;

with ``interpolation`` bicubic (default) or bilinear, then RGB, ``ToTensor`` (/255) and
``Normalize(mean, std)``. torchvision resizes a PIL image with PIL's own ``Image.resize``, so
this module does too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from biotrove_cli.core.errors import ModelLoadError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _square(size: Any) -> int:
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or int(size[0]) != int(size[1]):
            raise ModelLoadError(
                f"the ONNX bundle's input size {list(size)} is not square",
                hint="the ONNX backend preprocesses square inputs; use the open_clip export",
            )
        return int(size[0])
    return int(size)


class NumpyPreprocess:
    """A decoded PIL image -> float32 array [3, S, S], as open_clip's eval transform."""

    def __init__(self, cfg: Mapping[str, Any]):
        from PIL import Image

        self.size = _square(cfg.get("size", 224))
        self.mode = str(cfg.get("resize_mode") or "shortest")
        if self.mode not in ("shortest", "squash"):
            raise ModelLoadError(
                f"the ONNX bundle's resize_mode {self.mode!r} is not supported",
                hint="the ONNX backend does shortest and squash; use the open_clip export",
            )
        interpolation = str(cfg.get("interpolation") or "bicubic")
        self.resample = Image.BILINEAR if interpolation == "bilinear" else Image.BICUBIC
        import numpy as np

        mean = cfg.get("mean") or OPENAI_MEAN
        std = cfg.get("std") or OPENAI_STD
        mean = mean if isinstance(mean, (list, tuple)) else (mean,) * 3
        std = std if isinstance(std, (list, tuple)) else (std,) * 3
        # (x / 255 - mean) / std == x * scale - shift, in one pass over the pixels
        self.scale = (1.0 / (255.0 * np.asarray(std, dtype=np.float32))).reshape(3, 1, 1)
        self.shift = np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)
        self.shift = self.shift.reshape(3, 1, 1)

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the resize step (torchvision's rule for an int size)."""
        s = self.size
        if self.mode == "squash":
            return s, s
        if width <= height:
            return s, int(s * height / width)
        return int(s * width / height), s

    def __call__(self, img: Any) -> Any:
        import numpy as np

        w, h = self.resized_size(*img.size)
        if (w, h) != img.size:
            img = img.resize((w, h), self.resample)
        s = self.size
        if self.mode == "shortest" and (w, h) != (s, s):
            top = int(round((h - s) / 2.0))
            left = int(round((w - s) / 2.0))
            img = img.crop((left, top, left + s, top + s))
        if img.mode != "RGB":
            img = img.convert("RGB")
        arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1)
        return arr * self.scale - self.shift
