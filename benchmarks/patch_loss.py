"""What keeping each patch's loss (`--infer.patch_loss true`) costs: the model stage's images/s with and without it
(`Embedder`, as a CPU actor runs it, no Ray; loss scoring with K=4 masks, alternating rounds) and the embeddings
table's bytes a row (the write stage's zstd Parquet) on real photographs, ViT-S and ViT-B/16 geometry. With
--lookup-rows N, also the time to read one image's patch losses (as the page's heatmap thumbnails do) from a table of
N ViT-B-sized rows, written in files of 8,192 rows and compacted as the job compacts.

    python -m benchmarks.patch_loss --threads 2 --rounds 3 --lookup-rows 200000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import pyarrow as pa

from benchmarks.common import add_stage_arguments, compare_stages, hardware, stage_checkpoints
from pipeline import schema
from pipeline.embed.infer import InferConfig
from pipeline.embed.write import WriteConfig, write_batch
from pipeline.retrieval.vectors import open_embeddings, patch_losses
from pipeline.storage import Storage

LOOKUP_FILE_ROWS = 8_192


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


def lookup_seconds(rows: int, folder: str) -> list[float]:
    """Seconds to read one row's patch losses by its path (`patch_losses`), for rows at the start, middle and end of a
    compacted table of `rows` rows of 768 float32 and 196 float16 values."""
    from deltalake import DeltaTable, write_deltalake

    rng = np.random.default_rng(0)
    uri = f"{folder}/embeddings"
    for start in range(0, rows, LOOKUP_FILE_ROWS):
        n = min(LOOKUP_FILE_ROWS, rows - start)
        ids = np.arange(start, start + n)
        columns = {
            schema.ID: pa.array(ids, pa.int64()),
            schema.PATH: pa.array([f"s3://images/{i:08d}.jpg" for i in ids], pa.string()),
            schema.EMBEDDING: pa.FixedSizeListArray.from_arrays(rng.standard_normal(n * 768, np.float32), 768).cast(
                pa.list_(pa.float32())
            ),
            schema.LOSS: pa.array(rng.random(n, np.float32)),
            schema.PATCH_LOSS: schema.pack_patch_loss(rng.random((n, 196), np.float32)),
        }
        table = schema.embeddings_schema(True).empty_table()
        table = pa.table(
            {name: columns.get(name, pa.nulls(n, table.schema.field(name).type)) for name in table.schema.names}
        )
        write_deltalake(uri, table.cast(schema.embeddings_schema(True)), mode="append")
    DeltaTable(uri).optimize.compact()
    embeddings = open_embeddings(folder, Storage())
    seconds = []
    for i in (rows // 100, rows // 2, rows - rows // 100):
        start = time.perf_counter()
        assert len(patch_losses(embeddings, [f"s3://images/{i:08d}.jpg"])) == 1
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(parser)
    parser.add_argument(
        "--lookup-rows", type=int, default=0, help="rows of the table one heatmap is read from (0: none)"
    )
    args = parser.parse_args()
    print(f"{hardware()}; {args.threads} torch threads, batch {args.batch_size}, loss with K=4 masks at 0.75")
    print("| model | without images/s | with images/s | **with vs without** | bytes a row without | with | **size** |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in stage_checkpoints(args):
            configs = {kept: InferConfig(0.75, patch_loss=kept) for kept in (False, True)}
            outs, rate = compare_stages(model, configs, args)
            size = {kept: bytes_a_row(out, kept, f"{tmp}/{name}-files") for kept, out in outs.items()}
            print(
                f"| {name} | {rate[False]:.2f} | {rate[True]:.2f} | **{rate[True] / rate[False]:.3f}x** | "
                f"{size[False]:,.0f} | {size[True]:,.0f} | **+{size[True] / size[False] - 1:.1%}** |",
                flush=True,
            )
        if args.lookup_rows:
            seconds = lookup_seconds(args.lookup_rows, f"{tmp}/lookup")
            print(
                f"\none image's patch losses from {args.lookup_rows:,} compacted rows: "
                + ", ".join(f"{1000 * s:.0f} ms" for s in seconds)
                + f" (start, middle, end; median {1000 * statistics.median(seconds):.0f} ms)"
            )


if __name__ == "__main__":
    main()
