"""JPEG thumbnails of a run's images for the page, from untrusted bytes: the header is checked against the run's
pixel limit before anything is decoded, as the embedding job does."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from pipeline.images import DecodeError, open_image, to_rgb
from pipeline.render import heatmap_overlay
from vitmae.errors import one_line

MIN_SIZE, MAX_SIZE = 16, 1024  # sides a caller may ask for, in pixels
QUALITY = 85  # JPEG quality: small files that still show detail at thumbnail size


def thumbnail_jpeg(data: bytes, size: int, max_pixels: int, heatmap: np.ndarray | None = None) -> bytes:
    """Encoded image bytes -> JPEG bytes that fit size x size (aspect kept; smaller images are not enlarged), with the
    per-patch loss `heatmap` (float32 [L]) drawn over it when given (`pipeline.render.heatmap_overlay`).

    Raises:
        DecodeError: not an image, a decompression bomb (over `max_pixels`), or a corrupt file.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = open_image(data, max_pixels)
        image.draft("RGB", (size, size))  # JPEG: decode at a reduced DCT scale
        try:
            image = to_rgb(image)
            image.thumbnail((size, size), Image.Resampling.BICUBIC)
        except Exception as error:  # untrusted bytes make Pillow raise anything from OSError to struct.error
            raise DecodeError(f"cannot decode {image.format} image: {one_line(error, 200)}") from error
    if heatmap is not None:
        image = heatmap_overlay(image, heatmap)
    sink = io.BytesIO()
    image.save(sink, format="JPEG", quality=QUALITY)
    return sink.getvalue()
