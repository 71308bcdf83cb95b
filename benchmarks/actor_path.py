"""The model actor's code path without Ray: decoded uint8 batches in, pooled embeddings out.

Three ways to embed the same batches with the same model, timed in alternating rounds:

- `model alone`: normalised pixels already on the device, encoder and pooling only (the upper bound);
- `actor path`: `pipeline.infer.Embedder` as Ray Data calls it: uint8 rows in (pinned and copied to a GPU),
  normalised on the device in the model's dtype, embeddings back as numpy;
- `CPU normalise`: what a plain recipe does: float32 pixels normalised on the CPU (as transformers'
  processor returns them), copied to the device, cast to the model's dtype.

Runs wherever torch does (Ray is not needed), so it measures the actor on a GPU machine too:

    python benchmarks/actor_path.py --device cuda --batch-size 512 --batches 8
    PYTHONPATH=. python3 benchmarks/actor_path.py ...    # from a checkout where the project is not installed
    python benchmarks/actor_path.py --device cpu --batch-size 8 --batches 2
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from typing import Callable

import numpy as np
import torch

from pipeline import schema
from pipeline.infer import Embedder, InferConfig, pool
from vitmae import ViTImageProcessor, ViTMAEConfig, ViTMAEModel

logger = logging.getLogger("actor_path")

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "CPU")
    return f"{cpu}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def save_model(folder: str) -> None:
    """A random-init ViT-B/16 encoder at 224 and its processor."""
    torch.manual_seed(0)
    ViTMAEModel(ViTMAEConfig()).save_pretrained(folder)
    ViTImageProcessor(size=224, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD).save_pretrained(folder)


def batches(count: int, size: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Ray Data batches as the decode stage hands them over: uint8 [N, 224, 224, 3] pixels, paths, no errors."""
    rng = np.random.default_rng(seed)
    return [
        {
            schema.PATH: np.array([f"file:///photos/{b}-{i}.jpg" for i in range(size)]),
            schema.ERROR: np.array([""] * size),
            schema.PIXELS: rng.integers(0, 256, (size, 224, 224, 3), dtype=np.uint8),
        }
        for b in range(count)
    ]


def paths(embedder: Embedder, data: list[dict[str, np.ndarray]]) -> dict[str, Callable[[], object]]:
    """The three ways, each a call that embeds every batch once and returns when the numbers are on the host."""
    device, dtype, processor, encoder = embedder.device, embedder.dtype, embedder.processor, embedder.encoder
    resident = [processor.normalize(torch.from_numpy(b[schema.PIXELS]).to(device), dtype) for b in data]
    cpu_float = [processor.normalize(torch.from_numpy(b[schema.PIXELS])) for b in data]

    def model_alone() -> None:
        for x in resident:
            pool(encoder(x, mask_ratio=0.0).last_hidden_state, "mean").cpu().numpy()
        if device.type == "cuda":
            torch.cuda.synchronize()

    def actor_path() -> None:
        for batch in data:
            embedder(batch)

    def cpu_normalise() -> None:
        for x in cpu_float:
            pool(encoder(x.to(device).to(dtype), mask_ratio=0.0).last_hidden_state, "mean").cpu().numpy()

    return {"model alone": model_alone, "actor path": actor_path, "CPU normalise": cpu_normalise}


def run(args: argparse.Namespace) -> dict[str, list[float]]:
    """Seconds per pass over all batches, per way, one value per round."""
    with tempfile.TemporaryDirectory() as folder:
        save_model(folder)
        embedder = Embedder(InferConfig(model=folder, dtype=args.dtype, threads=args.threads))
    if embedder.device.type != args.device:
        raise SystemExit(f"asked for --device {args.device} but torch runs the actor on {embedder.device}")
    data = batches(args.batches, args.batch_size)
    calls = paths(embedder, data)
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for fn in calls.values():  # warm-up: kernels, allocator, pinned-memory cache
            fn()
        for _ in range(args.rounds):
            for name, fn in calls.items():
                start = time.perf_counter()
                fn()
                seconds[name].append(time.perf_counter() - start)
    logger.info("%s, %s, batch %d", hardware(embedder.device), embedder.dtype, args.batch_size)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu (what the actor picks)")
    parser.add_argument("--dtype", default="auto", help="auto (bfloat16 on a GPU, float32 on the CPU), float32, bfloat16")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=2, help="batches per timed pass")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads on the CPU (default: torch's)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    seconds = run(args)
    images = args.batch_size * args.batches
    base = statistics.median(seconds["model alone"])
    print(f"{'way':14} {'images/s':>9} {'of model alone':>15}")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:14} {images / median:9.1f} {base / median:14.0%}")


if __name__ == "__main__":
    main()
