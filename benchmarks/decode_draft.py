"""The JPEG draft's margin: decode time against the fidelity of pixels and embeddings to a full-size decode.

`pipeline.embed.decode.decode_image` lets a large JPEG decode at a reduced DCT scale (1/2, 1/4, 1/8) that keeps at least
`DecodeConfig.draft_margin` times the model's input on each side, then resizes as `ViTImageProcessor` does. This
times the full-size decode and each margin on the same multi-megapixel photographs (interleaved rounds in one
process; Pillow decodes on one core), and compares each margin's pixels and mean-pooled embeddings with the
full-size decode's.

    python -m benchmarks.decode_draft
    python -m benchmarks.decode_draft --images 24 --size 4032x3024 --margins 2,1.5,1 --model path/to/checkpoint
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import MODELS, hardware, make_images, save_checkpoint
from pipeline import schema
from pipeline.embed.decode import DecodeConfig, decode_image
from pipeline.embed.embedder import Embedder
from pipeline.embed.infer import InferConfig

logger = logging.getLogger("decode_draft")


def decode_all(datas: list[bytes], embedder: Embedder, config: DecodeConfig) -> tuple[np.ndarray, float]:
    """Every image's uint8 [H, W, 3] pixels, stacked, and the seconds the decodes took."""
    start = time.perf_counter()
    pixels = np.stack([decode_image(data, embedder.processor, config).pixels for data in datas])
    return pixels, time.perf_counter() - start


def embed(embedder: Embedder, pixels: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float32 [N, D] mean-pooled embeddings."""
    n = len(pixels)
    batch = {
        schema.PATH: np.array([str(i) for i in range(n)], dtype=object),
        schema.ERROR: np.full(n, "", dtype=object),
        schema.PIXELS: pixels,
    }
    return torch.from_numpy(embedder(batch)[schema.EMBEDDING])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24, help="photographs to decode")
    parser.add_argument("--size", default="4000x3000", help="their width x height")
    parser.add_argument("--margins", default="2,1.5", help="comma-separated draft margins to compare")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds; the median counts")
    parser.add_argument("--model", default=None, help="checkpoint for the embeddings (default: ViT-B, random weights)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    size = tuple(int(x) for x in args.size.split("x"))
    configs = {"full size": DecodeConfig(mode="exact")}
    configs.update({f"margin {m}": DecodeConfig(draft_margin=float(m)) for m in args.margins.split(",")})
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or save_checkpoint(Path(tmp) / "model", MODELS["base"])
        folder = make_images(Path(tmp) / "images", args.images, size)
        datas = [path.read_bytes() for path in sorted(folder.iterdir())]
        embedder = Embedder(model, InferConfig(mask_ratio=0.0, pooling="mean"))
        seconds: dict[str, list[float]] = {name: [] for name in configs}
        pixels: dict[str, np.ndarray] = {}
        for _ in range(args.rounds):
            for name, config in configs.items():
                pixels[name], spent = decode_all(datas, embedder, config)
                seconds[name].append(spent)
        full = pixels["full size"].astype(np.float32)
        reference = embed(embedder, pixels["full size"])
        print(hardware())
        print(f"{args.images} JPEGs of {args.size}, to {embedder.processor.size}; median of {args.rounds} rounds")
        print(
            f"{'decode':<12} {'ms/image':>9} {'vs full':>8} {'pixel diff mean':>16} {'max':>6} "
            f"{'cosine min':>11} {'mean':>9}"
        )
        full_ms = statistics.median(seconds["full size"]) / args.images * 1e3
        for name in configs:
            ms = statistics.median(seconds[name]) / args.images * 1e3
            diff = np.abs(pixels[name].astype(np.float32) - full).mean(axis=(1, 2, 3))
            cosine = torch.nn.functional.cosine_similarity(embed(embedder, pixels[name]), reference)
            print(
                f"{name:<12} {ms:9.1f} {full_ms / ms:7.2f}x {diff.mean():16.2f} {diff.max():6.2f} "
                f"{cosine.min().item():11.6f} {cosine.mean().item():9.6f}"
            )


if __name__ == "__main__":
    main()
