"""Decode one encoded image (bytes) into the processor's uint8 RGB array, or raise a one-line DecodeError.

"exact" is transformers' PIL path pixel for pixel; "fast" (the default) decodes at a reduced scale first
(docs/design.md, "Decoding"). EXIF orientation is not applied: transformers does not rotate either.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import pyvips
from PIL import Image

from pipeline.images import MAX_PIXELS, DecodeError, open_image, to_rgb
from vitmae import ViTImageProcessor
from vitmae.errors import InvalidInput, one_line

DecodeMode = Literal["fast", "exact"]
DECODE_MODES = get_args(DecodeMode)
# What the fast mode hands to libvips: formats, and the modes Pillow's header gives, whose 8-bit bands libvips
# decodes to the same values as Pillow. Everything else (16-bit, palette, CMYK, ...) takes Pillow's exact path.
_VIPS_FORMATS = frozenset({"PNG", "WEBP"})
_VIPS_MODES = frozenset({"L", "LA", "RGB", "RGBA"})
# libvips shrinks by at most this, as a JPEG's smallest DCT scale does, and the processor's resize does the rest: a
# box shrink far past 1.5 x a small input (the demo's 32 x 32) moves embeddings by more than a cosine of 0.9999.
_MAX_SHRINK = 8
# One image at a time on the calling thread (the CPU stage owns one core per task, and threads of its own where it
# has more); no operation cache, which would keep every decoded buffer alive. libvips' own messages about a bad file
# would only repeat its error row.
pyvips.concurrency_set(1)
pyvips.cache_set_max(0)
logging.getLogger("pyvips").setLevel(logging.ERROR)


@dataclass(frozen=True)
class DecodeConfig:
    """How untrusted bytes become the model's input."""

    max_pixels: int = MAX_PIXELS
    """refuse images with more pixels than this (decompression bombs), from the header, before decoding; Pillow's own
    limit is raised to it where lower, so that this is the limit that counts"""
    mode: DecodeMode = "fast"
    """fast: decode and shrink at a reduced scale first (JPEG's DCT scaling, libvips for PNG and WebP), embeddings
    within cosine 0.9999 of exact; exact: transformers' pixels, for 2.4 times the CPU (benchmarks/RESULTS.md)"""
    draft_margin: float = 1.5
    """fast mode: keep at least this multiple of the model's input on each side before the processor's resize, so that
    it sees nearly the signal of the full image (at 1.5 a 12-megapixel JPEG decodes at 1/8 scale, not 1/4)"""

    def __post_init__(self) -> None:
        if self.max_pixels < 1:
            raise InvalidInput(f"max_pixels must be at least 1, got {self.max_pixels}")
        if self.mode not in DECODE_MODES:
            raise InvalidInput(f"mode must be one of {', '.join(DECODE_MODES)}, got {self.mode!r}")
        if self.draft_margin < 1:
            raise InvalidInput(
                f"draft_margin must be at least 1 (never below the model's input), got {self.draft_margin}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecodeConfig:
        """A run record's `decode` -> the config; records before the modes had `draft` (False: what is now exact)."""
        data = dict(data)
        if "draft" in data:
            data.setdefault("mode", "fast" if data.pop("draft") else "exact")
        return cls(**data)


@dataclass(frozen=True)
class Decoded:
    """One decoded image."""

    pixels: np.ndarray  # uint8 [H, W, 3] at the processor's size
    width: int  # original image width in pixels (before any reduced-scale decoding)
    height: int  # original image height in pixels


def decode_image(
    data: bytes,
    processor: ViTImageProcessor,
    config: DecodeConfig,
    resize: Callable[[Image.Image], np.ndarray] | None = None,
) -> Decoded:
    """Encoded bytes -> the processor's uint8 RGB array.

    Args:
        data: the file's bytes, in any format Pillow opens (animated images give their first frame).
        processor: its `size`, `resample` and `resize_to_uint8` make the output.
        config: the pixel limit, the mode and the margin of the fast mode's reduced scale.
        resize: replaces `processor.resize_to_uint8` (RGB image -> uint8 [H, W, 3] at the processor's size), as
            pre-training's random resized crop does.

    Returns:
        `Decoded` with pixels uint8 [H, W, 3] (H, W from `processor.size`) and the original width and height.

    Raises:
        DecodeError: empty or unidentifiable bytes, too many pixels (refused from the header, before any decoder
            runs), or a corrupt or truncated file.
    """
    with warnings.catch_warnings():
        # max_pixels replaces Pillow's soft limit, whose long warning would only repeat what we check ourselves.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = open_image(data, config.max_pixels)
        width, height = image.size
        floor = _reduced_floor(processor, config)
        # The largest integer factor that keeps `floor` on each side (1: none), as far as libvips shrinks.
        shrink = max(1, min(width // floor[0], height // floor[1], _MAX_SHRINK)) if floor else 1
        try:
            rgb = None
            # libvips for PNG (faster than Pillow at any size) and for WebP it can shrink; Pillow decodes a WebP
            # too small to shrink in half libvips' time (benchmarks/RESULTS.md, "Small images").
            vips = image.format == "PNG" or shrink > 1
            if floor and vips and image.format in _VIPS_FORMATS and image.mode in _VIPS_MODES:
                rgb = _decode_vips(data, image, shrink)
            if rgb is None:
                if shrink > 1:
                    image.draft("RGB", floor)  # JPEG: the smallest DCT scale still >= floor; a no-op for other formats
                image.load()
                rgb = to_rgb(image)
        except Exception as error:  # untrusted bytes make the decoders raise anything from OSError to struct.error
            raise DecodeError(f"cannot decode {image.format} image: {_decoder_message(error)}") from error
    return Decoded(pixels=(resize or processor.resize_to_uint8)(rgb), width=width, height=height)


def _reduced_floor(processor: ViTImageProcessor, config: DecodeConfig) -> tuple[int, int] | None:
    """The fast mode's smallest reduced (width, height): `draft_margin` x the target; None where nothing is reduced."""
    if config.mode != "fast" or not processor.do_resize:
        return None
    return round(config.draft_margin * processor.size["width"]), round(config.draft_margin * processor.size["height"])


def _decode_vips(data: bytes, image: Image.Image, shrink: int) -> Image.Image | None:
    """PNG or WebP bytes -> RGB at the original size divided by `shrink`.

    WebP without alpha decodes at that scale (libwebp's scaled decoding); other images are box-shrunk while they
    stream, never whole in memory. Alpha is composited on white at full size before the shrink, as transformers
    does (libvips rounds the composite down where Pillow rounds it to the nearest: within one level; opaque alpha
    leaves the colour as it is).

    Args:
        data: the file's bytes.
        image: Pillow's reading of the same header, whose size already passed the pixel limit.
        shrink: the integer factor to reduce by (1: none).

    Returns:
        An 'RGB' image, or None where libvips reads other than 8 bits a band (a 16-bit PNG): Pillow decodes those.

    Raises:
        DecodeError: libvips reads another size from the header than Pillow did.
        pyvips.Error: a corrupt or truncated file.
    """
    source = _vips_open(data)  # the header only
    if (source.width, source.height) != image.size:  # the pixel limit holds for what libvips will decode, too
        raise DecodeError(
            f"libvips reads {source.width} x {source.height} where Pillow read {image.width} x {image.height}"
        )
    if source.format != "uchar":
        return None
    alpha = source.hasalpha()
    if shrink > 1 and image.format == "WEBP" and not alpha:
        pixels = _vips_pixels(_vips_open(data, scale=1 / shrink), 1)
    else:
        pixels = _vips_pixels(source.flatten(background=[255] * (source.bands - 1)) if alpha else source, shrink)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(pixels))


def _vips_open(data: bytes, **options: Any) -> pyvips.Image:
    """A lazily decoding libvips image that reads `data` once, top to bottom, and fails on any error in it."""
    return pyvips.Image.new_from_buffer(data, "", access="sequential", fail_on="error", **options)


def _vips_pixels(image: pyvips.Image, shrink: int) -> np.ndarray:
    """Decodes `image` box-shrunk by `shrink`: uint8 [h, w, bands] (1 or 3 bands)."""
    image = image.shrink(shrink, shrink) if shrink > 1 else image
    return image.numpy().reshape(image.height, image.width, image.bands)


def _decoder_message(error: Exception) -> str:
    """One line of a decoder's error. libvips says which call failed, then in `detail` what the decoder found."""
    details = (
        [line.strip() for line in error.detail.splitlines() if line.strip()] if isinstance(error, pyvips.Error) else []
    )
    return details[0][:200] if details else one_line(error, 200)
