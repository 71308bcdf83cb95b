"""Reading a version of a run's embeddings table back: in bounded batches, as float32 [B, D] matrices with their ids."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from pipeline import schema
from pipeline.layout import EMBEDDINGS_DIR, output_uri
from pipeline.storage import Storage
from pipeline.tables import dataset, open_table
from vitmae.errors import InvalidInput, NotFound

logger = logging.getLogger(__name__)

Metric = Literal["cosine", "l2"]
METRICS = get_args(Metric)


@dataclass(frozen=True)
class Batch:
    """Rows of a run's embeddings."""

    start: int  # position of the first row in this scan of the table (rows in file order)
    ids: np.ndarray  # int64 [B]: the rows' ids, their FAISS ids
    paths: pa.Array  # string [B]
    vectors: np.ndarray | None  # float32 [B, D], raw as stored (None when the embedding column was not read)
    table: pa.RecordBatch  # every column read, for callers that want more than id, path and embedding


@dataclass(frozen=True)
class Embeddings:
    """One version of a run's embeddings table."""

    run: str
    version: int  # the table's version
    dataset: pads.Dataset  # its live rows

    def count(self) -> int:
        return self.dataset.count_rows()


def open_embeddings(run: str, storage: Storage, version: int | None = None) -> Embeddings:
    """The run's embeddings table at `version` (default: the latest).

    Raises:
        FileNotFoundError: `run` has no embeddings table.
    """
    uri = output_uri(run, EMBEDDINGS_DIR)
    table = open_table(uri, storage, version)
    if table is None:
        raise NotFound(f"{run} has no {EMBEDDINGS_DIR} table; expected the output folder of the embedding job")
    return Embeddings(run, table.version(), dataset(table, uri, storage))


def iter_batches(
    embeddings: Embeddings,
    batch_rows: int,
    columns: Sequence[str] = (schema.PATH, schema.EMBEDDING),
    filter: pc.Expression | None = None,
) -> Iterator[Batch]:
    """Yields the rows (of `filter`), at most `batch_rows` at a time, reading ahead as little as Arrow allows; two scans
    of one version give the same rows in the same order."""
    start = 0
    wanted = [schema.ID, *(c for c in columns if c != schema.ID)]
    for record_batch in embeddings.dataset.to_batches(
        columns=wanted, filter=filter, batch_size=batch_rows, batch_readahead=1, fragment_readahead=1, use_threads=False
    ):
        if record_batch.num_rows == 0:
            continue
        vectors = to_matrix(record_batch.column(schema.EMBEDDING)) if schema.EMBEDDING in columns else None
        ids = record_batch.column(schema.ID).to_numpy(zero_copy_only=False).astype(np.int64)
        paths = (
            record_batch.column(schema.PATH) if schema.PATH in wanted else pa.nulls(record_batch.num_rows, pa.string())
        )
        yield Batch(start, ids, paths, vectors, record_batch)
        start += record_batch.num_rows


def to_matrix(column: pa.Array) -> np.ndarray:
    """list<float32> [B] -> float32 [B, D]; every row must hold D values."""
    if column.null_count:
        raise InvalidInput(f"expected an embedding in every row, found {column.null_count} null embeddings")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != lengths[0]).any():
        raise InvalidInput(f"expected embeddings of one length, found lengths {sorted(set(lengths.tolist()))[:5]}")
    dim = int(lengths[0]) if len(lengths) else 0
    values = column.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values, dtype=np.float32).reshape(len(column), dim)


def first_dimension(embeddings: Embeddings) -> int:
    """D of the run's embeddings, from its first row."""
    for batch in embeddings.dataset.to_batches(columns=[schema.EMBEDDING], batch_size=1):
        if batch.num_rows:
            return to_matrix(batch.column(schema.EMBEDDING).slice(0, 1)).shape[1]
    raise InvalidInput("expected at least one embedding, found none")


def for_index(vectors: np.ndarray, metric: str) -> np.ndarray:
    """What the index stores for raw [B, D] vectors: a unit-length copy for cosine, the vectors for l2."""
    import faiss

    out = np.array(vectors, dtype=np.float32, order="C", copy=True)
    if metric == "cosine":
        faiss.normalize_L2(out)
    return out


def all_ids(embeddings: Embeddings) -> np.ndarray:
    """int64 [N]: every id in the table, sorted."""
    return np.sort(embeddings.dataset.to_table(columns=[schema.ID]).column(schema.ID).to_numpy().astype(np.int64))


def write_id_map(embeddings: Embeddings, path: str, memory_limit: str = "1GB") -> int:
    """Writes every (id, path) of the table version to the local Parquet file `path`, sorted by id, in bounded memory
    (DuckDB sorts, spilling past its limit); returns the rows."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET temp_directory = '{os.path.dirname(path)}/spill'")
    con.register("table_rows", embeddings.dataset)
    quoted = path.replace("'", "''")
    con.execute(
        f"COPY (SELECT {schema.ID}, {schema.PATH} FROM table_rows ORDER BY {schema.ID}) TO '{quoted}' (FORMAT parquet)"
    )
    con.close()
    return pq.read_metadata(path).num_rows


def vectors_of_paths(embeddings: Embeddings, paths: Sequence[str]) -> dict[str, np.ndarray]:
    """The raw float32 [D] embedding of each of `paths` found in the run (a filtered scan)."""
    table = embeddings.dataset.to_table(
        columns=[schema.PATH, schema.EMBEDDING], filter=pc.field(schema.PATH).isin(list(paths))
    )
    matrix = to_matrix(table.column(schema.EMBEDDING).combine_chunks())
    return dict(zip(table.column(schema.PATH).to_pylist(), matrix))


def has_patch_loss(embeddings: Embeddings) -> bool:
    """Whether the run kept each image's per-patch loss (embedded with `--infer.patch_loss true`)."""
    return schema.PATCH_LOSS in embeddings.dataset.schema.names


def patch_losses(embeddings: Embeddings, paths: Sequence[str]) -> dict[str, np.ndarray]:
    """The per-patch loss, float32 [L], of each of `paths` found in the run (a filtered scan); {} for a run that kept
    none."""
    if not has_patch_loss(embeddings) or not paths:
        return {}
    table = embeddings.dataset.to_table(
        columns=[schema.PATH, schema.PATCH_LOSS], filter=pc.field(schema.PATH).isin(list(paths))
    )
    return {
        path: schema.unpack_patch_loss(value)
        for path, value in zip(table.column(schema.PATH).to_pylist(), table.column(schema.PATCH_LOSS).to_pylist())
        if value is not None
    }


def vectors_of_ids(embeddings: Embeddings, ids: np.ndarray, batch_rows: int = 16_384) -> np.ndarray:
    """The raw float32 [len(ids), D] embeddings of `ids` (int64, unique), in their order (a filtered scan).

    Raises:
        ValueError: an id is not in this version of the table.
    """
    ids = np.asarray(ids, np.int64)
    order = np.argsort(ids, kind="stable")
    out: np.ndarray | None = None
    found = 0
    wanted = pc.field(schema.ID).isin(pa.array(ids, pa.int64()))
    for batch in iter_batches(embeddings, batch_rows, (schema.EMBEDDING,), filter=wanted):
        if out is None:
            out = np.empty((len(ids), batch.vectors.shape[1]), np.float32)
        out[order[np.searchsorted(ids[order], batch.ids)]] = batch.vectors
        found += len(batch.ids)
    if found != len(ids):
        raise ValueError(
            f"expected {len(ids)} ids in version {embeddings.version} of the embeddings of {embeddings.run}, "
            f"found {found}; did the table change since the index was built?"
        )
    return out if out is not None else np.empty((0, 0), np.float32)
