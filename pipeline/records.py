"""The history of an output's runs: one row per finished run in the Delta table `runs/`, and what the embeddings
table's own commits say of runs that never finished.

A record holds the run's settings, the model and processor, its counts, timings, the table versions it committed
and the index it left. `vitmae history` prints them; query images are embedded with the latest record's model.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pyarrow as pa
from deltalake import write_deltalake

from pipeline import schema
from pipeline.layout import EMBEDDINGS_DIR, RUNS_DIR, output_uri
from pipeline.storage import Storage
from pipeline.storage_errors import explained
from pipeline.tables import dataset, open_table, run_commits
from vitmae.errors import NotFound

logger = logging.getLogger(__name__)


def append_run(output: str, storage: Storage, record: dict[str, Any]) -> None:
    """Adds a finished run's record to `runs/`."""
    row = {
        schema.RUN: record["run_id"],
        schema.STARTED: record["started"],
        schema.FINISHED: record["finished"],
        schema.EMBEDDINGS_VERSION: record["versions"]["embeddings"],
        schema.RECORD: json.dumps(record, sort_keys=True),
    }
    uri = output_uri(output, RUNS_DIR)
    with explained(uri, storage, "write"):
        write_deltalake(
            uri,
            pa.Table.from_pylist([row], schema=schema.RUNS_SCHEMA),
            mode="append",
            storage_options=storage.delta_options(uri),
        )


def finished_runs(output: str, storage: Storage) -> list[dict[str, Any]]:
    """The records of the finished runs, newest first ([] before the first run finishes)."""
    uri = output_uri(output, RUNS_DIR)
    table = open_table(uri, storage)
    if table is None:
        return []
    rows = dataset(table, uri, storage).to_table(columns=[schema.FINISHED, schema.RECORD]).to_pylist()
    return [json.loads(row[schema.RECORD]) for row in sorted(rows, key=lambda r: r[schema.FINISHED], reverse=True)]


def latest_run(output: str, storage: Storage) -> dict[str, Any]:
    """The newest finished run's record.

    Raises:
        FileNotFoundError: no run of the embedding job has finished in `output`.
    """
    runs = finished_runs(output, storage)
    if not runs:
        raise NotFound(f"{output} holds no finished run of the embedding job (no {RUNS_DIR}/ table)")
    return runs[0]


def unfinished_runs(output: str, storage: Storage) -> list[dict[str, Any]]:
    """Runs that committed to the embeddings table but have no record: killed, or still going. Newest first, each
    {"run_id", "commits", "rows", "last_version", "last_time"}."""
    uri = output_uri(output, EMBEDDINGS_DIR)
    table = open_table(uri, storage)
    if table is None:
        return []
    finished = {run["run_id"] for run in finished_runs(output, storage)}
    found: dict[str, dict[str, Any]] = {}
    for commit in run_commits(table):
        run_id = commit[schema.COMMIT_RUN]
        if run_id in finished:
            continue
        entry = found.setdefault(
            run_id,
            {
                "run_id": run_id,
                "commits": 0,
                "rows": 0,
                "last_version": commit["version"],
                "last_time": commit.get(schema.COMMIT_TIME),
            },
        )
        entry["commits"] += 1
        if commit.get(schema.COMMIT_KIND) == schema.ADD_COMMIT:
            entry["rows"] += int(commit.get(schema.COMMIT_ROWS, 0))
    return list(found.values())
