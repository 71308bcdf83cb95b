"""A run's Delta Lake tables (`embeddings/`, `errors/`, `runs/`), written by one run at a time through `deltalake`.

Data files are Parquet, written by the Ray workers and committed by the driver. Every commit of a run follows the
last version that run saw, with no retry: a commit by anyone else in between (a second run on the same table)
fails the next commit of this one with `ConcurrentRunError`, before it can write a row twice. Readers open a
version with `open_table` and read it as a pyarrow dataset over an explicit filesystem (deltalake's own one aborts
some processes at exit).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import AddAction, CommitProperties

from pipeline.retry import retrying
from pipeline.schema import (
    ADD_COMMIT,
    COMMIT_FILES,
    COMMIT_KIND,
    COMMIT_PATHS,
    COMMIT_PREFIX,
    COMMIT_ROWS,
    COMMIT_RUN,
    COMMIT_TIME,
    COMMIT_TOKEN,
    COMMIT_WORK,
    COMPACT_COMMIT,
    CREATE_COMMIT,
    DESCRIBE_COMMIT,
    REMOVE_COMMIT,
    VACUUM_COMMIT,
)
from pipeline.storage import Storage
from pipeline.storage_errors import explained
from vitmae.errors import InvalidInput

logger = logging.getLogger(__name__)

DESCRIPTION_FORMAT = 1  # of the JSON that the embeddings table keeps as its description


class ConcurrentRunError(RuntimeError):
    """Another run committed to a table while this run was writing to it."""


@dataclass(frozen=True)
class DataFile:
    """A Parquet file a worker wrote into a table's folder, not yet committed."""

    table: str  # the table's folder name under the run (layout.EMBEDDINGS_DIR or ERRORS_DIR)
    path: str  # relative to the table's root
    size: int  # bytes
    rows: int
    modified_ms: int  # when it was written, milliseconds since the epoch
    stats: str  # Delta's per-file statistics, JSON

    def action(self) -> AddAction:
        return AddAction(self.path, self.size, {}, self.modified_ms, True, self.stats)


def file_stats(table: pa.Table) -> str:
    """Delta's statistics of one data file: rows, and minimum, maximum (not of binary ones) and null count of every
    scalar column.

    delta-rs skips files by them, counts rows by them, and tells conflicting commits apart by them.
    """
    minimum, maximum, nulls = {}, {}, {}
    for field in table.schema:
        column = table.column(field.name)
        if pa.types.is_list(field.type):
            continue
        nulls[field.name] = column.null_count
        if column.null_count < len(column) and not pa.types.is_binary(field.type):  # Delta keeps no bounds of bytes
            bounds = pc.min_max(column)
            minimum[field.name], maximum[field.name] = bounds["min"].as_py(), bounds["max"].as_py()
    return json.dumps({"numRecords": table.num_rows, "minValues": minimum, "maxValues": maximum, "nullCount": nulls})


def open_table(uri: str, storage: Storage, version: int | None = None) -> DeltaTable | None:
    """The Delta table at `uri` (at `version`, else the latest), or None where there is none.

    Raises:
        AccessDenied, NotFound (no such bucket), StorageAttemptUnreachable: what the store said
        (`storage_errors.storage_error`); `retrying` waits the last out.
    """
    with explained(uri, storage, "read"):
        try:
            return DeltaTable(uri, version=version, storage_options=storage.delta_options(uri))
        except TableNotFoundError:
            return None


def dataset(table: DeltaTable, uri: str, storage: Storage) -> pads.Dataset:
    """The live rows of `table` (found at `uri`) as a pyarrow dataset: only the files of its version, never the
    removed or uncommitted ones that the folder also holds."""
    fs, root = storage.arrow_filesystem(uri)
    return table.to_pyarrow_dataset(filesystem=pa.fs.SubTreeFileSystem(root, fs))


def description(table: DeltaTable) -> dict[str, Any]:
    """The JSON the embeddings table keeps as its description: settings and the next free id."""
    text = table.metadata().description or "{}"
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise InvalidInput(f"the table's description is not this project's JSON: {text[:80]!r}") from None


class RunTable:
    """One table of a run, written by this run alone: each commit must follow the version this run last saw.

    Args:
        uri: the table's folder, local or s3://.
        table: the table, opened at the version the run read.
        run_id: written into every commit's metadata.
    """

    def __init__(self, uri: str, storage: Storage, table: DeltaTable, run_id: str) -> None:
        self.uri, self.storage, self.table, self.run_id = uri, storage, table, run_id
        self.version = table.version()

    @classmethod
    def open_or_create(
        cls, uri: str, storage: Storage, schema: pa.Schema, run_id: str, about: str = "", read: DeltaTable | None = None
    ) -> RunTable:
        """The table at `uri` as the run read it (`read`, at the version its decisions came from), or created empty
        (with `about` as its description) where the run found none."""
        found = read
        if found is None:
            try:
                with explained(uri, storage, "write"):
                    created = CommitProperties(custom_metadata=_metadata(run_id, CREATE_COMMIT))
                    found = DeltaTable.create(
                        uri,
                        schema=schema,
                        description=about or None,
                        storage_options=storage.delta_options(uri),
                        commit_properties=created,
                    )
            except DeltaError:
                if open_table(uri, storage) is None:
                    raise
                raise ConcurrentRunError(
                    f"another run created {uri} while this run ({run_id}) was starting; two runs on "
                    "one output at once are refused: run the command again to go on"
                ) from None
            logger.info("created the table %s", uri)
        return cls(uri, storage, found, run_id)

    def add_files(self, files: Sequence[DataFile], **metadata: Any) -> None:
        """Commits the files (appends their rows), as one version."""
        actions = [f.action() for f in files]
        arrow_schema = self.table.schema().to_arrow()
        self._commit(
            lambda props: self.table.create_write_transaction(actions, "append", arrow_schema, commit_properties=props),
            ADD_COMMIT,
            {COMMIT_ROWS: sum(f.rows for f in files), COMMIT_FILES: len(files), **_named(metadata)},
        )

    def delete_paths(self, paths: pa.Array, **metadata: Any) -> int:
        """Removes the rows of `paths` (string [P]) as one version; returns how many rows went."""
        if not len(paths):
            return 0
        source = pa.table({"path": paths.cast(pa.string())})
        deleted = {}

        def merge(props: CommitProperties) -> None:
            merger = self.table.merge(
                source,
                "t.path = s.path",
                source_alias="s",
                target_alias="t",
                streamed_exec=False,
                commit_properties=props,
            )
            deleted.update(merger.when_matched_delete().execute())

        self._commit(merge, REMOVE_COMMIT, {COMMIT_PATHS: len(paths), **_named(metadata)})
        return int(deleted.get("num_target_rows_deleted", 0))

    def set_description(self, text: str, work: int) -> None:
        """Sets the table's description as one version, recording the rows the run set out to embed (`work`)."""
        self._commit(
            lambda props: self.table.alter.set_table_description(text, commit_properties=props),
            DESCRIBE_COMMIT,
            {COMMIT_WORK: work},
        )

    def compact(self) -> dict[str, Any]:
        """Rewrites small files into large ones (data unchanged) as one version."""
        result = {}
        self._commit(lambda props: result.update(self.table.optimize.compact(commit_properties=props)), COMPACT_COMMIT)
        return result

    def vacuum(self, retention_hours: float) -> list[str]:
        """Deletes the files no version since `retention_hours` ago needs: replaced rows, and files of runs that died
        before committing them. Two versions (start and end of the vacuum)."""
        removed: list[str] = []
        self._commit(
            lambda props: removed.extend(
                self.table.vacuum(
                    retention_hours=int(retention_hours),
                    dry_run=False,
                    enforce_retention_duration=False,
                    full=True,
                    commit_properties=props,
                )
            ),
            VACUUM_COMMIT,
            expected_versions=2,
        )
        return removed

    def _commit(self, operation, kind: str, metadata: dict[str, Any] | None = None, expected_versions: int = 1) -> None:
        """Runs `operation(CommitProperties)` on the version this run last saw, with no conflict retry.

        An outage of the store is waited out (`pipeline.retry`); a commit whose answer was lost to it is recognised
        by its token in the log, so it is neither repeated nor taken for another run's.
        """
        token = uuid.uuid4().hex
        custom = _metadata(self.run_id, kind, {COMMIT_TOKEN: token, **(metadata or {})})
        properties = CommitProperties(custom_metadata=custom, max_commit_retries=0)

        def attempt() -> None:
            self.table.update_incremental()
            if self._landed(token):
                return
            if self.table.version() != self.version:
                raise self._concurrent(self.table.version())
            try:
                operation(properties)
            except CommitFailedError:
                self.table.update_incremental()
                if not self._landed(token):
                    raise self._concurrent(self.table.version()) from None

        with explained(self.uri, self.storage, "write"):  # credentials can expire while a run goes on
            retrying(attempt, self.storage, f"committing to {self.uri}")
            retrying(self.table.update_incremental, self.storage, f"reading {self.uri}")
        if self.table.version() > self.version + expected_versions:
            raise self._concurrent(self.table.version())
        self.version = self.table.version()

    def _landed(self, token: str) -> bool:
        """Whether a version after the last this run saw carries `token`: a commit of this run's that went through."""
        newer = self.table.version() - self.version
        return newer > 0 and any(h.get(COMMIT_TOKEN) == token for h in self.table.history(limit=newer))

    def _concurrent(self, version: int) -> ConcurrentRunError:
        newer = self.table.history(limit=max(1, version - self.version))
        other = next((h for h in newer if h.get(COMMIT_RUN) != self.run_id), {})
        who = f"run {other[COMMIT_RUN]}" if other.get(COMMIT_RUN) else "another writer"
        return ConcurrentRunError(
            f"{who} committed to {self.uri} (version {version}) while this run ({self.run_id}) was writing to it; "
            "two runs on one output at once are refused: what this run committed stays, run the command again to go on"
        )


def _metadata(run_id: str, kind: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A commit's metadata: the run, the kind of commit, the time, and `extra` (keys of `schema.COMMIT_*`)."""
    return {COMMIT_RUN: run_id, COMMIT_KIND: kind, COMMIT_TIME: time.time(), **(extra or {})}


def _named(metadata: dict[str, Any]) -> dict[str, Any]:
    """A caller's own commit metadata, each key under `COMMIT_PREFIX`."""
    return {f"{COMMIT_PREFIX}{k}": v for k, v in metadata.items()}


def run_commits(table: DeltaTable, limit: int | None = None) -> list[dict[str, Any]]:
    """The commits of `table` made by runs, newest first, with their `vitmae.*` metadata."""
    return [h for h in table.history(limit) if COMMIT_RUN in h]
