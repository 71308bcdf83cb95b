"""The CPU stage: read each listed object, decode it, resize it (or randomly crop it, for training) to the model's
uint8 input."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from pipeline import schema
from pipeline.embed.decode import DecodeConfig, decode_image
from pipeline.images import DecodeError
from pipeline.retry import read_retrying
from pipeline.storage import Storage
from pipeline.storage_errors import read_error, transient
from vitmae import ViTImageProcessor
from vitmae.errors import one_line

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreprocessConfig:
    """What the CPU stage needs; small enough to ship to every Ray task."""

    processor: dict[str, Any]  # ViTImageProcessor.to_dict() of the model's preprocessor_config.json
    decode: DecodeConfig = field(default_factory=DecodeConfig)  # pixel limit, fast or exact decoding
    storage: Storage = field(default_factory=Storage.from_environment)  # reaches the inputs
    # (path, RGB image) -> uint8 [H, W, 3], in place of the processor's resize: pre-training's random resized crop,
    # drawn from the path so that it is the same on every run. Called from several threads at once.
    transform: Callable[[str, Image.Image], np.ndarray] | None = None
    threads: int = 1  # images decoded at once (PIL releases the GIL); more only where the stage owns more cores


def preprocess_batch(batch: dict[str, np.ndarray], config: PreprocessConfig) -> dict[str, np.ndarray]:
    """Listing rows -> the same rows with pixels, original size and error.

    Args:
        batch: columns of `schema.LISTING_SCHEMA`, N rows.
        config: processor, decode settings and storage options.

    Returns:
        The listing columns plus `pixels` uint8 [N, H, W, 3] (zeros where decoding failed), `width`
        and `height` int32 [N] (0 where it failed), and `error` ("" or a one-line reason) [N].
    """
    processor = ViTImageProcessor.from_dict(config.processor)
    height, width = processor.size["height"], processor.size["width"]
    n = len(batch[schema.PATH])
    pixels = np.zeros((n, height, width, 3), dtype=np.uint8)
    sizes = np.zeros((n, 2), dtype=np.int32)
    errors = np.full(n, "", dtype=object)
    retryable = np.zeros(n, dtype=bool)
    start = time.perf_counter()
    paths = list(batch[schema.PATH])

    def one(i: int, data: bytes | Exception) -> None:
        if isinstance(data, Exception):
            errors[i], retryable[i] = read_error(data), transient(data)
            return
        resize = functools.partial(config.transform, paths[i]) if config.transform else None
        try:
            decoded = decode_image(data, processor, config.decode, resize)
            pixels[i], sizes[i] = decoded.pixels, (decoded.width, decoded.height)
        except DecodeError as err:
            errors[i] = str(err)
        except Exception as err:  # a decoder bug must cost one row, not the job
            logger.exception("unexpected error decoding %s", paths[i])
            errors[i] = f"could not decode: {type(err).__name__}: {one_line(err)}"

    contents = read_retrying(paths, config.storage)
    if config.threads > 1:
        with ThreadPoolExecutor(config.threads) as pool:
            list(pool.map(one, range(n), contents))
    else:
        for i, data in enumerate(contents):
            one(i, data)
    logger.debug("preprocessed %d images in %.2fs", n, time.perf_counter() - start)
    return {
        **batch,
        schema.PIXELS: pixels,
        schema.WIDTH: sizes[:, 0],
        schema.HEIGHT: sizes[:, 1],
        schema.ERROR: errors,
        schema.RETRYABLE: retryable,
    }
