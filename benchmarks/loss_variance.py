"""How much an image's loss score depends on the mask seed, with one mask (K=1) and four disjoint masks (K=4), and
what the K masks cost.

Runs the job's model stage (`pipeline.embed.embedder.Embedder`) directly on photographs that scikit-image
ships, for several seeds, and reports per image the coefficient of variation (std / mean over seeds)
of the loss, and how stable the images' loss ranking is across seeds (mean Spearman correlation). Then it times
the model stage on the same batch, on one thread as the job's CPU actors run: embeddings only (mask ratio 0),
and embeddings with the loss from K = 1 and K = 4 masks (median of --rounds, seconds per image).

    python -m benchmarks.loss_variance --model out/demo/pretrain/model --seeds 8
    python -m benchmarks.loss_variance --model base --seeds 0      # only the cost, for a random ViT-B/16 MAE
"""

from __future__ import annotations

import argparse
import itertools
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import MODELS, hardware, photo_folder, save_checkpoint
from pipeline import schema
from pipeline.embed.decode import DecodeConfig, decode_image
from pipeline.embed.embedder import Embedder
from pipeline.embed.infer import InferConfig
from vitmae import ViTImageProcessor

PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "retina.jpg",
    "hubble_deep_field.jpg",
    "horse.png",
    "camera.png",
    "coins.png",
    "moon.png",
    "page.png",
)


def photo_batch(processor: ViTImageProcessor, copies: int = 1) -> dict[str, np.ndarray]:
    """The photographs decoded as the job decodes them, `copies` times over under distinct paths (so distinct masks)."""
    folder = photo_folder()
    pixels = [decode_image((folder / name).read_bytes(), processor, DecodeConfig()).pixels for name in PHOTOS]
    paths = [f"file://{folder / name}" + (f"?{i}" if i else "") for i in range(copies) for name in PHOTOS]
    return {
        schema.PATH: np.array(paths, dtype=object),
        schema.PIXELS: np.stack(pixels * copies),
        schema.ERROR: np.array([""] * len(paths), dtype=object),
    }


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def seed_noise(model: str, batch: dict[str, np.ndarray], mask_ratio: float, seeds: int) -> None:
    print(f"{'K':>2} {'mean CV of loss':>16} {'max CV':>7} {'mean Spearman across seeds':>27}")
    for samples in (1, 4):
        losses = np.stack(
            [Embedder(model, InferConfig(mask_ratio, samples, seed))(batch)[schema.LOSS] for seed in range(seeds)]
        )  # [seeds, images]
        cv = losses.std(axis=0) / losses.mean(axis=0)
        rho = np.mean([spearman(losses[i], losses[j]) for i, j in itertools.combinations(range(seeds), 2)])
        print(f"{samples:>2} {cv.mean():16.4f} {cv.max():7.4f} {rho:27.4f}")


def cost(model: str, batch: dict[str, np.ndarray], mask_ratio: float, rounds: int) -> None:
    """Seconds per image of the model stage on one thread: embeddings only, and with the loss from K masks."""
    settings = {
        "embeddings only": InferConfig(0.0),
        "K = 1": InferConfig(mask_ratio, 1),
        "K = 4": InferConfig(mask_ratio, 4),
    }
    times = {}
    for name, config in settings.items():
        embedder = Embedder(model, config, threads=1)
        embedder(batch)  # warm-up
        seconds = []
        for _ in range(rounds):
            start = time.perf_counter()
            embedder(batch)
            seconds.append((time.perf_counter() - start) / len(batch[schema.PATH]))
        times[name] = statistics.median(seconds)
    print(f"{'model stage, 1 thread':>22} {'s per image':>12} {'vs embeddings only':>19} {'vs K = 1':>9}")
    for name, seconds in times.items():
        print(
            f"{name:>22} {seconds:12.4f} {seconds / times['embeddings only']:18.2f}x {seconds / times['K = 1']:8.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        required=True,
        help="ViTMAE checkpoint folder with preprocessor_config.json, or 'base' for a random ViT-B/16 MAE",
    )
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--seeds", type=int, default=8, help="seeds for the score's noise (0: skip it)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of the model stage (0: skip the timing)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        model = save_checkpoint(Path(tmp), MODELS["base"]) if args.model == "base" else args.model
        batch = photo_batch(ViTImageProcessor.from_pretrained(model))
        print(f"model {args.model}, mask ratio {args.mask_ratio}, {len(PHOTOS)} photographs; {hardware()}")
        if args.seeds:
            seed_noise(model, batch, args.mask_ratio, args.seeds)
        if args.rounds:
            cost(model, batch, args.mask_ratio, args.rounds)


if __name__ == "__main__":
    main()
