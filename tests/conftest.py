"""Shared fixtures: tiny and base geometries, real photographs shipped by scikit-image, an S3 server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from s3server import S3Server, S3ServerError

# Real photographs (and one grayscale scan) that the scikit-image wheel ships in skimage/data.
PHOTO_NAMES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg", "camera.png")

TINY = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8,
    decoder_hidden_size=16, decoder_num_hidden_layers=2, decoder_num_attention_heads=2, decoder_intermediate_size=32,
)
BASE = {}  # the vit-mae-base / vit-base-patch16-224 geometry is the configs' default
VIT_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size", "patch_size")


def vit_kwargs(geometry: dict) -> dict:
    """The encoder-only subset of a ViTMAE geometry, for ViT configs."""
    return {k: v for k, v in geometry.items() if k in VIT_KEYS}


@pytest.fixture(scope="session")
def photo_paths() -> list[Path]:
    import skimage

    folder = Path(os.path.dirname(skimage.__file__)) / "data"
    paths = [folder / name for name in PHOTO_NAMES]
    missing = [p for p in paths if not p.exists()]
    assert not missing, f"scikit-image no longer ships {missing}"
    return paths


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """A real SeaweedFS S3 server on loopback with an empty bucket `test`; sets no environment variables.

    Use `s3.storage_options()` for fsspec/s3fs, `s3.environment()` with monkeypatch for the AWS_* route,
    and a path prefix of your own under s3://test/, since the bucket is shared by the whole session.
    """
    server, failure = S3Server(), None
    try:
        server.start()
    except S3ServerError as err:
        failure = str(err)
    if failure is not None:  # a broken server fails the S3 tests, never skips them
        pytest.fail(f"could not start the SeaweedFS S3 server: {failure}", pytrace=False)
    try:
        server.create_bucket("test")
        yield server
    finally:
        server.stop()
