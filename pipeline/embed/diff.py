"""What a run has to do: the listing compared with the tables by path and object identity, in bounded memory.

New and changed images are embedded, unchanged ones skipped, gone ones removed (docs/design.md, "What a run does").
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from pipeline import schema

logger = logging.getLogger(__name__)

# Rows of the table side: the embeddings' and the errors' path and identity, with the table each is in.
_TABLE_SIDE = f"""
    SELECT {schema.PATH}, {schema.SIZE}, {schema.MTIME}, {schema.ETAG},
           'embeddings' AS tbl, FALSE AS retryable FROM embeddings
    UNION ALL
    SELECT {schema.PATH}, {schema.SIZE}, {schema.MTIME}, {schema.ETAG},
           'errors' AS tbl, {schema.RETRYABLE} AS retryable FROM errors
"""
_SAME = f"""(CASE WHEN coalesce(l.{schema.ETAG}, '') <> '' AND coalesce(t.{schema.ETAG}, '') <> ''
                  THEN l.{schema.ETAG} = t.{schema.ETAG}
                  ELSE l.{schema.SIZE} IS NOT DISTINCT FROM t.{schema.SIZE}
                       AND l.{schema.MTIME} IS NOT DISTINCT FROM t.{schema.MTIME} END)"""
_STATUS = f"""CASE WHEN t.{schema.PATH} IS NULL THEN 'new'
                   WHEN l.{schema.PATH} IS NULL THEN 'removed'
                   WHEN NOT {_SAME} THEN 'changed'
                   WHEN t.tbl = 'errors' AND t.retryable THEN 'unreadable before'
                   WHEN t.tbl = 'errors' THEN 'failed before'
                   ELSE 'unchanged' END"""


@dataclass(frozen=True)
class DiffConfig:
    """How the listing and the tables are compared."""

    retry_errors: bool = False  # embed again the unchanged objects that failed before (a flaky read, say)
    keep_missing: bool = False  # keep the rows of objects that are no longer listed
    memory_limit: str = "1GB"  # DuckDB's own memory; it spills to a temporary folder past it
    threads: int = 2


@dataclass(frozen=True)
class Diff:
    """What the run does."""

    work_file: str  # local Parquet file of `schema.WORK_SCHEMA`: the rows to embed (new, changed, retried), each with
    # the id it gets, in path order
    work_rows: int
    remove_embeddings: pa.Array  # string: paths whose embeddings row goes (changed, removed)
    remove_errors: pa.Array  # string: paths whose error row goes (changed, retried, removed)
    counts: dict[str, int]  # listed, new, changed, unchanged, failed_before, retried, removed

    def work(self) -> pa.Table:
        """The work file, read whole (for small runs and tests)."""
        return pq.read_table(self.work_file).cast(schema.WORK_SCHEMA)


def compare(
    listing: pa.Table | str,
    embeddings: pads.Dataset | None,
    errors: pads.Dataset | None,
    folder: str,
    config: DiffConfig = DiffConfig(),
    first_id: int = 0,
) -> Diff:
    """Compares a listing (a table, or a glob of Parquet files, of `schema.LISTING_SCHEMA`) with the tables.

    A table that does not exist yet is None. DuckDB spills to `folder` and writes the work there, numbered from
    `first_id` in path order; only the paths to remove are held in memory. A path listed twice is compared once.
    """
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{config.memory_limit}'")
    con.execute(f"SET temp_directory = '{_quoted(os.path.join(folder, 'spill'))}'")
    con.execute(f"SET threads = {config.threads}")
    con.execute("SET preserve_insertion_order = false")
    if isinstance(listing, str):
        con.execute(f"CREATE VIEW listed AS SELECT * FROM read_parquet('{_quoted(listing)}')")
    else:
        con.register("listed", listing)
    con.execute(f"""CREATE VIEW listing AS SELECT {schema.PATH}, any_value({schema.SIZE}) AS {schema.SIZE},
                    any_value({schema.MTIME}) AS {schema.MTIME}, any_value({schema.ETAG}) AS {schema.ETAG}
                    FROM listed GROUP BY {schema.PATH}""")
    for name, found in (("embeddings", embeddings), ("errors", errors)):
        con.register(name, found if found is not None else schema.ERRORS_SCHEMA.empty_table())
    con.execute(f"""
        CREATE TABLE classified AS
        SELECT coalesce(l.{schema.PATH}, t.{schema.PATH}) AS {schema.PATH}, l.{schema.SIZE}, l.{schema.MTIME},
               l.{schema.ETAG}, t.tbl, {_STATUS} AS status
        FROM listing l FULL OUTER JOIN ({_TABLE_SIDE}) t ON l.{schema.PATH} = t.{schema.PATH}
        WHERE status <> 'unchanged'
    """)
    counts = dict(con.execute("SELECT status, count(*) FROM classified GROUP BY status").fetchall())
    listed = con.execute("SELECT count(*) FROM listing").fetchone()[0]
    retry = "'unreadable before', 'failed before'" if config.retry_errors else "'unreadable before'"
    removed = "'removed'" if not config.keep_missing else "NULL"
    work_file = os.path.join(folder, "work.parquet")
    columns = ", ".join(schema.LISTING_SCHEMA.names)
    con.execute(f"""COPY (
        SELECT {first_id} - 1 + row_number() OVER (ORDER BY {schema.PATH}) AS {schema.ID}, {columns}
        FROM (SELECT DISTINCT {columns} FROM classified WHERE status IN ('new', 'changed', {retry}))
        ORDER BY {schema.PATH}
    ) TO '{_quoted(work_file)}' (FORMAT parquet)""")
    work_rows = pq.read_metadata(work_file).num_rows
    remove = {
        table: _query(
            con,
            folder,
            table,
            f"""
            SELECT DISTINCT {schema.PATH} FROM classified
            WHERE tbl = '{table}' AND status IN ('changed', {removed}{", " + retry if table == "errors" else ""})""",
        )
        for table in ("embeddings", "errors")
    }
    con.close()
    failed_before = counts.get("failed before", 0) + counts.get("unreadable before", 0)
    retried = counts.get("unreadable before", 0) + (counts.get("failed before", 0) if config.retry_errors else 0)
    result = {
        "listed": listed,
        "new": counts.get("new", 0),
        "changed": counts.get("changed", 0),
        "unchanged": listed - counts.get("new", 0) - counts.get("changed", 0) - failed_before,
        "failed_before": failed_before,
        "retried": retried,
        "removed": counts.get("removed", 0),
    }
    logger.info(
        "listed %(listed)d: %(new)d new, %(changed)d changed, %(unchanged)d unchanged, %(failed_before)d failed "
        "before (%(retried)d retried), %(removed)d gone",
        result,
    )
    return Diff(
        work_file,
        work_rows,
        remove["embeddings"].column(schema.PATH).combine_chunks(),
        remove["errors"].column(schema.PATH).combine_chunks(),
        result,
    )


def _query(con: duckdb.DuckDBPyConnection, folder: str, name: str, sql: str) -> pa.Table:
    """The rows of `sql`, through a Parquet file (DuckDB writes it within its memory limit)."""
    path = os.path.join(folder, f"{name}.parquet")
    con.execute(f"COPY ({sql}) TO '{_quoted(path)}' (FORMAT parquet)")
    return pq.read_table(path)


def _quoted(path: str) -> str:
    return path.replace("'", "''")
