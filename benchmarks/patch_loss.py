"""What keeping each patch's loss (`--infer.patch_loss true`) costs: the model stage's images/s with and without it
(`Embedder`, as a CPU actor runs it, no Ray; loss scoring with K=4 masks, alternating rounds) and the embeddings
table's bytes a row (the write stage's zstd Parquet) on real photographs, ViT-S and ViT-B/16 geometry.

    python -m benchmarks.patch_loss --threads 2 --rounds 3
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import E2E_MODELS, add_stage_arguments, hardware, save_checkpoint, stage_rates
from benchmarks.loss_variance import photo_batch
from pipeline import schema
from pipeline.embed.embedder import Embedder
from pipeline.embed.infer import InferConfig
from pipeline.embed.write import WriteConfig, write_batch
from pipeline.storage import Storage


def bytes_a_row(out: dict[str, np.ndarray], patch_loss: bool, output: str) -> float:
    """The write stage's data file of the model stage's rows `out` (with a listing's columns added), bytes a row."""
    n = len(out[schema.PATH])
    listing = {
        schema.ID: np.arange(n),
        schema.WIDTH: np.full(n, 512),
        schema.HEIGHT: np.full(n, 384),
        schema.SIZE: np.full(n, 100_000),
        schema.MTIME: np.full(n, 1.7e9),
        schema.ETAG: np.array([f"{i:032x}" for i in range(n)], dtype=object),
    }
    files = write_batch({**out, **listing}, WriteConfig(output, "bench", Storage(), patch_loss))
    return float(files["size"][0]) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{hardware()}; {args.threads} torch threads, batch {args.batch_size}, loss with K=4 masks at 0.75")
    print("| model | without images/s | with images/s | **with vs without** | bytes a row without | with | **size** |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model = save_checkpoint(Path(tmp) / name, E2E_MODELS[name], trained_scale=True)
            embedders = {kept: Embedder(model, InferConfig(0.75, patch_loss=kept)) for kept in (False, True)}
            batch = photo_batch(embedders[False].processor, copies=2)
            outs = {kept: e(batch) for kept, e in embedders.items()}  # warm-up, and the rows whose files are sized
            rate = stage_rates(embedders, batch, args.rounds, args.batch_size)
            size = {kept: bytes_a_row(out, kept, f"{tmp}/{name}-files") for kept, out in outs.items()}
            print(
                f"| {name} | {rate[False]:.2f} | {rate[True]:.2f} | **{rate[True] / rate[False]:.3f}x** | "
                f"{size[False]:,.0f} | {size[True]:,.0f} | **+{size[True] / size[False] - 1:.1%}** |",
                flush=True,
            )


if __name__ == "__main__":
    main()
