"""A run's index on storage: `index/index.faiss`, `index/ids.parquet` (FAISS id -> path), `index/removed.parquet`
and `index/index.json`, written last: readers trust an index only when index.json is there (docs/design.md,
"The index on storage").
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from pipeline import schema
from pipeline.layout import IDS_FILE, INDEX_FILE, INFO_FILE, REMOVED_FILE
from pipeline.storage import Storage, folder, read_parquet, run_folder, write_parquet
from vitmae.errors import InvalidInput

logger = logging.getLogger(__name__)

FEW_QUERIES = 20  # below this many queries FAISS gives each query one thread and no BLAS


class IndexNotReady(Exception):
    """The run's index is missing or behind its table: the embedding run building it has not finished, or it needs
    `vitmae index` (command lines exit with 75, try again later)."""


class NoIndex(IndexNotReady, FileNotFoundError):
    """The run has no index."""


class IndexBehind(IndexNotReady, ValueError):
    """The run's index reflects an older version of its table."""


@dataclass
class LoadedIndex:
    """An index read back, ready to search."""

    index: faiss.Index  # FAISS ids are the table's ids; search parameters applied
    info: dict[str, Any]  # index.json
    ids: np.ndarray  # int64 [N], sorted: the ids of the live vectors
    paths: pa.Array  # string [N]: the path of each of `ids`
    removed: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # int64: ids in the graph, filtered out

    @property
    def metric(self) -> str:
        return self.info["metric"]

    @property
    def dimension(self) -> int:
        return int(self.info["dimension"])

    @property
    def count(self) -> int:
        return len(self.ids)

    def search(self, vectors: np.ndarray, k: int, effort: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """float32 [Q, D] as stored in the index -> squared L2 [Q, k], ids [Q, k] (-1 past the reachable vectors).

        effort: multiplies the tuned efSearch (HNSW) or nprobe (IVF) for this search: slower, and nearer exact.
        A few queries run on one OpenMP thread: FAISS runs them one per thread anyway, and waking an idle OpenMP team
        can cost far more than the search where torch, with an OpenMP runtime of its own, is loaded too (measured in
        benchmarks/RESULTS.md).
        """
        params = self._params(effort)
        if len(vectors) >= FEW_QUERIES:
            return self.index.search(vectors, k, params=params)
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return self.index.search(vectors, k, params=params)
        finally:
            faiss.omp_set_num_threads(threads)

    def range_search(self, vectors: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """float32 [Q, D] as stored in the index -> (lims int64 [Q + 1], squared L2 [R], ids [R]): the vectors that
        query q reaches below `radius` (squared L2) are ids[lims[q]:lims[q + 1]]. As approximate as the index's search.

        FAISS's HNSW range search allocates its results once per block of queries, and a second block aborts the
        process (faiss 1.15). It cuts the queries into blocks between checks for Ctrl-C, every
        `InterruptCallback.get_period_hint(levels x d x efSearch)` queries when Python's callback is installed (6,103
        at 64-d and efSearch 64, about 500 at 768-d): the callback is taken out for the call, so that there is one
        block.
        """
        if self.info["index_type"] != "hnsw":
            lims, distances, ids = self.index.range_search(vectors, radius, params=self._params())
            return lims.astype(np.int64), distances, ids
        faiss.InterruptCallback.clear_instance()
        try:
            lims, distances, ids = self.index.range_search(vectors, radius, params=self._params())
        finally:
            faiss.PythonInterruptCallback.reset()
        return lims.astype(np.int64), distances, ids

    def paths_of(self, ids: np.ndarray) -> list[str | None]:
        """The path of each id (None for -1)."""
        at = np.clip(np.searchsorted(self.ids, ids), 0, max(len(self.ids) - 1, 0))
        return [self.paths[int(position)].as_py() if id_ >= 0 else None for position, id_ in zip(at, ids)]

    def _params(self, effort: int = 1) -> faiss.SearchParameters | None:
        """The removed ids' filter (HNSW only), with the tuned efSearch, which parameters would otherwise reset; and
        `effort` times the tuned efSearch or nprobe."""
        tuned = self.info.get("search_params", {})
        if "nprobe" in tuned and effort > 1:
            return faiss.SearchParametersIVF(
                nprobe=min(int(tuned["nprobe"]) * effort, faiss.extract_index_ivf(self.index).nlist)
            )
        if self.info["index_type"] != "hnsw" or (not len(self.removed) and effort == 1):
            return None
        params = faiss.SearchParametersHNSW(efSearch=int(tuned.get("efSearch", 16)) * effort)
        if len(self.removed):
            selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(self.removed))
            params.sel = selector
            params.selector_keepalive = selector  # the Python object must outlive the search
        return params


def save_index(
    run: str, storage: Storage, index: faiss.Index, id_map: str, removed: np.ndarray, info: dict[str, Any]
) -> None:
    """Writes the index, the id map and the removed ids, then index.json (which gains `file_bytes`).

    id_map: a local Parquet file of (id, path) of the live vectors, sorted by id; removed: int64 ids still in an
    HNSW graph.
    """
    live = pq.read_metadata(id_map).num_rows
    if live + len(removed) != index.ntotal:
        raise ValueError(f"expected {index.ntotal} ids (live and removed), got {live} and {len(removed)}")
    target = folder(run, storage, create=True)
    if target.exists(INFO_FILE):
        target.fs.rm(target.path(INFO_FILE))
    with tempfile.TemporaryDirectory() as tmp:  # FAISS writes files, not streams
        local = os.path.join(tmp, "index.faiss")
        faiss.write_index(index, local)
        info["file_bytes"] = os.path.getsize(local)
        target.put_file(INDEX_FILE, local)
    target.put_file(IDS_FILE, id_map)
    write_parquet(target, REMOVED_FILE, pa.table({schema.ID: pa.array(removed, pa.int64())}))
    target.write_json(INFO_FILE, info)
    logger.info("wrote the index of %s (%d vectors, %.1f MB)", run, live, info["file_bytes"] / 1e6)


def load_index(run: str, storage: Storage) -> LoadedIndex:
    """Reads the index of `run` and applies its tuned search parameters.

    Raises:
        FileNotFoundError: no run, or a run without an index.
        ValueError: index file, id map and index.json disagree.
    """
    found = run_folder(run, storage)
    if not found.exists(INFO_FILE):
        raise NoIndex(
            f"{run} has no index ({INFO_FILE} is missing); build it with: vitmae index --run {run}, or wait for the "
            "embedding run that is building it"
        )
    info = found.read_json(INFO_FILE)
    if isinstance(found.fs, LocalFileSystem):
        index = faiss.read_index(found.path(INDEX_FILE))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, "index.faiss")
            found.fs.get_file(found.path(INDEX_FILE), local)
            index = faiss.read_index(local)
    id_map = read_parquet(found, IDS_FILE)
    ids = id_map.column(schema.ID).to_numpy().astype(np.int64)
    removed = read_parquet(found, REMOVED_FILE).column(schema.ID).to_numpy().astype(np.int64)
    if not index.ntotal == len(ids) + len(removed) or len(ids) != info["count"] or index.d != info["dimension"]:
        raise InvalidInput(
            f"the index of {run} is inconsistent: index.json says {info['count']} x {info['dimension']}-d, "
            "the FAISS file "
            f"holds {index.ntotal} x {index.d}-d and the id map {len(ids)} rows; rebuild it with: "
            f"vitmae index --run {run} --rebuild true"
        )
    if len(ids) > 1 and not (np.diff(ids) > 0).all():
        raise InvalidInput(f"the id map of {run} ({IDS_FILE}) is not sorted by id; rebuild the index")
    set_search_params(index, info.get("search_params", {}))
    return LoadedIndex(index, info, ids, id_map.column(schema.PATH).combine_chunks(), removed)


def require_current(loaded: LoadedIndex, run: str, table_version: int) -> None:
    """Refuses an index built from an older version of the embeddings table than `table_version`."""
    built = loaded.info.get("table_version")
    if built != table_version:
        raise IndexBehind(
            f"the index of {run} reflects version {built} of its embeddings table, which is now at version "
            f"{table_version}; update it with: vitmae index --run {run}, "
            "or wait for the embedding run that is updating it"
        )


def inner(index: faiss.Index) -> faiss.Index:
    """The index inside an id map (flat and HNSW indexes are wrapped in one), else the index."""
    index = faiss.downcast_index(index)
    return faiss.downcast_index(index.index) if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)) else index


def set_search_params(index: faiss.Index, params: dict[str, int]) -> None:
    """Applies `{"nprobe": n}` or `{"efSearch": n}` to an index of any type (nothing for flat)."""
    if "efSearch" in params:
        inner(index).hnsw.efSearch = int(params["efSearch"])
    if "nprobe" in params:
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])


def to_scores(distances: np.ndarray, metric: str) -> np.ndarray:
    """Squared L2 distances from the index -> what users read: cosine similarity, or L2 distance. float32 [...]."""
    if metric == "cosine":
        return (1.0 - distances / 2.0).astype(np.float32)
    return np.sqrt(np.maximum(distances, 0.0)).astype(np.float32)


def to_distances(distances: np.ndarray, metric: str) -> np.ndarray:
    """Squared L2 distances from the index -> cosine distance (1 - cosine) or L2 distance. float32 [...]."""
    if metric == "cosine":
        return (distances / 2.0).astype(np.float32)
    return np.sqrt(np.maximum(distances, 0.0)).astype(np.float32)
