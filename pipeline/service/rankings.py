"""Pages of a run's rankings: anomalies (from `anomalies.parquet`, computed when missing or older than the table) and
near-duplicate groups (from `duplicates.parquet`, written by `vitmae duplicates`)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import schema
from pipeline.layout import ANOMALIES_FILE, DUPLICATES_FILE
from pipeline.retrieval.anomalies import AUTO, AnomalyConfig, has_loss, ranking, score_anomalies
from pipeline.retrieval.duplicates import group_of
from pipeline.retrieval.index_store import LoadedIndex
from pipeline.retrieval.vectors import Embeddings
from pipeline.storage import Storage, folder, listed_etag, listed_mtime, write_parquet
from vitmae.errors import InvalidInput, NotFound

logger = logging.getLogger(__name__)

SCORE_COLUMNS = (
    schema.RANK,
    schema.PATH,
    schema.LOSS,
    schema.LOSS_RANK,
    schema.KNN_DISTANCE,
    schema.KNN_RANK,
    schema.MEAN_RANK,
)


class RankingUnavailable(ValueError):
    """The ranking asked for cannot be made from this run (a loss ranking of a run embedded without a loss)."""


@dataclass(frozen=True)
class Page:
    """One page of a ranking."""

    total: int  # rows (anomalies) or groups (duplicates) in the whole ranking
    rows: list[dict[str, Any]]
    meta: dict[str, Any]  # what the ranking is: `by` and `k` (anomalies), `table_version`


def table_version_of(table: pa.Table, key: bytes) -> int | None:
    """The table version a ranking file says it was made from, under the metadata key `key` (None: none)."""
    try:
        return int((table.schema.metadata or {})[key])
    except (KeyError, ValueError):
        return None


class AnomalyRankings:
    """The anomaly rankings of one table version and its index. Every `by` is derived from one set of scores, so a
    second `by` costs a sort, not another kNN pass over the run."""

    def __init__(self, run: str, storage: Storage, embeddings: Embeddings, loaded: LoadedIndex) -> None:
        self.run, self.storage, self.embeddings, self.loaded = run, storage, embeddings, loaded
        self.table_version = embeddings.version
        self._lock = threading.Lock()  # one computation at a time; pages of a ready ranking need none
        self._scores: pa.Table | None = None  # the scores of this version, sorted by the `by` they were ranked by
        self._has_loss: bool | None = None
        # by -> (the scores, their ranking by `by` with the scores' row positions in place of paths)
        self._orders: dict[str, tuple[pa.Table, pa.Table]] = {}

    def page(self, by: str, offset: int, limit: int) -> Page:
        """Rows [offset, offset + limit) of the ranking by `by` (auto, loss, knn or both).

        Raises:
            RankingUnavailable: a ranking by loss (or both) of a run without a loss.
        """
        by = self.resolve(by)
        scores, order = self._order(by)
        window = order.slice(offset, limit)
        paths = scores.column(schema.PATH).take(window.column(schema.PATH))
        rows = window.set_column(window.schema.get_field_index(schema.PATH), schema.PATH, paths).to_pylist()
        k = (scores.schema.metadata or {}).get(schema.ANOMALIES_K, str(AnomalyConfig.k).encode())
        meta = {"by": by, "k": int(k), "table_version": self.table_version}
        return Page(order.num_rows, [{c: schema.nan_to_none(row[c]) for c in SCORE_COLUMNS} for row in rows], meta)

    def resolve(self, by: str) -> str:
        """`auto` -> knn (`AUTO`); RankingUnavailable for loss or both without a loss."""
        if by == "auto":
            return AUTO
        if self._has_loss is None:
            self._has_loss = has_loss(self.embeddings.dataset)
        if by in ("loss", "both") and not self._has_loss:
            raise RankingUnavailable(
                "the run has no reconstruction loss (it was embedded with --infer.mask_ratio 0); rank by knn"
            )
        return by

    def _order(self, by: str) -> tuple[pa.Table, pa.Table]:
        found = self._orders.get(by)
        if found is not None:
            return found
        with self._lock:
            if by not in self._orders:
                scores = self._load(by)
                positions = pa.array(np.arange(scores.num_rows), pa.int64())
                if (scores.schema.metadata or {}).get(schema.ANOMALIES_BY, b"").decode() == by:  # the file's own order
                    order = scores.select(list(SCORE_COLUMNS)).set_column(1, schema.PATH, positions)
                else:  # the rank rules of `vitmae anomalies`, on the file's scores
                    order = ranking(positions, _floats(scores, schema.LOSS), _floats(scores, schema.KNN_DISTANCE), by)
                self._orders[by] = (scores, order)
            return self._orders[by]

    def _load(self, by: str) -> pa.Table:
        """The scores that `by` needs: anomalies.parquet when it ranks this version, else computed from this version
        and its index (whatever the table's latest version is meanwhile), and written when the file is older."""
        if self._scores is not None and _covers(self._scores, by):
            return self._scores
        written = self._read()
        version = table_version_of(written, schema.ANOMALIES_TABLE_VERSION) if written is not None else None
        scores = written if version == self.table_version else None
        if scores is None or not _covers(scores, by):
            logger.info("ranking the anomalies of %s (version %d) by %s", self.run, self.table_version, by)
            scores = score_anomalies(AnomalyConfig(self.run, by=by), self.embeddings, self.loaded)
            if written is None or (version or -1) <= self.table_version:
                write_parquet(folder(self.run, self.storage), ANOMALIES_FILE, scores)
        self._scores, self._orders = scores, {}
        return scores

    def _read(self) -> pa.Table | None:
        """anomalies.parquet, or None."""
        found = folder(self.run, self.storage)
        try:
            with found.fs.open(found.path(ANOMALIES_FILE), "rb") as f:
                return pq.read_table(f)
        except FileNotFoundError:
            return None


def _floats(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).to_numpy(zero_copy_only=False).astype(np.float32)  # nulls -> NaN


def _covers(scores: pa.Table, by: str) -> bool:
    """Whether the scores hold what a ranking by `by` reads (a file ranked by loss without an index has no kNN)."""
    needs = {"loss": (schema.LOSS,), "knn": (schema.KNN_DISTANCE,), "both": (schema.LOSS, schema.KNN_DISTANCE)}[by]
    return all(scores.column(c).null_count < scores.num_rows for c in needs)


class DuplicateGroups:
    """Pages of duplicates.parquet's groups, largest first, each with its representative first; the file is read again
    whenever it changes."""

    def __init__(self, run: str, storage: Storage) -> None:
        self.run, self.storage = run, storage
        self._lock = threading.Lock()
        self._stamp: tuple | None = None  # the file's size and modification time (or ETag) when read
        self._table: pa.Table | None = None  # rows sorted group by group
        self._starts = np.empty(0, np.int64)  # int64 [G + 1]: where each group starts in _table, and the end

    def page(self, offset: int, limit: int) -> Page:
        """Groups [offset, offset + limit). FileNotFoundError: the run has no duplicates.parquet."""
        table, starts = self._current()
        rows = []
        for g in range(offset, min(offset + limit, len(starts) - 1)):
            rows.append(group_of(table.slice(starts[g], starts[g + 1] - starts[g]).to_pydict()))
        return Page(len(starts) - 1, rows, {"table_version": table_version_of(table, schema.DUPLICATES_TABLE_VERSION)})

    def _current(self) -> tuple[pa.Table, np.ndarray]:
        found = folder(self.run, self.storage)
        path = found.path(DUPLICATES_FILE)
        try:
            info = found.fs.info(path)
        except FileNotFoundError:
            raise NotFound(
                f"{self.run} has no {DUPLICATES_FILE} yet; find them with: vitmae duplicates --run {self.run}"
            ) from None
        stamp = (info.get("size"), listed_mtime(info), listed_etag(info))
        with self._lock:
            if stamp != self._stamp or self._table is None:
                with found.fs.open(path, "rb") as f:
                    self._table, self._starts = arrange_groups(pq.read_table(f))
                self._stamp = stamp
            return self._table, self._starts


def arrange_groups(table: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """Rows of duplicates.parquet -> (rows sorted by group size, largest first, then group; inside a group the
    representative first, then by similarity; int64 [G + 1] group starts and the end)."""
    missing = {schema.PATH, schema.GROUP, schema.GROUP_SIZE, schema.SIMILARITY, schema.REPRESENTATIVE}
    missing -= set(table.column_names)
    if missing:
        raise InvalidInput(f"{DUPLICATES_FILE} lacks the columns {sorted(missing)}")
    is_representative = pc.equal(table.column(schema.PATH), table.column(schema.REPRESENTATIVE))
    table = (
        table.append_column("_representative", is_representative)
        .sort_by(
            [
                (schema.GROUP_SIZE, "descending"),
                (schema.GROUP, "ascending"),
                ("_representative", "descending"),
                (schema.SIMILARITY, "descending"),
                (schema.PATH, "ascending"),
            ]
        )
        .drop_columns(["_representative"])
    )
    groups = table.column(schema.GROUP).to_numpy()
    starts = np.flatnonzero(np.diff(groups) != 0) + 1 if len(groups) else np.empty(0, np.int64)
    return table, np.concatenate([[0], starts, [len(groups)]]).astype(np.int64) if len(groups) else np.zeros(
        1, np.int64
    )
