"""Shared fixtures: tiny and base geometries, real photographs shipped by scikit-image."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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
