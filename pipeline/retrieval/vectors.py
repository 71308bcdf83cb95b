"""Reading a run's embeddings back from Parquet: in bounded, ordered batches, as float32 [B, D] matrices."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from pipeline import schema
from pipeline.layout import EMBEDDINGS_DIR
from pipeline.storage import Storage, folder

logger = logging.getLogger(__name__)

METRICS = ("cosine", "l2")


@dataclass(frozen=True)
class Batch:
    """Consecutive rows of a run's embeddings."""

    start: int  # number of the first row in the run (files sorted by name, rows in file order): its FAISS id
    paths: pa.Array  # string [B]
    vectors: np.ndarray | None  # float32 [B, D], raw as stored (None when the embedding column was not read)
    table: pa.RecordBatch  # every column read, for callers that want more than path and embedding


def open_embeddings(run: str, storage: Storage) -> pads.Dataset:
    """The run's `embeddings/*.parquet` as one dataset, files in name order (so row numbers are stable)."""
    found = folder(run, storage)
    files = sorted(found.fs.glob(found.path(f"{EMBEDDINGS_DIR}/*.parquet")))
    if not files:
        raise FileNotFoundError(f"{run} has no {EMBEDDINGS_DIR}/*.parquet; expected the --output folder of an embedding run")
    return pads.dataset(files, filesystem=found.fs, format="parquet")


def iter_batches(dataset: pads.Dataset, batch_rows: int, columns: Sequence[str] = (schema.PATH, schema.EMBEDDING)) -> Iterator[Batch]:
    """Yields the rows in order, at most `batch_rows` at a time, reading ahead as little as Arrow allows."""
    start = 0
    for record_batch in dataset.to_batches(
        columns=list(columns), batch_size=batch_rows, batch_readahead=1, fragment_readahead=1, use_threads=True
    ):
        if record_batch.num_rows == 0:
            continue
        vectors = to_matrix(record_batch.column(schema.EMBEDDING)) if schema.EMBEDDING in columns else None
        yield Batch(start, record_batch.column(schema.PATH), vectors, record_batch)
        start += record_batch.num_rows


def to_matrix(column: pa.Array) -> np.ndarray:
    """list<float32> [B] -> float32 [B, D]; every row must hold D values."""
    if column.null_count:
        raise ValueError(f"expected an embedding in every row, found {column.null_count} null embeddings")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != lengths[0]).any():
        raise ValueError(f"expected embeddings of one length, found lengths {sorted(set(lengths.tolist()))[:5]}")
    dim = int(lengths[0]) if len(lengths) else 0
    values = column.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values, dtype=np.float32).reshape(len(column), dim)


def first_dimension(dataset: pads.Dataset) -> int:
    """D of the run's embeddings, from its first row."""
    for batch in dataset.to_batches(columns=[schema.EMBEDDING], batch_size=1):
        if batch.num_rows:
            return to_matrix(batch.column(schema.EMBEDDING).slice(0, 1)).shape[1]
    raise ValueError("expected at least one embedding, found none")


def for_index(vectors: np.ndarray, metric: str) -> np.ndarray:
    """What the index stores for raw [B, D] vectors: a unit-length copy for cosine, the vectors for l2."""
    import faiss

    out = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if metric == "cosine":
        faiss.normalize_L2(out)
    return out


def vectors_of_paths(dataset: pads.Dataset, paths: Sequence[str]) -> dict[str, np.ndarray]:
    """The raw float32 [D] embedding of each of `paths` found in the run (a filtered scan)."""
    table = dataset.to_table(columns=[schema.PATH, schema.EMBEDDING], filter=pc.field(schema.PATH).isin(list(paths)))
    matrix = to_matrix(table.column(schema.EMBEDDING).combine_chunks())
    return dict(zip(table.column(schema.PATH).to_pylist(), matrix))
