"""The per-image masks of the loss passes: a function of (seed, path), covering every patch."""

from __future__ import annotations

import numpy as np

from pipeline.embed.infer import InferConfig, mask_noise


def test_masks_are_a_function_of_seed_and_path_and_cover_every_patch():
    noise = mask_noise("s3://b/a.jpg", 7, 196, 0.75, 4)
    assert np.array_equal(noise, mask_noise("s3://b/a.jpg", 7, 196, 0.75, 4))
    assert not np.array_equal(noise, mask_noise("s3://b/a.jpg", 8, 196, 0.75, 4))
    assert not np.array_equal(noise, mask_noise("s3://b/c.jpg", 7, 196, 0.75, 4))
    visible = np.argsort(noise, axis=1)[:, :49]
    assert sorted(visible.ravel().tolist()) == list(range(196))  # disjoint visible sets, every patch masked 3 times
    assert mask_noise("x", 0, 196, 0.5, 4).shape == (4, 196)  # too many to be disjoint: independent masks


def test_auto_dtype_is_the_tables_else_bf16_on_gpus_and_cpus_with_bf16_units():
    auto, fixed = InferConfig(), InferConfig(dtype="float16")
    assert [auto.resolved_dtype(gpu, cpu) for gpu, cpu in ((True, False), (False, True), (False, False))] == [
        "bfloat16",
        "bfloat16",
        "float32",
    ]
    assert auto.resolved_dtype(False, True, table="float32") == "float32"  # a nightly run keeps its table's
    assert auto.resolved_dtype(False, False, table="bfloat16") == "bfloat16"  # a GPU table goes on in bf16 on CPUs
    assert auto.resolved_dtype(True, False, table="auto") == "bfloat16"  # recorded unresolved: as if none
    assert fixed.resolved_dtype(True, True, table="float32") == "float16"  # a setting is a setting
