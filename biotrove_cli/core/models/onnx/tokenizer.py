"""CLIP's byte-level BPE tokenizer without torch: open_clip's ``SimpleTokenizer`` (``clean``
``lower``, truncation to the context length with the end-of-text token kept), returning numpy.

open_clip's own tokenizer module imports torch at import time, so the ONNX backend carries this
port of its algorithm (from OpenAI's CLIP, MIT licence) and reads the BPE merges the export
bundles (``tokenizer/bpe_simple_vocab_16e6.txt.gz``). Its output equals open_clip's on the same
texts (tested).
"""

from __future__ import annotations

import gzip
import html
from functools import lru_cache
from pathlib import Path
from typing import Any

#: The BPE merges file, as open_clip ships it and as the ONNX export bundles it.
VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"
_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
SPECIAL = ("<start_of_text>", "<end_of_text>")


@lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """Each byte -> a printable unicode character (the BPE works on these)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def _pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return {(a, b) for a, b in zip(word, word[1:], strict=False)}


def clean(text: str) -> str:
    """open_clip's ``lower`` cleaning: ftfy, HTML unescaping, whitespace, lower case."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).strip().lower()


class ClipTokenizer:
    """Texts -> int64 token arrays [n, context_length] (numpy)."""

    def __init__(self, vocab: Path, context_length: int = 77):
        import regex

        merges_text = gzip.open(vocab).read().decode("utf-8").split("\n")
        merges = [tuple(m.split()) for m in merges_text[1 : 49152 - 256 - 2 + 1]]
        units = list(bytes_to_unicode().values())
        tokens = units + [u + "</w>" for u in units] + ["".join(m) for m in merges] + list(SPECIAL)
        self.encoder = {t: i for i, t in enumerate(tokens)}
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.cache: dict[str, str] = {t: t for t in SPECIAL}
        self.pattern = regex.compile("|".join(SPECIAL) + "|" + _PATTERN, regex.IGNORECASE)
        self.sot, self.eot = self.encoder[SPECIAL[0]], self.encoder[SPECIAL[1]]
        self.context_length = context_length

    def bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = (*token[:-1], token[-1] + "</w>")
        pairs = _pairs(word)
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            merged: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    merged.extend(word[i:])
                    break
                merged.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
            if len(word) == 1:
                break
            pairs = _pairs(word)
        out = " ".join(word)
        self.cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for token in self.pattern.findall(clean(text)):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        return ids

    def __call__(self, texts: str | list[str]) -> Any:
        import numpy as np

        if isinstance(texts, str):
            texts = [texts]
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for i, text in enumerate(texts):
            ids = [self.sot, *self.encode(text), self.eot]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot
            out[i, : len(ids)] = ids
        return out
