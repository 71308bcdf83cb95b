"""The MAE paper's pre-training augmentation: a random resized crop (bicubic) and a horizontal flip, on PIL images.

The crop follows torchvision's `RandomResizedCrop.get_params` (ten tries at an area in `scale` and a log-uniform
aspect ratio in `ratio`, then a central crop), so crops have the distribution MAE was trained with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class AugmentConfig:
    """What each training image goes through before the model."""

    scale: tuple[float, float] = (0.2, 1.0)  # share of the image's area a crop covers (MAE: 0.2 to 1)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratios, width / height
    flip: bool = True  # mirror left-right with probability 1/2

    def __post_init__(self) -> None:
        low, high = self.scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"expected a crop scale 0 < min <= max <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"expected a crop ratio 0 < min <= max, got {self.ratio}")


def crop_box(width: int, height: int, config: AugmentConfig, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A random crop of a width x height image as a PIL box (left, top, right, bottom)."""
    area = width * height
    log_ratio = (math.log(config.ratio[0]), math.log(config.ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*config.scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            return left, top, left + w, top + h
    # Ten misses (very elongated images): the largest central crop within the ratio bounds.
    if width / height < config.ratio[0]:
        w, h = width, round(width / config.ratio[0])
    elif width / height > config.ratio[1]:
        w, h = round(height * config.ratio[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


class RandomResizedCrop:
    """A callable for `decode_image`: RGB PIL image -> uint8 [size, size, 3], randomly cropped and flipped."""

    def __init__(self, size: tuple[int, int], resample: int, config: AugmentConfig, rng: np.random.Generator) -> None:
        """size: (height, width) of the output; resample: the PIL filter (the processor's)."""
        self.size = size
        self.resample = resample
        self.config = config
        self.rng = rng

    def __call__(self, image: Image.Image) -> np.ndarray:
        box = crop_box(image.width, image.height, self.config, self.rng)
        height, width = self.size
        out = image.resize((width, height), resample=self.resample, box=box, reducing_gap=None)
        if self.config.flip and self.rng.random() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return np.asarray(out)
