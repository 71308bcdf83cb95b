"""The model actor called directly, as Ray Data calls it and as benchmarks/actor_path.py does without Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

import vitmae
from pipeline import schema
from pipeline.infer import Embedder, InferConfig, pool


def batch_of(pixels: np.ndarray, errors: list[str]) -> dict[str, np.ndarray]:
    return {
        schema.PATH: np.array([f"file:///photos/{i}.jpg" for i in range(len(errors))]),
        schema.ERROR: np.array(errors),
        schema.PIXELS: pixels,
    }


def test_failed_rows_pass_through_and_the_rest_equal_the_model(model_dir):
    pixels = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    embedder = Embedder(InferConfig(str(model_dir), threads=1))
    mixed = embedder(batch_of(pixels, ["", "not an image file", ""]))
    clean = embedder(batch_of(pixels, ["", "", ""]))
    assert schema.PIXELS not in mixed and list(mixed[schema.ERROR]) == ["", "not an image file", ""]
    processor = vitmae.ViTImageProcessor.from_pretrained(model_dir)
    model = vitmae.ViTMAEModel.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        expected = pool(model(processor.normalize(torch.from_numpy(pixels)), mask_ratio=0.0).last_hidden_state, "mean").numpy()
    np.testing.assert_allclose(clean[schema.EMBEDDING], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(mixed[schema.EMBEDDING][[0, 2]], expected[[0, 2]], rtol=1e-4, atol=1e-5)
    assert not mixed[schema.EMBEDDING][1].any() and np.isnan(mixed[schema.LOSS]).all()


def test_the_actor_needs_no_ray(model_dir):
    """GPU machines without Ray benchmark the actor's code path (benchmarks/actor_path.py)."""
    code = (
        "import sys\n"
        "sys.modules['ray'] = None  # any import of ray now fails\n"
        "import numpy as np\n"
        "from pipeline.infer import Embedder, InferConfig\n"
        f"embedder = Embedder(InferConfig({str(model_dir)!r}, threads=1))\n"
        "pixels = np.zeros((2, 224, 224, 3), dtype=np.uint8)\n"
        "out = embedder({'path': np.array(['a', 'b']), 'error': np.array(['', '']), 'pixels': pixels})\n"
        "sys.exit(0 if out['embedding'].shape == (2, embedder.encoder.config.hidden_size) else 'wrong shape')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
