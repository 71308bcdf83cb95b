"""Committing the write stage's files while the run goes: a version of each table every `commit_rows` rows or every
`commit_seconds`, whichever comes first, so that a run killed at any moment keeps all but its last few files."""

from __future__ import annotations

import logging
import threading
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
        self.written = 0  # rows of every file taken, committed or not
        self.commits = 0
        self.last = time.monotonic()
        self._lock = threading.RLock()  # `tick` runs in the progress thread

    def add(self, files: Sequence[DataFile]) -> None:
        """Takes files the write stage reported; commits when enough rows or time have gathered."""
        with self._lock:
            for f in files:
                if (f.table, f.path) not in self.seen:
                    self.seen.add((f.table, f.path))
                    self.pending.append(f)
                    self.written += f.rows
            if sum(f.rows for f in self.pending) >= self.commit_rows:
                self._flush()
            else:
                self.tick()

    def tick(self) -> None:
        """Commits the pending files once `commit_seconds` have passed since the last commit."""
        with self._lock:
            if self.pending and time.monotonic() - self.last >= self.commit_seconds:
                self._flush()

    def flush(self) -> None:
        """Commits every pending file: one version of each table that has some."""
        with self._lock:
            self._flush()

    def _flush(self) -> None:
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
