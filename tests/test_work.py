"""The work file: the rows to embed, read back by few tasks that yield one small block per row group."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import schema
from pipeline.embed.work import READ_CONCURRENCY, READ_TASK_ROWS, WorkSource, put_work
from pipeline.storage import Storage


def work_file(path, rows: int) -> None:
    pq.write_table(pa.table({
        schema.ID: pa.array(np.arange(rows), pa.int64()), schema.PATH: [f"s3://b/{i}.jpg" for i in range(rows)],
        schema.SIZE: pa.array(np.full(rows, 10), pa.int64()), schema.MTIME: pa.array(np.zeros(rows)),
        schema.ETAG: [None] * rows,
    }).cast(schema.WORK_SCHEMA), path)


def test_every_row_is_read_once_by_few_tasks_in_blocks_of_a_row_group(tmp_path):
    rows, group = 10_000, 8
    work_file(tmp_path / "diff.parquet", rows)
    put_work(str(tmp_path / "diff.parquet"), str(tmp_path / "out" / "_work" / "run.parquet"), Storage(), group)
    source = WorkSource(str(tmp_path / "out" / "_work" / "run.parquet"), Storage())
    tasks = source.get_read_tasks(parallelism=200)
    # Not one task per group (1,250 would start at once), and no fewer than run at once.
    assert len(tasks) == source.num_tasks == max(-(-rows // READ_TASK_ROWS), READ_CONCURRENCY)
    blocks = [block for task in tasks for block in task()]
    assert {block.num_rows for block in blocks} == {group}
    assert sum(task.metadata.num_rows for task in tasks) == rows
    ids = np.concatenate([block.column(schema.ID).to_numpy() for block in blocks])
    assert np.array_equal(ids, np.arange(rows))


def test_a_small_run_is_read_by_as_many_tasks_as_run_at_once(tmp_path):
    work_file(tmp_path / "diff.parquet", 16)
    put_work(str(tmp_path / "diff.parquet"), str(tmp_path / "run.parquet"), Storage(), 2)
    tasks = WorkSource(str(tmp_path / "run.parquet"), Storage()).get_read_tasks(parallelism=200)
    assert len(tasks) == READ_CONCURRENCY and [task.metadata.num_rows for task in tasks] == [4] * READ_CONCURRENCY
