"""The write stage: a batch's embedded and failed rows as one Parquet file in each table's folder, named by the run and
the batch's smallest id (the same name when a batch is retried), and the files reported back to the driver."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline import schema
from pipeline.embed.write import NODES, OUTAGE, WriteConfig, data_files, write_batch
from pipeline.layout import EMBEDDINGS_DIR, ERRORS_DIR
from pipeline.storage import Storage
from pipeline.storage_errors import StorageOutage


def model_output(ids: list[int], errors: list[str]) -> dict[str, np.ndarray]:
    """What the model stage hands the write stage: 4-wide embeddings, a loss where one was scored, a node per row."""
    n = len(ids)
    return {
        schema.ID: np.array(ids, dtype=np.int64),
        schema.PATH: np.array([f"file:///photos/{i}.png" for i in ids], dtype=object),
        schema.EMBEDDING: np.arange(n * 4, dtype=np.float32).reshape(n, 4),
        schema.LOSS: np.array([0.5, np.nan, 0.25][:n], dtype=np.float32),
        schema.WIDTH: np.full(n, 100, dtype=np.int32),
        schema.HEIGHT: np.full(n, 80, dtype=np.int32),
        schema.SIZE: np.full(n, 1000, dtype=np.int64),
        schema.MTIME: np.full(n, 1.5e9),
        schema.ETAG: np.array(["etag-a", "", "etag-c"][:n], dtype=object),
        schema.ERROR: np.array(errors, dtype=object),
        schema.RETRYABLE: np.zeros(n, dtype=bool),
        schema.NODE: np.array(["node-2", "node-1", "node-2"][:n], dtype=object),
    }


def test_a_batch_becomes_one_file_a_table_named_by_its_smallest_id(tmp_path):
    config = WriteConfig(str(tmp_path / "out"), "run1", Storage())
    batch = model_output([12, 10, 11], ["", "not an image file", ""])
    rows = write_batch(batch, config)
    assert set(rows[NODES]) == {"node-1,node-2"} and not any(rows[OUTAGE])
    files = data_files(rows)
    name = "part-run1-000000000010.parquet"
    assert [(f.table, f.path, f.rows) for f in files] == [(EMBEDDINGS_DIR, name, 2), (ERRORS_DIR, name, 1)]
    embedded = pq.read_table(tmp_path / "out" / EMBEDDINGS_DIR / name).to_pylist()
    assert [r[schema.ID] for r in embedded] == [12, 11] and {r[schema.RUN] for r in embedded} == {"run1"}
    assert embedded[0][schema.EMBEDDING] == [0.0, 1.0, 2.0, 3.0] and embedded[1][schema.LOSS] == 0.25
    failed = pq.read_table(tmp_path / "out" / ERRORS_DIR / name).to_pylist()
    assert [(r[schema.PATH], r[schema.ERROR]) for r in failed] == [("file:///photos/10.png", "not an image file")]
    assert failed[0][schema.ETAG] is None  # "" between stages, null in the tables
    again = data_files(write_batch(batch, config))  # a retried batch: the same names, so committed once
    assert [(f.table, f.path) for f in again] == [(f.table, f.path) for f in files]


def test_a_batch_without_failures_writes_no_errors_file(tmp_path):
    files = data_files(write_batch(model_output([5, 6], ["", ""]), WriteConfig(str(tmp_path), "run1", Storage())))
    assert [f.table for f in files] == [EMBEDDINGS_DIR]
    assert not (tmp_path / ERRORS_DIR).exists() or not any((tmp_path / ERRORS_DIR).iterdir())


def test_an_outage_reported_by_a_write_task_stops_the_driver():
    rows = {
        **{column: np.array([""], dtype=object) for column in ("table", "path", "stats")},
        **{column: np.array([0], dtype=object) for column in ("size", "rows", "modified_ms")},
        NODES: np.array([""], dtype=object),
        OUTAGE: np.array(["s3://b/out: the storage stayed unreachable for 120 s"], dtype=object),
    }
    with pytest.raises(StorageOutage, match="the storage stayed unreachable for 120 s"):
        data_files(rows)
