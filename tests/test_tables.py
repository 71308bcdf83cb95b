"""The Delta tables: commits of worker-written files with their statistics, removal by path, the guard against a
second writer, and vacuum of files that no version holds."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pytest

from pipeline import schema
from pipeline.storage import Storage, folder, write_parquet
from pipeline.tables import ConcurrentRunError, DataFile, RunTable, dataset, file_stats, open_table

ROWS = pa.schema([(schema.ID, pa.int64()), (schema.PATH, pa.string()), (schema.EMBEDDING, pa.list_(pa.float32()))])


def rows(first: int, count: int) -> pa.Table:
    return pa.table(
        {
            schema.ID: np.arange(first, first + count),
            schema.PATH: [f"s3://b/{i:04d}.jpg" for i in range(first, first + count)],
            schema.EMBEDDING: [[float(i)] * 4 for i in range(first, first + count)],
        },
        schema=ROWS,
    )


def worker_write(uri: str, name: str, table: pa.Table) -> DataFile:
    """What the write stage does: a Parquet file in the table's folder, not committed."""
    size = write_parquet(folder(uri, Storage(), create=True), name, table)
    return DataFile("t", name, size, table.num_rows, 0, file_stats(table))


def test_commits_removals_and_statistics(tmp_path):
    uri = str(tmp_path / "t")
    table = RunTable.open_or_create(uri, Storage(), ROWS, "run-1", json.dumps({"next_id": 0}))
    table.add_files([worker_write(uri, "a.parquet", rows(0, 5)), worker_write(uri, "b.parquet", rows(5, 5))], batch=1)
    assert table.delete_paths(pa.array(["s3://b/0003.jpg", "s3://b/0007.jpg", "s3://b/none.jpg"])) == 2
    found = open_table(uri, Storage())
    read = dataset(found, uri, Storage()).to_table()
    assert sorted(read.column(schema.ID).to_pylist()) == [0, 1, 2, 4, 5, 6, 8, 9]
    assert found.count() == 8  # from the files' statistics, which every added file carries
    commits = [h for h in found.history() if "vitmae.run" in h]
    assert [h["vitmae.commit"] for h in commits] == ["remove", "add", "create"] and commits[1]["vitmae.rows"] == 10
    stats = json.loads(file_stats(rows(0, 3)))
    assert (
        stats["numRecords"] == 3
        and stats["minValues"][schema.ID] == 0
        and stats["maxValues"][schema.PATH] == "s3://b/0002.jpg"
    )
    assert schema.EMBEDDING not in stats["minValues"]


def test_a_second_writer_stops_the_first_at_its_next_commit(tmp_path):
    uri = str(tmp_path / "t")
    first = RunTable.open_or_create(uri, Storage(), ROWS, "run-a")
    second = RunTable(uri, Storage(), open_table(uri, Storage()), "run-b")  # started from the same version
    second.add_files([worker_write(uri, "b.parquet", rows(0, 3))])
    with pytest.raises(
        ConcurrentRunError, match="run run-b committed to .* while this run \\(run-a\\) was writing to it"
    ):
        first.add_files([worker_write(uri, "a.parquet", rows(0, 3))])
    read = dataset(open_table(uri, Storage()), uri, Storage()).to_table()
    assert read.num_rows == 3  # the refused files were never committed: no row twice


def test_vacuum_removes_files_that_no_version_holds(tmp_path):
    uri = str(tmp_path / "t")
    table = RunTable.open_or_create(uri, Storage(), ROWS, "run-1")
    table.add_files([worker_write(uri, "kept.parquet", rows(0, 2))])
    worker_write(uri, "orphan.parquet", rows(2, 2))  # a run died before committing it
    (tmp_path / "t" / "half.parquet.tmp-0123").write_bytes(b"PAR1")  # or while writing it
    table.delete_paths(pa.array(["s3://b/0000.jpg"]))  # rewrites kept.parquet into a new file
    week = table.vacuum(168)
    assert week == []  # everything is younger than a week
    removed = sorted(os.path.basename(p) for p in table.vacuum(0))
    assert removed == ["half.parquet.tmp-0123", "kept.parquet", "orphan.parquet"]
    assert dataset(open_table(uri, Storage()), uri, Storage()).to_table().column(schema.ID).to_pylist() == [1]
