"""The per-image masks of the loss passes: a function of (seed, path), covering every patch."""

from __future__ import annotations

import numpy as np

from pipeline.embed.infer import mask_noise


def test_masks_are_a_function_of_seed_and_path_and_cover_every_patch():
    noise = mask_noise("s3://b/a.jpg", 7, 196, 0.75, 4)
    assert np.array_equal(noise, mask_noise("s3://b/a.jpg", 7, 196, 0.75, 4))
    assert not np.array_equal(noise, mask_noise("s3://b/a.jpg", 8, 196, 0.75, 4))
    assert not np.array_equal(noise, mask_noise("s3://b/c.jpg", 7, 196, 0.75, 4))
    visible = np.argsort(noise, axis=1)[:, :49]
    assert sorted(visible.ravel().tolist()) == list(range(196))  # disjoint visible sets, every patch masked 3 times
    assert mask_noise("x", 0, 196, 0.5, 4).shape == (4, 196)  # too many to be disjoint: independent masks
