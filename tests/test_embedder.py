"""The model actor called directly, as Ray Data calls it and as benchmarks/actor_path.py does without Ray."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import vitmae
from pipeline import schema
from pipeline.embed.embedder import Embedder, pool
from pipeline.embed.infer import InferConfig


def batch_of(pixels: np.ndarray, errors: list[str]) -> dict[str, np.ndarray]:
    return {
        schema.PATH: np.array([f"file:///photos/{i}.jpg" for i in range(len(errors))]),
        schema.ERROR: np.array(errors),
        schema.PIXELS: pixels,
    }


def test_failed_rows_pass_through_and_the_rest_equal_the_model(model_dir):
    pixels = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    embedder = Embedder(str(model_dir), InferConfig(dtype="float32"), threads=1)  # the reference is float32
    mixed = embedder(batch_of(pixels, ["", "not an image file", ""]))
    clean = embedder(batch_of(pixels, ["", "", ""]))
    assert schema.PIXELS not in mixed and list(mixed[schema.ERROR]) == ["", "not an image file", ""]
    processor = vitmae.ViTImageProcessor.from_pretrained(model_dir)
    model = vitmae.ViTMAEModel.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        expected = pool(
            model(processor.normalize(torch.from_numpy(pixels)), mask_ratio=0.0).last_hidden_state, "mean"
        ).numpy()
    np.testing.assert_allclose(clean[schema.EMBEDDING], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mixed[schema.EMBEDDING][[0, 2]], expected[[0, 2]], rtol=1e-4, atol=1e-5)
    assert not mixed[schema.EMBEDDING][1].any() and np.isnan(mixed[schema.LOSS]).all()


def test_the_actor_needs_no_ray(model_dir):
    """GPU machines without Ray benchmark the actor's code path (benchmarks/actor_path.py)."""
    code = (
        "import sys\n"
        "sys.modules['ray'] = None  # any import of ray now fails\n"
        "import numpy as np\n"
        "from pipeline.embed.embedder import Embedder\nfrom pipeline.embed.infer import InferConfig\n"
        f"embedder = Embedder({str(model_dir)!r}, threads=1)\n"
        "pixels = np.zeros((2, 224, 224, 3), dtype=np.uint8)\n"
        "out = embedder({'path': np.array(['a', 'b']), 'error': np.array(['', '']), 'pixels': pixels})\n"
        "sys.exit(0 if out['embedding'].shape == (2, embedder.encoder.config.hidden_size) else 'wrong shape')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_batch_in_slices_equals_one_pass_with_losses_and_failed_rows(model_dir):
    """On a GPU a batch goes over in slices (copying one overlaps the model's work on the last); same numbers."""
    pixels = np.random.default_rng(1).integers(0, 256, (5, 224, 224, 3), dtype=np.uint8)
    batch = batch_of(pixels, ["", "truncated", "", "", ""])
    embedder = Embedder(str(model_dir), InferConfig(mask_ratio=0.75, loss_samples=4), threads=1)
    whole = embedder(batch)
    embedder.slice_rows = 2
    sliced = embedder(batch)
    np.testing.assert_allclose(sliced[schema.EMBEDDING], whole[schema.EMBEDDING], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sliced[schema.LOSS], whole[schema.LOSS], rtol=1e-5)
    assert np.isnan(sliced[schema.LOSS][1]) and not np.isnan(sliced[schema.LOSS][[0, 2, 3, 4]]).any()


@pytest.mark.slow  # torch.compile: ~25 s
def test_a_compiled_actor_gives_the_eager_numbers_at_every_batch_size(model_dir):
    """compile=True builds one dynamic graph: other batch sizes reuse it and the numbers stay the eager ones."""
    config = InferConfig(mask_ratio=0.75, loss_samples=2, dtype="float32")  # bf16 rounds unlike a compiled graph
    eager, compiled = (Embedder(str(model_dir), replace(config, compile=c), threads=2) for c in (False, True))
    rng = np.random.default_rng(2)
    for n in (4, 6, 2):  # batch sizes other than the channel count, which torch would take for the same size
        batch = batch_of(rng.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8), [""] * n)
        expected, got = eager(batch), compiled(batch)
        np.testing.assert_allclose(got[schema.EMBEDDING], expected[schema.EMBEDDING], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got[schema.LOSS], expected[schema.LOSS], rtol=1e-4)


def test_cpu_actors_take_their_threads_up_to_the_cores(model_dir):
    before = torch.get_num_threads()
    try:
        Embedder(str(model_dir), threads=1)
        assert torch.get_num_threads() == 1
        Embedder(str(model_dir), threads=10_000)
        assert torch.get_num_threads() == os.cpu_count()
    finally:
        torch.set_num_threads(before)


def test_the_patch_loss_averages_to_the_loss_and_marks_the_patches_no_mask_hid(model_dir):
    """Four disjoint masks at 0.75 hide every patch once, so the mean of the patch losses is the image's loss; with
    one mask, the quarter of the patches it leaves visible have no loss (NaN). Failed rows keep NaN everywhere."""
    pixels = np.random.default_rng(3).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    batch = batch_of(pixels, ["", "truncated", ""])
    four = Embedder(str(model_dir), InferConfig(mask_ratio=0.75, loss_samples=4, patch_loss=True), threads=1)(batch)
    patches = four[schema.PATCH_LOSS]
    assert patches.dtype == np.float16 and patches.shape == (3, 196)
    assert np.isnan(patches[1]).all() and not np.isnan(patches[[0, 2]]).any()
    np.testing.assert_allclose(patches[[0, 2]].astype(np.float32).mean(axis=1), four[schema.LOSS][[0, 2]], rtol=2e-3)
    one = Embedder(str(model_dir), InferConfig(mask_ratio=0.75, loss_samples=1, patch_loss=True), threads=1)(batch)
    assert (np.isnan(one[schema.PATCH_LOSS][[0, 2]]).sum(axis=1) == 49).all()  # 196 - 147 masked
    np.testing.assert_allclose(
        np.nanmean(one[schema.PATCH_LOSS][[0, 2]].astype(np.float32), axis=1), one[schema.LOSS][[0, 2]], rtol=2e-3
    )
    without = Embedder(str(model_dir), InferConfig(mask_ratio=0.75, loss_samples=4), threads=1)(batch)
    assert schema.PATCH_LOSS not in without
    np.testing.assert_array_equal(without[schema.LOSS], four[schema.LOSS])
