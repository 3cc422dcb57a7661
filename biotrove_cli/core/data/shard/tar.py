"""The tar writer of the shards (:class:`TarOut`) and the sizes it will reach."""

from __future__ import annotations

import tarfile
from typing import Any


class TarOut:
    """A minimal streaming tar writer: regular files only, fixed metadata (mode 0644, uid 0,
    mtime 0), so identical inputs give byte-identical shards.

    Much faster than :mod:`tarfile` (which copies a TarInfo and builds a PAX header per member,
    and dominates a pass-through job); names longer than 100 bytes fall back to tarfile's PAX
    headers, so any name stays valid.
    """

    _TEMPLATE = tarfile.TarInfo("x").tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")
    _MODE_IDS = b"0000644\0" + _TEMPLATE[108:124]  # mode, uid, gid
    _MTIME = b"00000000000\0"
    _TAIL = _TEMPLATE[156:512]  # type, link name, magic, owner names, devices, prefix
    # the checksum counts its own field as spaces, plus everything but the name and size
    _BASE_SUM = sum(_MODE_IDS) + sum(_MTIME) + 8 * 32 + sum(_TAIL)

    def __init__(self, fh: Any):
        self.fh = fh
        self.offset = 0

    @staticmethod
    def header(name: str, size: int) -> bytes:
        raw = name.encode("utf-8")
        if len(raw) > 100 or size >= 8**11:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = size, 0, 0o644
            return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        size_field = b"%011o\0" % size
        chksum = TarOut._BASE_SUM + sum(raw) + sum(size_field)
        return b"".join(
            (
                raw.ljust(100, b"\0"),
                TarOut._MODE_IDS,
                size_field,
                TarOut._MTIME,
                b"%06o\0 " % chksum,
                TarOut._TAIL,
            )
        )

    def add(self, name: str, data: bytes) -> None:
        self.add_many([(name, data)])

    def add_many(self, members: list[tuple[str, bytes]]) -> None:
        """Append members with one write (a sample's files stay together)."""
        chunks = []
        for name, data in members:
            chunks.append(self.header(name, len(data)))
            chunks.append(data)
            pad = -len(data) % tarfile.BLOCKSIZE
            if pad:
                chunks.append(b"\0" * pad)
        block = b"".join(chunks)
        self.fh.write(block)
        self.offset += len(block)

    def close(self) -> None:
        end = self.offset + 2 * tarfile.BLOCKSIZE
        self.fh.write(b"\0" * (closed_size(self.offset) - self.offset))
        self.offset = end


def member_bytes(members: list[tuple[str, bytes]]) -> int:
    return sum(
        len(TarOut.header(name, len(data))) + -(-len(data) // 512) * 512 for name, data in members
    )


def closed_size(offset: int) -> int:
    rec = tarfile.RECORDSIZE
    return -(-(offset + 2 * tarfile.BLOCKSIZE) // rec) * rec
