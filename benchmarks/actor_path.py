"""The model actor's code path without Ray: decoded uint8 batches in, pooled embeddings out.

Ways to embed the same batches with the same model, timed in alternating rounds:

- `model alone`: normalised pixels already on the device, encoder and pooling only (the upper bound);
- `actor path`: `pipeline.embed.embedder.Embedder` as Ray Data calls it: uint8 rows in (on a GPU pinned and copied in
  slices of `GPU_SLICE_ROWS`, so that copying one slice overlaps the model's work on the last), normalised on
  the device in the model's dtype, embeddings back as numpy;
- on a GPU, `actor, 1 slice`: the same with the whole batch copied before the model starts, and `copy only`:
  pinning, copying and normalising alone, no model;
- `CPU normalise`: what a plain recipe does: float32 pixels normalised on the CPU (as transformers'
  processor returns them), copied to the device, cast to the model's dtype;
- with `--compile`: `model compiled` and `actor compiled` (`InferConfig(compile=True)`).

Runs wherever torch does (Ray is not needed), so it measures the actor on a GPU machine too; from the repository's
root, `python -m` finds the project without installing it:

    python -m benchmarks.actor_path --device cuda --batch-size 512 --batches 8 --compile
    python -m benchmarks.actor_path --device cpu --batch-size 8 --batches 2
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from benchmarks.common import device_hardware
from pipeline import schema
from pipeline.embed.embedder import GPU_SLICE_ROWS, Embedder, pool
from pipeline.embed.infer import InferConfig
from vitmae import ViTImageProcessor, ViTMAEConfig, ViTMAEModel
from vitmae.processor import MAE_PROCESSOR

logger = logging.getLogger("actor_path")


def save_model(folder: str) -> None:
    """A random-init ViT-B/16 encoder at 224 and MAE's processor (whose resampling filter no batch here uses: the
    pixels arrive at 224)."""
    torch.manual_seed(0)
    ViTMAEModel(ViTMAEConfig()).save_pretrained(folder)
    ViTImageProcessor(**MAE_PROCESSOR).save_pretrained(folder)


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


def paths(
    embedder: Embedder, compiled: Embedder | None, data: list[dict[str, np.ndarray]]
) -> dict[str, Callable[[], object]]:
    """The ways, each a call that embeds every batch once and returns when the numbers are on the host."""
    device, dtype, processor, encoder = embedder.device, embedder.dtype, embedder.processor, embedder.encoder
    resident = [processor.normalize(torch.from_numpy(b[schema.PIXELS]).to(device), dtype) for b in data]
    cpu_float = [processor.normalize(torch.from_numpy(b[schema.PIXELS])) for b in data]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def alone(model: Callable) -> Callable[[], None]:
        def call() -> None:
            for x in resident:
                pool(model(x, mask_ratio=0.0).last_hidden_state, "mean").cpu().numpy()
            sync()

        return call

    def actor(which: Embedder, slice_rows: int) -> Callable[[], None]:
        def call() -> None:
            which.slice_rows = slice_rows
            for batch in data:
                which(batch)

        return call

    def cpu_normalise() -> None:
        for x in cpu_float:
            pool(encoder(x.to(device).to(dtype), mask_ratio=0.0).last_hidden_state, "mean").cpu().numpy()

    def copy_only() -> None:
        for batch in data:
            processor.normalize(embedder.to_device(torch.from_numpy(batch[schema.PIXELS])), dtype)
        sync()

    ways = {"model alone": alone(encoder), "actor path": actor(embedder, GPU_SLICE_ROWS)}
    if device.type == "cuda":
        ways["actor, 1 slice"] = actor(embedder, 1 << 30)
        ways["copy only"] = copy_only
    ways["CPU normalise"] = cpu_normalise
    if compiled is not None:
        ways["model compiled"] = alone(torch.compile(encoder, dynamic=True))  # as the actor compiles it
        ways["actor compiled"] = actor(compiled, GPU_SLICE_ROWS)
    return ways


def run(args: argparse.Namespace) -> dict[str, list[float]]:
    """Seconds per pass over all batches, per way, one value per round."""
    with tempfile.TemporaryDirectory() as folder:
        save_model(folder)
        config = InferConfig(dtype=args.dtype)
        embedder = Embedder(folder, config, threads=args.threads)
        compiled = Embedder(folder, replace(config, compile=True), threads=args.threads) if args.compile else None
    if embedder.device.type != args.device:
        raise SystemExit(f"asked for --device {args.device} but torch runs the actor on {embedder.device}")
    data = batches(args.batches, args.batch_size)
    calls = paths(embedder, compiled, data)
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        for name, fn in calls.items():  # warm-up: kernels, compilation, allocator, pinned-memory cache
            start = time.perf_counter()
            fn()
            logger.info("%s: first pass %.1f s", name, time.perf_counter() - start)
        for _ in range(args.rounds):
            for name, fn in calls.items():
                start = time.perf_counter()
                fn()
                seconds[name].append(time.perf_counter() - start)
    logger.info("%s, %s, batch %d", device_hardware(embedder.device), embedder.dtype, args.batch_size)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda or cpu (what the actor picks)"
    )
    parser.add_argument(
        "--dtype",
        default="auto",
        help="auto (bfloat16 on a GPU and on CPUs with AVX512-BF16 or AMX, else float32), float32, bfloat16",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=2, help="batches per timed pass")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads on the CPU (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="also time the model and the actor under torch.compile")
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
