"""Committing the write stage's files while the run goes: a version of each table every `commit_rows` rows or every
`commit_seconds`, whichever comes first, so that a run killed at any moment keeps all but its last few files."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from pipeline.layout import EMBEDDINGS_DIR, ERRORS_DIR
from pipeline.tables import DataFile, RunTable

logger = logging.getLogger(__name__)


class Committer:
    """Gathers the data files the workers wrote and commits them in batches (embeddings and errors apart)."""

    def __init__(self, tables: dict[str, RunTable], commit_rows: int, commit_seconds: float) -> None:
        """tables: by folder name (`layout.EMBEDDINGS_DIR`, `layout.ERRORS_DIR`)."""
        self.tables = tables
        self.commit_rows, self.commit_seconds = commit_rows, commit_seconds
        self.pending: list[DataFile] = []
        self.seen: set[tuple[str, str]] = set()  # (table, path) of every file taken, so none is committed twice
        self.committed = {EMBEDDINGS_DIR: 0, ERRORS_DIR: 0}  # rows
        self.commits = 0
        self.last = time.monotonic()

    def add(self, files: Sequence[DataFile]) -> None:
        """Takes files the write stage reported; commits when enough rows or time have gathered."""
        for f in files:
            if (f.table, f.path) not in self.seen:
                self.seen.add((f.table, f.path))
                self.pending.append(f)
        if sum(f.rows for f in self.pending) >= self.commit_rows or time.monotonic() - self.last >= self.commit_seconds:
            self.flush()

    def flush(self) -> None:
        """Commits every pending file: one version of each table that has some."""
        for name in (ERRORS_DIR, EMBEDDINGS_DIR):
            files = [f for f in self.pending if f.table == name]
            if files:
                self.tables[name].add_files(files)
                self.committed[name] += sum(f.rows for f in files)
        if self.pending:
            self.commits += 1
            logger.info(
                "committed %d embeddings and %d errors so far (%d commits)",
                self.committed[EMBEDDINGS_DIR],
                self.committed[ERRORS_DIR],
                self.commits,
            )
        self.pending = []
        self.last = time.monotonic()
