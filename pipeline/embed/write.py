"""The write stage: each batch becomes one Parquet data file in the embeddings table's folder and one in the errors
table's, written atomically; the driver commits them (`pipeline.tables`).

File names come from the run and the batch's smallest id, zero-padded: a retried batch writes the same name again, so
a file is never committed twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from pipeline import schema
from pipeline.layout import EMBEDDINGS_DIR, ERRORS_DIR
from pipeline.retry import retrying
from pipeline.storage import Storage, folder, write_parquet
from pipeline.storage_errors import StorageOutage
from pipeline.tables import DataFile, file_stats

logger = logging.getLogger(__name__)

# The columns of the stage's output: one row per data file written, and the Ray nodes that embedded its rows.
FILE_COLUMNS = ("table", "path", "size", "rows", "modified_ms", "stats")
NODES = "nodes"
# Rows a data file holds at least, where the model's batches are smaller (on CPUs): each file costs a write task, a
# Parquet footer and an entry in the table's log, and 8-row files kept worker processes starting beside the model
# actors on a small machine (benchmarks/RESULTS.md).
FILE_ROWS = 64
OUTAGE = "outage"  # why nothing was written: the storage stayed unreachable


@dataclass(frozen=True)
class WriteConfig:
    """Where the write stage puts its files."""

    output: str  # the output folder, local or s3://
    run_id: str  # recorded in every row, and in the file names
    storage: Storage = field(default_factory=Storage.from_environment)  # reaches the output
    patch_loss: bool = False  # the embeddings table keeps each patch's loss (`schema.PATCH_LOSS`)


def _table(batch: dict[str, np.ndarray], rows: np.ndarray, target: pa.Schema, run_id: str) -> pa.Table:
    columns = {}
    for name in target.names:
        if name == schema.RUN:
            columns[name] = pa.array([run_id] * int(rows.sum()), pa.string())
            continue
        values = batch[name][rows]
        if name == schema.EMBEDDING:
            flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).ravel())
            columns[name] = pa.ListArray.from_arrays(
                pa.array(np.arange(len(values) + 1) * values.shape[1], pa.int32()), flat
            )
        elif name == schema.LOSS:
            columns[name] = pa.array(values, pa.float32(), mask=np.isnan(values))
        elif name == schema.PATCH_LOSS:
            columns[name] = schema.pack_patch_loss(values)
        else:
            columns[name] = pa.array(
                [None if isinstance(v, str) and not v else v for v in values], target.field(name).type
            )
    return pa.table(columns, schema=target)


def write_batch(batch: dict[str, np.ndarray], config: WriteConfig) -> dict[str, np.ndarray]:
    """Writes the batch's embedded rows and failed rows; returns one row per file written (`FILE_COLUMNS`, `NODES`,
    `OUTAGE` empty), or, when the storage stayed unreachable, one row that says so in `OUTAGE` (the driver stops the
    run with it: an exception here would reach it only as Ray Data's "UDF failed")."""
    failed = schema.failed_rows(batch[schema.ERROR])
    name = f"part-{config.run_id}-{int(np.min(batch[schema.ID])):012d}.parquet"
    written = []
    try:
        output = retrying(
            lambda: folder(config.output, config.storage, create=True), config.storage, "the output folder"
        )
        for table_dir, rows, target in (
            (EMBEDDINGS_DIR, ~failed, schema.embeddings_schema(config.patch_loss)),
            (ERRORS_DIR, failed, schema.ERRORS_SCHEMA),
        ):
            if rows.any():
                table = _table(batch, rows, target, config.run_id)
                size = retrying(
                    lambda table_dir=table_dir, table=table: write_parquet(output, f"{table_dir}/{name}", table),
                    config.storage,
                    f"writing {name}",
                )
                written.append(
                    DataFile(table_dir, name, size, table.num_rows, int(time.time() * 1000), file_stats(table))
                )
    except StorageOutage as err:
        return _rows([DataFile("", "", 0, 0, 0, "")], "", str(err))
    return _rows(written, ",".join(sorted({node for node in batch.get(schema.NODE, ()) if node})), "")


def _rows(files: list[DataFile], nodes: str, outage: str) -> dict[str, np.ndarray]:
    return {
        **{column: np.array([getattr(f, column) for f in files], dtype=object) for column in FILE_COLUMNS},
        NODES: np.array([nodes] * len(files), dtype=object),
        OUTAGE: np.array([outage] * len(files), dtype=object),
    }


def data_files(rows: dict[str, np.ndarray]) -> list[DataFile]:
    """The write stage's output rows back as `DataFile`s.

    Raises:
        StorageOutage: a write stage stayed without its storage.
    """
    outages = [str(message) for message in rows[OUTAGE] if message]
    if outages:
        raise StorageOutage(outages[0])
    return [
        DataFile(
            str(rows["table"][i]),
            str(rows["path"][i]),
            int(rows["size"][i]),
            int(rows["rows"][i]),
            int(rows["modified_ms"][i]),
            str(rows["stats"][i]),
        )
        for i in range(len(rows["path"]))
    ]
