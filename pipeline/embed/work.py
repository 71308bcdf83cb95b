"""The work as Ray datasets. A run's work is on storage every node reaches: the diff's rows to embed, in a Parquet
file of small row groups, read by Ray Data one group per read task; the driver streams the rows into the file and
never holds them, and puts no block of them in Ray's object store. Pre-training's listing, held in memory, becomes a
dataset of the CPU stage's output (`decoded_images`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.data import Dataset, Datasource, ReadTask, read_datasource
from ray.data.block import BlockMetadata

from pipeline import schema
from pipeline.embed.preprocess import PreprocessConfig, preprocess_batch
from pipeline.retry import retrying
from pipeline.storage import Storage

logger = logging.getLogger(__name__)

# Read tasks planned on the driver, at most: row groups grow past a batch to keep to it. Each task reads one row
# group, because what one read task yields travels downstream as one bundle: a task of many groups would make one
# model task of all their rows, and one write and commit of them.
MAX_READ_TASKS = 20_000
# Read tasks at once: one for each model actor, at most this many. They hold no CPU (the model actors hold every one),
# so Ray starts a worker process for each read running at once, about a second of a core each: on a machine of a few
# cores that is a visible share of a run (benchmarks/RESULTS.md). Reading a row group of paths takes milliseconds, so
# a few keep any model fed, and one for each actor feeds actors that become ready at different moments.
READ_CONCURRENCY = 4
# Images a decode task takes at most: GPU batches are larger, and a task decoding a whole one would hold back the
# first batch and spread the work over fewer CPUs.
MAX_BLOCK_ROWS = 64


def put_work(local_file: str, uri: str, storage: Storage, group_rows: int) -> None:
    """Copies the diff's work file to `uri`, rewritten in row groups of `group_rows` rows (more where that would
    make more than `MAX_READ_TASKS` groups), a group at a time."""

    def put() -> None:
        fs, path = storage.arrow_filesystem(uri)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        source = pq.ParquetFile(local_file)
        rows = max(group_rows, math.ceil(source.metadata.num_rows / MAX_READ_TASKS))
        with fs.open_output_stream(path) as sink, pq.ParquetWriter(sink, schema.WORK_SCHEMA) as writer:
            for batch in source.iter_batches(batch_size=rows):
                writer.write_table(pa.Table.from_batches([batch]).cast(schema.WORK_SCHEMA), row_group_size=rows)

    retrying(put, storage, "writing the work file")


def _open_work(uri: str, storage: Storage) -> pq.ParquetFile:
    """The work file, its footer read; an outage is waited out, as a read task may start during one."""

    def open_() -> pq.ParquetFile:
        fs, path = storage.arrow_filesystem(uri)
        return pq.ParquetFile(path, filesystem=fs)

    return retrying(open_, storage, "opening the work file")


class WorkSource(Datasource):
    """The work file as a Ray Data source: each read task reads one of its row groups (a range of them in a file of
    more than `MAX_READ_TASKS` groups)."""

    def __init__(self, uri: str, storage: Storage) -> None:
        self.uri, self.storage = uri, storage
        with _open_work(uri, storage) as parquet:
            metadata = parquet.metadata
        self.groups = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    @property
    def groups_per_task(self) -> int:
        return max(1, math.ceil(len(self.groups) / MAX_READ_TASKS))

    @property
    def num_tasks(self) -> int:
        return max(1, math.ceil(len(self.groups) / self.groups_per_task))

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context=None
    ) -> list[ReadTask]:
        per_task = self.groups_per_task
        return [
            self._task(start, min(start + per_task, len(self.groups))) for start in range(0, len(self.groups), per_task)
        ]

    def _task(self, first: int, last: int) -> ReadTask:
        uri, storage = self.uri, self.storage

        def read() -> Iterator[pa.Table]:
            with _open_work(uri, storage) as parquet:
                for group in range(first, last):  # one block per group
                    yield retrying(lambda group=group: parquet.read_row_group(group), storage, "reading the work file")

        rows = sum(self.groups[first:last])
        return ReadTask(read, BlockMetadata(num_rows=rows, size_bytes=None, input_files=None, exec_stats=None))


def work_dataset(uri: str, storage: Storage, actors: int) -> Dataset:
    """The work file at `uri` as a Ray dataset of one block per row group; its reads hold no CPU, which the model
    actors hold every one of, and one runs at a time for each of the `actors` model actors (`READ_CONCURRENCY`)."""
    source = WorkSource(uri, storage)
    reads = max(1, min(READ_CONCURRENCY, actors, source.num_tasks))
    # As many blocks asked for as there are tasks: Ray Data would otherwise split each task's blocks further.
    return read_datasource(source, num_cpus=0, concurrency=reads, override_num_blocks=source.num_tasks)


def block_rows(rows: int, batch_size: int) -> int:
    """Rows per block of the CPU stage: at most `batch_size`, at most `MAX_BLOCK_ROWS`, and fewer when there are few
    rows, so that decoding spreads over every CPU of the cluster from the start; the model stage gathers the blocks
    into its batches."""
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return max(1, min(batch_size, MAX_BLOCK_ROWS, -(-rows // cpus)))


def decoded_images(listing: pa.Table, config: PreprocessConfig, batch_size: int) -> ray.data.Dataset:
    """A listing held in memory (pre-training's) as a Ray dataset mapped through `preprocess_batch` (lazy,
    streaming)."""
    block = block_rows(listing.num_rows, batch_size)
    blocks = [listing.slice(i, block) for i in range(0, listing.num_rows, block)]
    return ray.data.from_arrow(blocks).map_batches(
        preprocess_batch, fn_kwargs={"config": config}, batch_size=block, batch_format="numpy"
    )
