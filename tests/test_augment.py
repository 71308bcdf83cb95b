"""The MAE augmentation: crop boxes inside the image with areas and ratios in range, flips, the fallback crop."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.train.augment import AugmentConfig, RandomResizedCrop, crop_box


def test_crop_boxes_stay_inside_with_area_and_ratio_in_range():
    config = AugmentConfig()
    rng = np.random.default_rng(0)
    areas, ratios = [], []
    for _ in range(2000):
        left, top, right, bottom = crop_box(640, 480, config, rng)
        assert 0 <= left < right <= 640 and 0 <= top < bottom <= 480
        areas.append((right - left) * (bottom - top) / (640 * 480))
        ratios.append((right - left) / (bottom - top))
    assert 0.19 <= min(areas) and max(areas) <= 1.0
    assert 3 / 4 - 0.02 <= min(ratios) and max(ratios) <= 4 / 3 + 0.02
    assert np.std(areas) > 0.1  # crops really vary, across the whole range
    assert min(areas) < 0.3 and max(areas) > 0.9


def test_a_very_long_image_falls_back_to_a_central_crop_within_the_ratio():
    left, top, right, bottom = crop_box(1000, 10, AugmentConfig(scale=(0.99, 1.0)), np.random.default_rng(0))
    assert (right - left, bottom - top) == (13, 10) and left == (1000 - 13) // 2


def test_output_size_flips_and_full_crops():
    image = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8), (64, 1))).convert("RGB")  # brighter to the right
    full = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=True)
    crop = RandomResizedCrop((32, 32), int(Image.Resampling.NEAREST), full)
    crops = [crop(f"s3://b/{i}.png", image) for i in range(20)]
    assert all(c.shape == (32, 32, 3) and c.dtype == np.uint8 for c in crops)
    rising = [c[0, -1, 0] > c[0, 0, 0] for c in crops]
    assert 0 < sum(rising) < len(crops)  # some flipped, some not
    no_flip = RandomResizedCrop(
        (32, 32), int(Image.Resampling.NEAREST), AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    )
    assert all(no_flip(f"s3://b/{i}.png", image)[0, -1, 0] > 0 for i in range(10))


def test_crops_are_a_function_of_seed_epoch_and_path():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8))
    crop = RandomResizedCrop((32, 32), int(Image.Resampling.BICUBIC), AugmentConfig(), seed=3, epoch=1)
    first = crop("s3://b/a.png", image)
    assert np.array_equal(
        first, RandomResizedCrop((32, 32), int(Image.Resampling.BICUBIC), AugmentConfig(), 3, 1)("s3://b/a.png", image)
    )
    others = [
        RandomResizedCrop((32, 32), int(Image.Resampling.BICUBIC), AugmentConfig(), seed, epoch)(path, image)
        for seed, epoch, path in ((4, 1, "s3://b/a.png"), (3, 2, "s3://b/a.png"), (3, 1, "s3://b/c.png"))
    ]
    assert not any(np.array_equal(first, other) for other in others)


@pytest.mark.parametrize(
    "bad", [dict(scale=(0.0, 1.0)), dict(scale=(0.5, 0.2)), dict(scale=(0.2, 1.5)), dict(ratio=(2.0, 1.0))]
)
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError, match="expected a crop"):
        AugmentConfig(**bad)
