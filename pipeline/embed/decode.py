"""Decode one encoded image (bytes) into the processor's uint8 RGB array, or raise a one-line DecodeError.

A pure function with no Ray dependency; the CPU stage calls it once per image. Colour conversion follows
transformers' `convert_to_rgb` (alpha composited on white) and the resize is the processor's own, so pixels match
transformers' PIL path. EXIF orientation is deliberately NOT applied: transformers does not rotate either, and
parity with it matters more here than upright images.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from vitmae import ViTImageProcessor
from vitmae.errors import one_line

_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


@dataclass(frozen=True)
class DecodeConfig:
    """How `decode_image` treats untrusted bytes."""

    # Refuse images with more pixels than this (decompression bombs), from the header, before decoding.
    # Pillow's own limit is raised to it where lower, so that this is the limit that counts.
    max_pixels: int = 150_000_000
    draft: bool = True  # let JPEG decode at a reduced DCT scale (1/2, 1/4, 1/8) when much larger than the target
    # A draft keeps at least this multiple of the target size on each side, so that the final PIL resize (which
    # filters over the whole footprint) sees nearly the same signal as from the full-size image. At 1.5 a
    # 12-megapixel photo decodes at 1/8 scale, not 1/4 (the time and the embeddings' agreement with a full
    # decode: benchmarks/decode_draft.py and RESULTS.md).
    draft_margin: float = 1.5

    def __post_init__(self) -> None:
        if self.max_pixels < 1:
            raise ValueError(f"expected max_pixels >= 1, got {self.max_pixels}")
        if self.draft_margin < 1:
            raise ValueError(f"expected draft_margin >= 1 (never below the target size), got {self.draft_margin}")


class DecodeError(ValueError):
    """The bytes are not a decodable image; the message is one readable line."""


@dataclass(frozen=True)
class Decoded:
    """One decoded image."""

    pixels: np.ndarray  # uint8 [H, W, 3] at the processor's size
    width: int  # original image width in pixels (before any draft scaling)
    height: int  # original image height in pixels


def decode_image(
    data: bytes, processor: ViTImageProcessor, config: DecodeConfig, resize: Callable[[Image.Image], np.ndarray] | None = None
) -> Decoded:
    """Encoded bytes -> the processor's uint8 RGB array.

    Args:
        data: the file's bytes, in any format Pillow opens (animated images give their first frame).
        processor: its `size`, `resample` and `resize_to_uint8` make the output.
        config: the pixel limit and the JPEG draft's switch and margin.
        resize: replaces `processor.resize_to_uint8` (RGB image -> uint8 [H, W, 3] at the processor's size), as
            pre-training's random resized crop does.

    Returns:
        `Decoded` with pixels uint8 [H, W, 3] (H, W from `processor.size`) and the original width and height.

    Raises:
        DecodeError: empty or unidentifiable bytes, too many pixels, or a corrupt or truncated file.
    """
    with warnings.catch_warnings():
        # max_pixels replaces Pillow's soft limit, whose long warning would only repeat what we check ourselves.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = open_image(data, config.max_pixels)
        width, height = image.size
        if config.draft and processor.do_resize:
            _draft(image, processor, config.draft_margin)
        try:
            image.load()
            rgb = to_rgb(image)
        except Exception as error:  # untrusted bytes make Pillow raise anything from OSError to struct.error
            raise DecodeError(f"cannot decode {image.format} image: {one_line(error, 200)}") from error
    return Decoded(pixels=(resize or processor.resize_to_uint8)(rgb), width=width, height=height)


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


def open_image(data: bytes, max_pixels: int = DecodeConfig.max_pixels) -> Image.Image:
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


def _draft(image: Image.Image, processor: ViTImageProcessor, margin: float) -> None:
    """Lets a JPEG decode at 1/2, 1/4 or 1/8 scale, still >= `margin` x the target on each side."""
    target = (round(margin * processor.size["width"]), round(margin * processor.size["height"]))
    # Only when a real reduction applies, so that smaller images decode exactly as without a draft.
    if min(image.width // target[0], image.height // target[1]) >= 2:
        image.draft("RGB", target)  # a no-op for formats other than JPEG


def _to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit grayscale -> 'L' by its top byte (Pillow's own conversion clips everything above 255 to white)."""
    values = np.clip(np.asarray(image), 0, 65535)  # [H, W] uint16, or int32 for mode 'I'
    return Image.fromarray((values >> 8).astype(np.uint8))
