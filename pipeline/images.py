"""Untrusted image bytes opened safely: the header read and checked against a pixel limit before any decoder runs,
and any Pillow mode converted to RGB as transformers does. The embedding job's decoding, the contact sheets and the
service's thumbnails all open images here."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from vitmae.errors import InvalidInput, one_line

MAX_PIXELS = 150_000_000  # images with more pixels are refused unless a caller gives its own limit
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


class DecodeError(InvalidInput):
    """The bytes are not a decodable image; the message is one readable line."""


def open_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Untrusted bytes -> a lazily decoding Pillow image: reads the header only, and refuses images over `max_pixels`.

    Raises:
        DecodeError: empty or unidentifiable bytes, an unreadable header, or too many pixels.
    """
    if not data:
        raise DecodeError("empty file (0 bytes)")
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow refuses from twice its limit, above ours
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DecodeError("not an image file (cannot identify image format)") from None
    except Image.DecompressionBombError:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        message = f"image too large: over Pillow's limit of {limit:,} pixels (possible decompression bomb)"
        raise DecodeError(message) from None
    except Exception as error:
        raise DecodeError(f"cannot read image header: {one_line(error, 200)}") from error
    width, height = image.size
    if width * height > max_pixels:
        raise DecodeError(
            f"image too large: {width} x {height} = {width * height:,} pixels, "
            f"expected at most max_pixels = {max_pixels:,} (possible decompression bomb)"
        )
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 'RGB' as transformers' `convert_to_rgb` does, plus 16-bit grayscale scaled to 8 bit."""
    if image.mode in _SIXTEEN_BIT_MODES:
        image = _to_8_bit(image)
    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale -> 'L' by its top byte (Pillow's own conversion clips everything above 255 to white)."""
    values = np.clip(np.asarray(image), 0, 65535)  # [H, W] uint16, or int32 for mode 'I'
    return Image.fromarray((values >> 8).astype(np.uint8))
