"""ViTImageProcessor against transformers' PIL path on real photographs."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

import vitmae

MAE_BASE_PROCESSOR = {  # facebook/vit-mae-base's preprocessor_config.json
    "do_normalize": True,
    "do_resize": True,
    "feature_extractor_type": "ViTFeatureExtractor",
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "resample": 3,
    "size": 224,
}


@pytest.mark.parametrize("settings", [{}, MAE_BASE_PROCESSOR, {"size": {"height": 96, "width": 128}, "resample": 1}])
def test_matches_transformers_pil_path_on_photographs(settings, photo_paths):
    images = [Image.open(p).convert("RGB") for p in photo_paths]
    ours = vitmae.ViTImageProcessor.from_dict(settings)
    reference = transformers.ViTImageProcessorPil(
        **{k: v for k, v in settings.items() if k != "feature_extractor_type"}
    )
    expected = reference(images, return_tensors="pt")["pixel_values"]
    got = ours(images)["pixel_values"]
    assert got.shape == expected.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_halves_equal_the_whole(photo_paths):
    processor = vitmae.ViTImageProcessor.from_dict(MAE_BASE_PROCESSOR)
    images = [Image.open(p).convert("RGB") for p in photo_paths]
    uint8 = np.stack([processor.resize_to_uint8(im) for im in images])
    assert uint8.dtype == np.uint8 and uint8.shape == (len(images), 224, 224, 3)
    assert torch.equal(processor.normalize(torch.from_numpy(uint8)), processor(images)["pixel_values"])


def test_grayscale_needs_conversion_as_in_transformers(photo_paths):
    gray = Image.open(photo_paths[-1])
    assert gray.mode == "L"
    with pytest.raises(ValueError, match="expected images with 3 channels to match image_mean, got 1"):
        vitmae.ViTImageProcessor()(gray)
    assert vitmae.ViTImageProcessor(do_normalize=False)(gray)["pixel_values"].shape == (1, 1, 224, 224)
    assert vitmae.ViTImageProcessor(do_convert_rgb=True)(gray)["pixel_values"].shape == (1, 3, 224, 224)


def test_save_and_load_with_transformers(tmp_path):
    processor = vitmae.ViTImageProcessor.from_dict(MAE_BASE_PROCESSOR)
    processor.save_pretrained(tmp_path)
    assert vitmae.ViTImageProcessor.from_pretrained(tmp_path) == processor
    reference = transformers.AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    image = np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    torch.testing.assert_close(
        processor(image)["pixel_values"], reference(image, return_tensors="pt")["pixel_values"], atol=1e-5, rtol=0
    )


def test_non_images_are_clear_errors():
    processor = vitmae.ViTImageProcessor()
    with pytest.raises(ValueError, match="expected a PIL image or a uint8 numpy array, got str"):
        processor("not an image")
    with pytest.raises(ValueError, match="expected a uint8 array"):
        processor(np.zeros((4, 4, 3), dtype=np.float64))
    with pytest.raises(ValueError, match="expected size as an int"):
        vitmae.ViTImageProcessor(size={"longest_edge": 3})


def test_normalize_constants_are_made_once_per_device_and_not_pickled():
    processor = vitmae.ViTImageProcessor(image_mean=(0.4, 0.5, 0.6), image_std=(0.2, 0.3, 0.4))
    pixels = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8)
    with torch.inference_mode():
        first = processor.normalize(pixels)
    second = processor.normalize(pixels)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    mean, std = processor._stats(torch.device("cpu"))
    assert not mean.is_inference() and processor._stats(torch.device("cpu"))[0] is mean  # usable with autograd, cached
    copy = pickle.loads(pickle.dumps(processor))
    assert copy == processor and copy._device_stats == {}
    torch.testing.assert_close(copy.normalize(pixels), first, rtol=0, atol=0)
