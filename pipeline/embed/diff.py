"""What a run has to do: the listing compared with the tables by path and object identity, in bounded memory.

DuckDB joins the listing with the path and identity columns of the embeddings and errors tables (a Delta version,
read as a pyarrow dataset, so the embeddings themselves are never read) and spills to disk past its memory limit.

- new: listed, in neither table -> embedded
- changed: listed, in a table with another identity (ETag where both have one, else size and modification time)
  -> its old row removed, then embedded again
- unchanged: listed, same identity -> skipped, its bytes never read; an error row only with `retry_errors`
- removed: in a table, not listed -> its row removed (unless `keep_missing`)
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from pipeline import schema

logger = logging.getLogger(__name__)

# Rows of the table side: the embeddings' and the errors' path and identity, with the table each is in.
_TABLE_SIDE = f"""
    SELECT {schema.PATH}, {schema.SIZE}, {schema.MTIME}, {schema.ETAG}, 'embeddings' AS tbl FROM embeddings
    UNION ALL
    SELECT {schema.PATH}, {schema.SIZE}, {schema.MTIME}, {schema.ETAG}, 'errors' AS tbl FROM errors
"""
_SAME = f"""(CASE WHEN coalesce(l.{schema.ETAG}, '') <> '' AND coalesce(t.{schema.ETAG}, '') <> ''
                  THEN l.{schema.ETAG} = t.{schema.ETAG}
                  ELSE l.{schema.SIZE} IS NOT DISTINCT FROM t.{schema.SIZE}
                       AND l.{schema.MTIME} IS NOT DISTINCT FROM t.{schema.MTIME} END)"""
_STATUS = f"""CASE WHEN t.{schema.PATH} IS NULL THEN 'new'
                   WHEN l.{schema.PATH} IS NULL THEN 'removed'
                   WHEN NOT {_SAME} THEN 'changed'
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

    work: pa.Table  # `schema.LISTING_SCHEMA` rows to embed (new, changed, retried), sorted by path
    remove_embeddings: pa.Array  # string: paths whose embeddings row goes (changed, removed)
    remove_errors: pa.Array  # string: paths whose error row goes (changed, retried, removed)
    counts: dict[str, int]  # listed, new, changed, unchanged, failed before, retried, removed


def compare(listing: pa.Table | str, embeddings: pads.Dataset | None, errors: pads.Dataset | None,
            config: DiffConfig = DiffConfig()) -> Diff:
    """Compares a listing (a table, or the path of a Parquet file of `schema.LISTING_SCHEMA`) with the tables.

    A table that does not exist yet is None. The classification is written by DuckDB to Parquet files in a temporary
    folder and read back: only the rows that need work are held in memory.
    """
    with tempfile.TemporaryDirectory(prefix="vitmae-diff-") as tmp:
        con = duckdb.connect()
        con.execute(f"SET memory_limit = '{config.memory_limit}'")
        con.execute(f"SET temp_directory = '{os.path.join(tmp, 'spill')}'")
        con.execute(f"SET threads = {config.threads}")
        con.execute("SET preserve_insertion_order = false")
        if isinstance(listing, str):
            con.execute(f"CREATE VIEW listing AS SELECT * FROM read_parquet('{_quoted(listing)}')")
        else:
            con.register("listing", listing)
        empty = pa.table({name: pa.array([], type) for name, type in zip(schema.LISTING_SCHEMA.names, schema.LISTING_SCHEMA.types)})
        for name, found in (("embeddings", embeddings), ("errors", errors)):
            con.register(name, found if found is not None else empty)
        con.execute(f"""
            CREATE TABLE classified AS
            SELECT coalesce(l.{schema.PATH}, t.{schema.PATH}) AS {schema.PATH}, l.{schema.SIZE}, l.{schema.MTIME},
                   l.{schema.ETAG}, t.tbl, {_STATUS} AS status
            FROM listing l FULL OUTER JOIN ({_TABLE_SIDE}) t ON l.{schema.PATH} = t.{schema.PATH}
            WHERE status <> 'unchanged'
        """)
        counts = dict(con.execute("SELECT status, count(*) FROM classified GROUP BY status").fetchall())
        listed = con.execute("SELECT count(*) FROM listing").fetchone()[0]
        retry = "'failed before'" if config.retry_errors else "NULL"
        removed = "'removed'" if not config.keep_missing else "NULL"
        work = _query(con, tmp, "work", f"""
            SELECT DISTINCT {', '.join(schema.LISTING_SCHEMA.names)} FROM classified
            WHERE status IN ('new', 'changed', {retry}) ORDER BY {schema.PATH}""")
        remove = {
            table: _query(con, tmp, table, f"""
                SELECT DISTINCT {schema.PATH} FROM classified
                WHERE tbl = '{table}' AND status IN ('changed', {removed}{', ' + retry if table == 'errors' else ''})""")
            for table in ("embeddings", "errors")
        }
        con.close()
    work = work.cast(schema.LISTING_SCHEMA)
    retried = counts.get("failed before", 0) if config.retry_errors else 0
    result = {
        "listed": listed, "new": counts.get("new", 0), "changed": counts.get("changed", 0),
        "unchanged": listed - counts.get("new", 0) - counts.get("changed", 0) - counts.get("failed before", 0),
        "failed_before": counts.get("failed before", 0), "retried": retried, "removed": counts.get("removed", 0),
    }
    logger.info("listed %(listed)d: %(new)d new, %(changed)d changed, %(unchanged)d unchanged, %(failed_before)d failed "
                "before (%(retried)d retried), %(removed)d gone", result)
    return Diff(work, remove["embeddings"].column(schema.PATH).combine_chunks(),
                remove["errors"].column(schema.PATH).combine_chunks(), result)


def _query(con: duckdb.DuckDBPyConnection, folder: str, name: str, sql: str) -> pa.Table:
    """The rows of `sql`, through a Parquet file (DuckDB writes it within its memory limit)."""
    path = os.path.join(folder, f"{name}.parquet")
    con.execute(f"COPY ({sql}) TO '{_quoted(path)}' (FORMAT parquet)")
    return pq.read_table(path)


def _quoted(path: str) -> str:
    return path.replace("'", "''")
