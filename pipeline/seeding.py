"""Randomness that is a pure function of a seed and an image's path, so that reruns, other batch sizes, other
workers and other machines draw the same for the same image."""

from __future__ import annotations

import hashlib

import numpy as np


def image_rng(seed: int, path: str, *salt: int) -> np.random.Generator:
    """A generator seeded by (seed, path, *salt): the embedding job's masks use (seed, path), pre-training's crops
    (seed, path, epoch)."""
    key = "\0".join([str(seed), path, *map(str, salt)])
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))
