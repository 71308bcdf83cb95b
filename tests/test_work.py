"""The work file: the rows to embed, read back by one task per row group."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import schema
from pipeline.embed import work
from pipeline.embed.work import WorkSource, put_work
from pipeline.storage import Storage


def work_file(path, rows: int) -> None:
    pq.write_table(
        pa.table(
            {
                schema.ID: pa.array(np.arange(rows), pa.int64()),
                schema.PATH: [f"s3://b/{i}.jpg" for i in range(rows)],
                schema.SIZE: pa.array(np.full(rows, 10), pa.int64()),
                schema.MTIME: pa.array(np.zeros(rows)),
                schema.ETAG: [None] * rows,
            }
        ).cast(schema.WORK_SCHEMA),
        path,
    )


@pytest.mark.slow  # ~10 s
def test_every_row_is_read_once_by_a_task_per_row_group(tmp_path):
    rows, group = 10_000, 8
    work_file(tmp_path / "diff.parquet", rows)
    put_work(str(tmp_path / "diff.parquet"), str(tmp_path / "out" / "_work" / "run.parquet"), Storage(), group)
    source = WorkSource(str(tmp_path / "out" / "_work" / "run.parquet"), Storage())
    tasks = source.get_read_tasks(parallelism=200)
    # One group a task: a task's blocks travel downstream as one bundle, so a task of several groups would be one
    # model task and one commit of all their rows.
    assert len(tasks) == source.num_tasks == rows // group
    assert {task.metadata.num_rows for task in tasks} == {group}
    blocks = [block for task in tasks for block in task()]
    ids = np.concatenate([block.column(schema.ID).to_numpy() for block in blocks])
    assert np.array_equal(ids, np.arange(rows))


def test_row_groups_grow_to_keep_the_read_tasks_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(work, "MAX_READ_TASKS", 100)
    work_file(tmp_path / "diff.parquet", 10_000)
    put_work(str(tmp_path / "diff.parquet"), str(tmp_path / "run.parquet"), Storage(), 8)
    tasks = WorkSource(str(tmp_path / "run.parquet"), Storage()).get_read_tasks(parallelism=200)
    assert len(tasks) == 100 and {task.metadata.num_rows for task in tasks} == {100}
