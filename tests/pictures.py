"""Pictures the tests write: encoded bytes of a Pillow image, a huge PNG of zeros made without holding it, and small
distinct crops of scikit-image's photographs."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from PIL import Image


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def write_zeros_png(path: Path, width: int, height: int) -> bytes:
    """A valid 1-bit grayscale PNG of zeros, its IDAT compressed block by block (never the whole image in memory)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    raw_left = height * (1 + (width + 7) // 8)  # each row: filter byte 0, then packed zero bits
    block = bytes(1 << 20)
    compressor = zlib.compressobj(1)
    with open(path, "wb") as file:
        file.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)))
        while raw_left:
            size = min(raw_left, len(block))
            compressed = compressor.compress(block[:size])
            raw_left -= size
            if compressed:
                file.write(chunk(b"IDAT", compressed))
        file.write(chunk(b"IDAT", compressor.flush()) + chunk(b"IEND", b""))
    return path.read_bytes()


def photo(i: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """A distinct small picture: a crop of one of scikit-image's photographs."""
    import skimage

    names = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")
    base = Image.open(Path(skimage.__file__).parent / "data" / names[i % len(names)]).convert("RGB")
    x, y = (37 * i) % (base.width - 200), (23 * i) % (base.height - 150)
    return base.crop((x, y, x + 200, y + 150)).resize(size)


def fill(folder: Path, names: range) -> None:
    folder.mkdir(exist_ok=True)
    for i in names:
        photo(i).save(folder / f"img-{i:03d}.png")
