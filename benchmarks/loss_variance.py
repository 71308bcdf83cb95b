"""How much an image's loss score depends on the mask seed, with one mask (K=1) and four disjoint masks (K=4).

Runs the job's model stage (`pipeline.infer.Embedder`) directly on photographs that scikit-image
ships, for several seeds, and reports per image the coefficient of variation (std / mean over seeds)
of the loss, and how stable the images' loss ranking is across seeds (mean Spearman correlation).

    python benchmarks/loss_variance.py --model out/demo/model --seeds 8
"""

from __future__ import annotations

import argparse
import itertools
import logging
from pathlib import Path

import numpy as np

from pipeline import schema
from pipeline.decode import DecodeConfig, decode_image
from pipeline.infer import Embedder, InferConfig
from vitmae import ViTImageProcessor

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg",
          "hubble_deep_field.jpg", "horse.png", "camera.png", "coins.png", "moon.png", "page.png")


def photo_batch(processor: ViTImageProcessor) -> dict[str, np.ndarray]:
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    decoded = [decode_image((folder / name).read_bytes(), processor, DecodeConfig()) for name in PHOTOS]
    return {
        schema.PATH: np.array([f"file://{folder / name}" for name in PHOTOS], dtype=object),
        schema.PIXELS: np.stack([d.pixels for d in decoded]),
        schema.ERROR: np.array([""] * len(PHOTOS), dtype=object),
    }


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="ViTMAE checkpoint folder with preprocessor_config.json")
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    batch = photo_batch(ViTImageProcessor.from_pretrained(args.model))
    print(f"model {args.model}, mask ratio {args.mask_ratio}, {len(PHOTOS)} photographs, {args.seeds} seeds")
    print(f"{'K':>2} {'mean CV of loss':>16} {'max CV':>7} {'mean Spearman across seeds':>27}")
    for samples in (1, 4):
        losses = np.stack([
            Embedder(InferConfig(args.model, args.mask_ratio, samples, seed))(batch)[schema.LOSS]
            for seed in range(args.seeds)
        ])  # [seeds, images]
        cv = losses.std(axis=0) / losses.mean(axis=0)
        rho = np.mean([spearman(losses[i], losses[j]) for i, j in itertools.combinations(range(args.seeds), 2)])
        print(f"{samples:>2} {cv.mean():16.4f} {cv.max():7.4f} {rho:27.4f}")


if __name__ == "__main__":
    main()
