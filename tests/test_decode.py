"""decode_image: bad bytes refused with one readable line, odd modes to RGB, JPEG draft, the fast and exact modes
against transformers on photographs in every format."""

from __future__ import annotations

import io
import os
import resource
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import pyvips
import torch
import transformers
from pictures import encode, write_zeros_png
from PIL import Image, ImageFile, features
from transformers.image_transforms import convert_to_rgb

import vitmae
from pipeline.embed.decode import DecodeConfig, Decoded, decode_image
from pipeline.images import DecodeError
from vitmae.processor import MAE_PROCESSOR
from vitmae.random_weights import random_model

PROCESSOR = vitmae.ViTImageProcessor.from_dict(
    {**MAE_PROCESSOR, "do_normalize": True, "do_resize": True}  # facebook/vit-mae-base's preprocessor_config.json
)
CONFIG = DecodeConfig()


def skimage_photo(name: str) -> Path:
    import skimage

    return Path(os.path.dirname(skimage.__file__)) / "data" / name


def decode(data: bytes, config: DecodeConfig = CONFIG) -> np.ndarray:
    """decode_image, checking the output contract every test relies on."""
    decoded = decode_image(data, PROCESSOR, config)
    assert isinstance(decoded, Decoded)
    assert decoded.pixels.shape == (224, 224, 3) and decoded.pixels.dtype == np.uint8
    return decoded.pixels


def refusal(data: bytes, config: DecodeConfig = CONFIG) -> str:
    """The DecodeError message for `data`, checked to be one short line."""
    with pytest.raises(DecodeError) as caught:
        decode_image(data, PROCESSOR, config)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message and len(message) < 200, message
    return message


@pytest.fixture(scope="module")
def large_astronaut_jpeg() -> bytes:
    """astronaut.png (512 x 512) upscaled to a 12-megapixel camera's 4032 x 3024 JPEG: draft decodes it at 1/8
    scale, 504 x 378."""
    photo = Image.open(skimage_photo("astronaut.png")).convert("RGB")
    return encode(photo.resize((4032, 3024), Image.Resampling.BICUBIC), "JPEG", quality=90)


# Bad input.


def test_empty_bytes_are_refused():
    assert refusal(b"") == "empty file (0 bytes)"


def test_random_bytes_are_refused():
    assert refusal(np.random.default_rng(0).bytes(4096)) == "not an image file (cannot identify image format)"


def test_text_with_an_image_extension_is_refused(tmp_path):
    path = tmp_path / "holiday.jpg"
    path.write_text("<html><body>404 Not Found</body></html>\n")
    assert refusal(path.read_bytes()) == "not an image file (cannot identify image format)"


def test_truncated_jpeg_is_refused():
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)), "JPEG")
    message = refusal(data[: len(data) // 2])
    assert message.startswith("cannot decode JPEG image: image file is truncated"), message


def test_decompression_bomb_is_refused_quickly_with_little_memory(tmp_path):
    data = write_zeros_png(tmp_path / "bomb.png", 40_000, 40_000)  # 1.6 Gpx, a 1.6 GB 'L' image once decoded
    assert len(data) < 2_000_000
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    message = refusal(data)
    assert time.perf_counter() - start < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 500 * 1024
    assert message.startswith("image too large") and "decompression bomb" in message
    assert "DOS attack" not in message  # not Pillow's own text


def test_max_pixels_is_enforced_from_the_header_without_pillow_warnings(tmp_path):
    data = write_zeros_png(tmp_path / "big.png", 10_000, 9_000)  # 90 Mpx: over Pillow's warning threshold
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        message = refusal(data, DecodeConfig(max_pixels=50_000_000))
    assert message == (
        "image too large: 10000 x 9000 = 90,000,000 pixels, "
        "expected at most max_pixels = 50,000,000 (possible decompression bomb)"
    )
    assert not caught, [str(w.message) for w in caught]


def test_max_pixels_is_the_limit_even_above_pillows_own(tmp_path):
    data = write_zeros_png(tmp_path / "big.png", 20_000, 10_000)  # 200 Mpx: over Pillow's default refusal at 179 Mpx
    assert refusal(data, DecodeConfig(max_pixels=150_000_000)) == (
        "image too large: 20000 x 10000 = 200,000,000 pixels, "
        "expected at most max_pixels = 150,000,000 (possible decompression bomb)"
    )


def test_the_zeros_png_writer_makes_real_images(tmp_path):
    decoded = decode_image(write_zeros_png(tmp_path / "zeros.png", 1000, 700), PROCESSOR, CONFIG)
    assert (decoded.width, decoded.height) == (1000, 700) and not decoded.pixels.any()


def test_config_rejects_a_non_positive_pixel_limit():
    with pytest.raises(ValueError, match="max_pixels must be at least 1, got 0"):
        DecodeConfig(max_pixels=0)


def test_truncated_png_and_webp_are_refused_by_libvips_in_one_line():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (900, 1200, 3), dtype=np.uint8))
    png, webp = encode(image, "PNG", compress_level=1), encode(image, "WEBP", quality=90)
    assert refusal(png[: len(png) // 2]) == "cannot decode PNG image: vipspng: libpng read error"
    # Pillow reads a WebP's header through libwebp's demuxer, which wants the whole file: refused before libvips.
    assert refusal(webp[: len(webp) // 2]) == "cannot read image header: could not create decoder object"


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
def test_decompression_bombs_are_refused_before_any_decoder_runs(fmt, monkeypatch):
    data = encode(Image.new("RGB", (2000, 1500), (10, 20, 30)), fmt)

    def never(*args, **kwargs):
        raise AssertionError("a decoder ran")

    monkeypatch.setattr(pyvips.Image, "new_from_buffer", never)
    monkeypatch.setattr(ImageFile.ImageFile, "load", never)
    assert refusal(data, DecodeConfig(max_pixels=2_999_999)).startswith(
        "image too large: 2000 x 1500 = 3,000,000 pixels"
    )


def test_config_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match=r"mode must be one of fast, exact, got 'quick'"):
        DecodeConfig(mode="quick")


def test_records_before_the_modes_read_back():
    """Run records keep the config; those written before the modes have `draft`, whose False was today's exact."""
    assert DecodeConfig.from_dict({"max_pixels": 10, "draft": False, "draft_margin": 2.0}) == DecodeConfig(
        10, "exact", 2.0
    )
    assert DecodeConfig.from_dict({"max_pixels": 10, "draft": True, "draft_margin": 1.5}).mode == "fast"


def test_config_rejects_a_draft_margin_below_the_target():
    with pytest.raises(ValueError, match=r"draft_margin must be at least 1 \(never below the model's input\), got 0.5"):
        DecodeConfig(draft_margin=0.5)


# Odd modes, all to RGB uint8 [224, 224, 3].


def halves(mode: str, left, right, size: tuple[int, int] = (64, 64)) -> Image.Image:
    """An image whose left half is `left` and right half `right`."""
    image = Image.new(mode, size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


def test_cmyk_jpeg():
    pixels = decode(encode(Image.new("CMYK", (64, 64), (255, 0, 0, 0)), "JPEG"))
    np.testing.assert_allclose(pixels[112, 112], [0, 255, 255], atol=3)  # cyan


def test_16_bit_png_is_scaled_by_its_range_not_clipped():
    values = np.linspace(0, 65535, 256 * 256).reshape(256, 256).astype(np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    pixels = decode(encode(image, "PNG"))
    assert pixels.min() < 10 and 100 < pixels.mean() < 155  # Pillow's own convert makes almost all of it 255
    expected = PROCESSOR.resize_to_uint8(Image.fromarray((values >> 8).astype(np.uint8)).convert("RGB"))
    np.testing.assert_array_equal(pixels, expected)


def test_32_bit_integer_tiff_holding_16_bit_values():
    values = np.linspace(0, 65535, 256 * 256).reshape(256, 256).astype(np.int32)
    data = encode(Image.fromarray(values), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "I"
    expected = PROCESSOR.resize_to_uint8(Image.fromarray((values >> 8).astype(np.uint8)).convert("RGB"))
    np.testing.assert_array_equal(decode(data), expected)


def test_grayscale():
    image = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (64, 1)))
    pixels = decode(encode(image, "PNG"))
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 0] == pixels[..., 2]).all()
    np.testing.assert_array_equal(pixels, PROCESSOR.resize_to_uint8(image.convert("RGB")))


def test_palette():
    image = halves("RGB", (255, 0, 0), (0, 0, 255)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    pixels = decode(encode(image, "PNG"))
    np.testing.assert_array_equal(pixels, PROCESSOR.resize_to_uint8(image.convert("RGB")))
    np.testing.assert_array_equal(pixels[112, [10, 210]], [[255, 0, 0], [0, 0, 255]])


def test_palette_transparency_becomes_white():
    image = halves("P", 0, 1)
    image.putpalette([0, 0, 0, 0, 0, 255])  # index 0 black (transparent), index 1 blue
    pixels = decode(encode(image, "PNG", transparency=0))
    np.testing.assert_array_equal(pixels[112, [10, 210]], [[255, 255, 255], [0, 0, 255]])


def test_rgba_transparent_area_becomes_white():
    pixels = decode(encode(halves("RGBA", (255, 0, 0, 0), (0, 0, 255, 255)), "PNG"))
    np.testing.assert_array_equal(pixels[112, [10, 210]], [[255, 255, 255], [0, 0, 255]])


def test_gray_with_alpha():
    pixels = decode(encode(halves("LA", (0, 0), (0, 255)), "PNG"))
    np.testing.assert_array_equal(pixels[112, [10, 210]], [[255, 255, 255], [0, 0, 0]])


def test_one_bit():
    pixels = decode(encode(halves("1", 1, 0), "PNG"))
    np.testing.assert_array_equal(pixels[112, [10, 210]], [[255, 255, 255], [0, 0, 0]])


@pytest.mark.parametrize(
    "fmt",
    [
        "GIF",
        pytest.param("WEBP", marks=pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")),
    ],
)
def test_animation_gives_its_first_frame(fmt):
    red, blue = Image.new("RGB", (64, 64), (255, 0, 0)), Image.new("RGB", (64, 64), (0, 0, 255))
    data = encode(red, fmt, save_all=True, append_images=[blue], lossless=True)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    np.testing.assert_allclose(decode(data)[112, 112], [255, 0, 0], atol=2)


# Real photographs and the JPEG draft.


@pytest.mark.parametrize("name", ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"])
def test_photographs_match_the_processor_exactly(name):
    path = skimage_photo(name)
    decoded = decode_image(path.read_bytes(), PROCESSOR, CONFIG)
    image = Image.open(path)
    np.testing.assert_array_equal(decoded.pixels, PROCESSOR.resize_to_uint8(image.convert("RGB")))
    assert (decoded.width, decoded.height) == image.size


def resized_sizes(monkeypatch) -> list[tuple[int, int]]:
    """Records the size of every image handed to ViTImageProcessor.resize_to_uint8."""
    sizes, original = [], vitmae.ViTImageProcessor.resize_to_uint8

    def spy(self, image):
        sizes.append(image.size)
        return original(self, image)

    monkeypatch.setattr(vitmae.ViTImageProcessor, "resize_to_uint8", spy)
    return sizes


def test_large_jpeg_decodes_at_a_reduced_scale(large_astronaut_jpeg, monkeypatch):
    sizes = resized_sizes(monkeypatch)
    decoded = decode_image(large_astronaut_jpeg, PROCESSOR, CONFIG)
    decode_image(large_astronaut_jpeg, PROCESSOR, DecodeConfig(mode="exact"))
    assert sizes == [(504, 378), (4032, 3024)]  # 1/8 scale keeps >= 1.5 x 224 on each side
    assert (decoded.width, decoded.height) == (4032, 3024)


def test_a_larger_draft_margin_decodes_at_a_larger_scale(large_astronaut_jpeg, monkeypatch):
    sizes = resized_sizes(monkeypatch)
    decode_image(large_astronaut_jpeg, PROCESSOR, DecodeConfig(draft_margin=2))
    assert sizes == [(1008, 756)]  # 1/8 would give 378 < 2 x 224 rows, so 1/4


def test_draft_is_close_to_the_full_decode(large_astronaut_jpeg):
    draft = decode(large_astronaut_jpeg)
    full = decode(large_astronaut_jpeg, DecodeConfig(mode="exact"))
    mean_abs = np.abs(draft.astype(np.int16) - full.astype(np.int16)).mean()
    a, b = (PROCESSOR.normalize(torch.from_numpy(np.array(x))[None]).flatten() for x in (draft, full))
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=0).item()
    assert mean_abs < 0.6 and cosine > 0.9995, (mean_abs, cosine)  # measured: 0.44 and 0.99992


# The fast mode against transformers' exact preprocessing, on photographs in every format it treats apart.


def with_alpha(image: Image.Image, opaque: bool) -> Image.Image:
    """RGBA: fully opaque, or see-through from left (alpha 0) to right (255)."""
    rgba = image.convert("RGBA")
    if not opaque:
        ramp = np.linspace(0, 255, image.width).round().astype(np.uint8)
        rgba.putalpha(Image.fromarray(np.broadcast_to(ramp, (image.height, image.width)).copy()))
    return rgba


@pytest.fixture(scope="module")
def formats() -> dict[str, bytes]:
    """Two of scikit-image's photographs (one upscaled to 3.8 megapixels), each as JPEG, PNG, PNG with an opaque and
    with a see-through alpha channel, and WebP with and without alpha: every route of the fast mode."""
    photos = {
        "hubble": Image.open(skimage_photo("hubble_deep_field.jpg")).convert("RGB"),  # 1000 x 872, fine detail
        "coffee": Image.open(skimage_photo("coffee.png")).resize((2400, 1600), Image.Resampling.BICUBIC),
    }
    variants = {
        "jpeg": lambda im: encode(im, "JPEG", quality=90),
        "png": lambda im: encode(im, "PNG", compress_level=1),
        "png-opaque-alpha": lambda im: encode(with_alpha(im, True), "PNG", compress_level=1),
        "png-see-through": lambda im: encode(with_alpha(im, False), "PNG", compress_level=1),
        "webp": lambda im: encode(im, "WEBP", quality=90, method=0),
        "webp-see-through": lambda im: encode(with_alpha(im, False), "WEBP", quality=90, method=0),
    }
    return {f"{name} {variant}": make(photo) for name, photo in photos.items() for variant, make in variants.items()}


def transformers_pixels(data: bytes) -> torch.Tensor:
    """transformers' exact preprocessing: PIL decode, convert_to_rgb (alpha on white), ViTImageProcessorPil."""
    rgb = Image.fromarray(convert_to_rgb(Image.open(io.BytesIO(data)), return_numpy=True))
    return transformers.ViTImageProcessorPil(**MAE_PROCESSOR)(rgb, return_tensors="pt")["pixel_values"]


def normalized(data: bytes, mode: str) -> torch.Tensor:
    """decode_image in `mode`, normalised: float32 [1, 3, 224, 224]."""
    return PROCESSOR.normalize(torch.from_numpy(decode(data, DecodeConfig(mode=mode)).copy())[None])


def test_the_exact_mode_gives_transformers_pixels(formats):
    for name, data in formats.items():
        torch.testing.assert_close(normalized(data, "exact"), transformers_pixels(data), atol=1e-6, rtol=0, msg=name)


@pytest.mark.slow  # ~20 s
def test_fast_embeddings_are_within_cosine_0_9999_of_transformers_exact_preprocessing(formats):
    """ViT-B/16 (weights drawn at a trained model's scale), mean-pooled as the job pools."""
    model = random_model(vitmae.ViTMAEModel, vitmae.ViTMAEConfig()).eval()
    names = list(formats)
    fast = torch.cat([normalized(formats[name], "fast") for name in names])
    reference = torch.cat([transformers_pixels(formats[name]) for name in names])
    with torch.inference_mode():
        ours, theirs = (model(x, mask_ratio=0.0).last_hidden_state[:, 1:].mean(1) for x in (fast, reference))
    cosine = torch.nn.functional.cosine_similarity(ours, theirs)
    worst = {name: round(c, 6) for name, c in zip(names, cosine.tolist()) if c < 0.9999}
    assert not worst, worst


@pytest.mark.parametrize(
    ("fmt", "mode", "size"),
    [
        ("PNG", "RGB", (480, 360)),  # shrunk by 5 as it streams: 1800 // 336
        ("PNG", "RGBA", (480, 360)),
        ("WEBP", "RGB", (480, 360)),  # decoded at 1/5 scale
        ("WEBP", "RGBA", (480, 360)),  # decoded whole, then shrunk
        ("JPEG", "RGB", (600, 450)),  # the DCT scale: 1/4
    ],
)
def test_the_fast_mode_shrinks_before_the_resize(fmt, mode, size, monkeypatch):
    data = encode(Image.new(mode, (2400, 1800), (200, 100, 50, 255)[: len(mode)]), fmt)
    sizes = resized_sizes(monkeypatch)
    decoded = decode_image(data, PROCESSOR, CONFIG)
    assert sizes == [size] and (decoded.width, decoded.height) == (2400, 1800)
    np.testing.assert_allclose(decoded.pixels[112, 112], [200, 100, 50], atol=2)


def test_a_webp_too_small_to_shrink_is_decoded_by_pillow_as_the_exact_mode_does(monkeypatch):
    """At 500 x 375 nothing halves above 1.5 x 224: libvips would take twice Pillow's time for the same pixels."""
    data = encode(Image.open(skimage_photo("chelsea.png")).convert("RGB").resize((500, 375)), "WEBP")
    monkeypatch.setattr(pyvips.Image, "new_from_buffer", lambda *a, **k: pytest.fail("libvips decoded it"))
    fast = decode_image(data, PROCESSOR, CONFIG)
    np.testing.assert_array_equal(fast.pixels, decode_image(data, PROCESSOR, DecodeConfig(mode="exact")).pixels)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_see_through_images_are_composited_on_white_before_the_shrink(fmt):
    """Red hidden under the see-through left, opaque blue on the right: the fast mode gives what it gives for the
    same picture already on white. Colour and alpha shrunk apart would show the red at the edge (by 45 levels)."""
    image = halves("RGBA", (255, 0, 0, 0), (0, 0, 255, 255), size=(2400, 1800))
    image.paste((255, 0, 0, 0), (1200, 0, 1202, 1800))  # the edge at x = 1202, off the 5-pixel grid of the shrink
    on_white = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image).convert("RGB")
    fast, expected = (decode(encode(im, fmt, lossless=True)) for im in (image, on_white))
    np.testing.assert_array_equal(fast[112, [10, 210]], [[255, 255, 255], [0, 0, 255]])
    assert np.abs(fast.astype(int) - expected.astype(int)).max() <= 1
