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
from pipeline.storage import Storage, folder, write_parquet
from pipeline.tables import DataFile, file_stats

logger = logging.getLogger(__name__)

# The columns of the stage's output: one row per data file written.
FILE_COLUMNS = ("table", "path", "size", "rows", "modified_ms", "stats")


@dataclass(frozen=True)
class WriteConfig:
    """Where the write stage puts its files."""

    output: str  # the output folder, local or s3://
    run_id: str  # recorded in every row, and in the file names
    storage: Storage = field(default_factory=Storage)  # reaches the output


def _table(batch: dict[str, np.ndarray], rows: np.ndarray, target: pa.Schema, run_id: str) -> pa.Table:
    columns = {}
    for name in target.names:
        if name == schema.RUN:
            columns[name] = pa.array([run_id] * int(rows.sum()), pa.string())
            continue
        values = batch[name][rows]
        if name == schema.EMBEDDING:
            flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).ravel())
            columns[name] = pa.ListArray.from_arrays(pa.array(np.arange(len(values) + 1) * values.shape[1], pa.int32()), flat)
        elif name == schema.LOSS:
            columns[name] = pa.array(values, pa.float32(), mask=np.isnan(values))
        else:
            columns[name] = pa.array([None if isinstance(v, str) and not v else v for v in values], target.field(name).type)
    return pa.table(columns, schema=target)


def write_batch(batch: dict[str, np.ndarray], config: WriteConfig) -> dict[str, np.ndarray]:
    """Writes the batch's embedded rows and failed rows; returns one row per file written (`FILE_COLUMNS`)."""
    failed = schema.failed_rows(batch[schema.ERROR])
    name = f"part-{config.run_id}-{int(np.min(batch[schema.ID])):012d}.parquet"
    output = folder(config.output, config.storage, create=True)
    written = []
    for table_dir, rows, target in ((EMBEDDINGS_DIR, ~failed, schema.EMBEDDINGS_SCHEMA), (ERRORS_DIR, failed, schema.ERRORS_SCHEMA)):
        if rows.any():
            table = _table(batch, rows, target, config.run_id)
            size = write_parquet(output, f"{table_dir}/{name}", table)
            written.append(DataFile(table_dir, name, size, table.num_rows, int(time.time() * 1000), file_stats(table)))
    return {column: np.array([getattr(f, column) for f in written], dtype=object) for column in FILE_COLUMNS}


def data_files(rows: dict[str, np.ndarray]) -> list[DataFile]:
    """The write stage's output rows back as `DataFile`s."""
    return [
        DataFile(str(rows["table"][i]), str(rows["path"][i]), int(rows["size"][i]), int(rows["rows"][i]),
                 int(rows["modified_ms"][i]), str(rows["stats"][i]))
        for i in range(len(rows["path"]))
    ]
