"""Verification child of the open_clip format, run by :mod:`verify` as
``python -I -c <this file's text> BUNDLE INPUTS.json OUT.safetensors``.

It runs in a fresh Python that cannot import biotrove: the export must load with stock open_clip
alone. So it stays standalone (no biotrove import), and it does its work only as ``__main__``.
"""

from __future__ import annotations

import json
import sys


def main(bundle: str, inputs: str, out: str) -> None:
    """Embed the photos and texts listed in ``inputs`` with the bundle; save to ``out``."""
    sys.modules["biotrove_cli"] = None  # type: ignore[assignment]  # stock open_clip alone
    import open_clip
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    with open(inputs, encoding="utf-8") as fh:
        spec = json.load(fh)
    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + bundle)
    tokenizer = open_clip.get_tokenizer("local-dir:" + bundle)
    model.eval()
    pixels = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in spec["images"]])
    tokens = tokenizer(spec["texts"])
    with torch.no_grad():
        image = model.encode_image(pixels, normalize=True).float()
        text = model.encode_text(tokens, normalize=True).float()
    save_file(
        {
            "pixels": pixels.contiguous(),
            "tokens": tokens.contiguous(),
            "image": image.contiguous(),
            "text": text.contiguous(),
        },
        out,
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
