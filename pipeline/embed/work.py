"""A run's work on storage every node reaches: the diff's rows to embed, in a Parquet file of small row groups, read
by Ray Data one group range per read task. The driver streams the rows into the file and never holds them, and
no block of them is put in Ray's object store from the driver."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from ray.data import Dataset, Datasource, ReadTask, read_datasource
from ray.data.block import BlockMetadata

from pipeline import schema
from pipeline.retry import retrying
from pipeline.storage import Storage

logger = logging.getLogger(__name__)

MAX_READ_TASKS = 20_000  # ranges of row groups planned on the driver; above this, each task reads more groups
READ_TASK_ROWS = 4_096  # rows a read task reads (as blocks of one row group each), unless that makes too few tasks
# Read tasks at once. They hold no CPU (the model actors hold every one), so without a bound Ray would start a worker
# process for each of them at once; reading a few thousand paths takes milliseconds, so a few keep any model fed.
READ_CONCURRENCY = 4


def put_work(local_file: str, uri: str, storage: Storage, group_rows: int) -> None:
    """Copies the diff's work file to `uri`, rewritten in row groups of `group_rows` rows, a batch at a time."""

    def put() -> None:
        fs, path = storage.arrow_filesystem(uri)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        source = pq.ParquetFile(local_file)
        with fs.open_output_stream(path) as sink, pq.ParquetWriter(sink, schema.WORK_SCHEMA) as writer:
            for batch in source.iter_batches(batch_size=group_rows):
                writer.write_table(pa.Table.from_batches([batch]).cast(schema.WORK_SCHEMA), row_group_size=group_rows)

    retrying(put, storage, "writing the work file")


class WorkSource(Datasource):
    """The work file as a Ray Data source: each read task reads a range of its row groups."""

    def __init__(self, uri: str, storage: Storage) -> None:
        self.uri, self.storage = uri, storage
        fs, path = storage.arrow_filesystem(uri)
        with fs.open_input_file(path) as f:
            metadata = pq.ParquetFile(f).metadata
        self.groups = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    @property
    def groups_per_task(self) -> int:
        group_rows = max(1, max(self.groups, default=1))
        # Enough rows a task that there are few tasks, but no fewer tasks than run at once: a small run's blocks
        # then come from several reads in parallel, and every model actor gets some from the start.
        few = min(math.ceil(READ_TASK_ROWS / group_rows), math.ceil(len(self.groups) / READ_CONCURRENCY))
        return max(math.ceil(len(self.groups) / MAX_READ_TASKS), few, 1)

    @property
    def num_tasks(self) -> int:
        return max(1, math.ceil(len(self.groups) / self.groups_per_task))

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, data_context=None) -> list[ReadTask]:
        per_task = self.groups_per_task
        return [self._task(start, min(start + per_task, len(self.groups))) for start in range(0, len(self.groups), per_task)]

    def _task(self, first: int, last: int) -> ReadTask:
        uri, storage = self.uri, self.storage

        def read() -> Iterator[pa.Table]:
            fs, path = storage.arrow_filesystem(uri)
            with fs.open_input_file(path) as f:
                parquet = pq.ParquetFile(f)
                for group in range(first, last):  # one block per group, as the CPU stage wants them
                    yield retrying(lambda: parquet.read_row_group(group), storage, "reading the work file")

        rows = sum(self.groups[first:last])
        return ReadTask(read, BlockMetadata(num_rows=rows, size_bytes=None, input_files=None, exec_stats=None))


def work_dataset(uri: str, storage: Storage) -> Dataset:
    """The work file at `uri` as a Ray dataset of one block per row group; its reads hold no CPU, which the model
    actors hold every one of, and `READ_CONCURRENCY` run at once."""
    source = WorkSource(uri, storage)
    # As many blocks asked for as there are tasks: Ray Data would otherwise split each task's blocks further.
    return read_datasource(source, num_cpus=0, concurrency=min(READ_CONCURRENCY, source.num_tasks),
                           override_num_blocks=source.num_tasks)
