"""The MAE paper's pre-training augmentation: a random resized crop (bicubic) and a horizontal flip, on PIL images.

The crop follows torchvision's `RandomResizedCrop.get_params` (ten tries at an area in `scale` and a log-uniform
aspect ratio in `ratio`, then a central crop), so crops have the distribution MAE was trained with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipeline.seeding import image_rng


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


@dataclass(frozen=True)
class RandomResizedCrop:
    """A transform for the CPU stage (`PreprocessConfig.transform`): (path, RGB PIL image) -> uint8 [H, W, 3],
    randomly cropped and flipped.

    The crop and the flip are a function of (seed, epoch, path), as the embedding job's masks are of (seed, path):
    each epoch shows other crops, and two runs with the same seed show the same ones.
    """

    size: tuple[int, int]  # (height, width) of the output
    resample: int  # the PIL filter (the processor's)
    config: AugmentConfig = AugmentConfig()
    seed: int = 0
    epoch: int = 0

    def __call__(self, path: str, image: Image.Image) -> np.ndarray:
        rng = image_rng(self.seed, path, self.epoch)
        box = crop_box(image.width, image.height, self.config, rng)
        height, width = self.size
        out = image.resize((width, height), resample=self.resample, box=box, reducing_gap=None)
        if self.config.flip and rng.random() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return np.asarray(out)
