"""The MAE augmentation: crop boxes inside the image with areas and ratios in range, flips, the fallback crop."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.augment import AugmentConfig, RandomResizedCrop, crop_box


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
    image = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8), (64, 1)))  # brighter to the right
    full = AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=True)
    crops = [RandomResizedCrop((32, 32), int(Image.Resampling.NEAREST), full, np.random.default_rng(i))(image.convert("RGB"))
             for i in range(20)]
    assert all(c.shape == (32, 32, 3) and c.dtype == np.uint8 for c in crops)
    rising = [c[0, -1, 0] > c[0, 0, 0] for c in crops]
    assert 0 < sum(rising) < len(crops)  # some flipped, some not
    no_flip = RandomResizedCrop((32, 32), int(Image.Resampling.NEAREST), AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False),
                                np.random.default_rng(0))
    assert all(no_flip(image.convert("RGB"))[0, -1, 0] > 0 for _ in range(10))


@pytest.mark.parametrize("bad", [dict(scale=(0.0, 1.0)), dict(scale=(0.5, 0.2)), dict(scale=(0.2, 1.5)), dict(ratio=(2.0, 1.0))])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError, match="expected a crop"):
        AugmentConfig(**bad)
