"""The write stage: each batch becomes one embeddings and one errors Parquet file, written atomically."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from pipeline import schema
from pipeline.layout import EMBEDDINGS_DIR, ERRORS_DIR
from pipeline.storage import Storage, folder, write_parquet

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriteConfig:
    """Where the write stage puts its files."""

    output: str  # run folder, local or s3://
    storage: Storage = field(default_factory=Storage)  # reaches the output


def _table(batch: dict[str, np.ndarray], rows: np.ndarray, target: pa.Schema) -> pa.Table:
    columns = {}
    for name in target.names:
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
    """Writes the batch's embedded rows and failed rows; returns one row of counts.

    File names come from the batch's smallest listing row id, zero-padded, so they sort and a rerun
    writes the same names.
    """
    failed = schema.failed_rows(batch[schema.ERROR])
    name = f"part-{int(np.min(batch[schema.ROW_ID])):010d}.parquet"
    output = folder(config.output, config.storage, create=True)
    if (~failed).any():
        write_parquet(output, f"{EMBEDDINGS_DIR}/{name}", _table(batch, ~failed, schema.EMBEDDINGS_SCHEMA))
    if failed.any():
        write_parquet(output, f"{ERRORS_DIR}/{name}", _table(batch, failed, schema.ERRORS_SCHEMA))
    return {"embedded": np.array([int((~failed).sum())]), "failed": np.array([int(failed.sum())])}
