"""Helpers that make real faults for the tests: a full file system, a 16-bit PNG."""
import os
import struct
import zlib


def fill(folder, leave: int = 0):
    """Fill the file system holding ``folder`` until fewer than ``leave`` bytes are free."""
    path = os.path.join(folder, ".filler")
    with open(path, "ab", buffering=0) as f:
        block = b"\0" * 4096
        try:
            while os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize > leave:
                f.write(block)
        except OSError:
            pass
    return path


def png16(values, path) -> None:
    """A 16-bit PNG of uint16 ``values`` ((H, W) greyscale or (H, W, 3) RGB), written byte by byte
    (Pillow writes no 16-bit colour PNG, and reads 16-bit greyscale in modes its convert clips)."""
    h, w = values.shape[:2]
    raw = b"".join(b"\0" + values[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    color = 2 if values.ndim == 3 else 0
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
