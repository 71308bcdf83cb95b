"""A run's index on storage: `index/index.faiss`, `index/ids.parquet` (FAISS id -> path), `index/index.json`.

Written through fsspec (local or s3://) so that no reader sees half an index: index.json goes last and is
removed first on a rebuild, and readers trust an index only when index.json is there. The FAISS file goes
through a local temporary file (`faiss.write_index` / `read_index`) rather than `serialize_index` bytes: a
serialised copy would double the index's memory, which at a 1 GB budget is the budget again.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

from pipeline.layout import IDS_FILE, INDEX_FILE, INFO_FILE
from pipeline.storage import Storage, folder, read_parquet, run_folder, write_parquet

logger = logging.getLogger(__name__)

ID = "id"  # column of ids.parquet: the FAISS id (row number in the run)
PATH = "path"  # column of ids.parquet: the image's URI, as in embeddings/*.parquet


@dataclass(frozen=True)
class LoadedIndex:
    """An index read back, ready to search."""

    index: faiss.Index  # holds `info["count"]` vectors of `info["dimension"]`, search parameters applied
    info: dict[str, Any]  # index.json
    paths: pa.Array  # string [count]: the path of each FAISS id

    @property
    def metric(self) -> str:
        return self.info["metric"]

    @property
    def dimension(self) -> int:
        return int(self.info["dimension"])


def save_index(run: str, storage: Storage, index: faiss.Index, paths: pa.Array, info: dict[str, Any]) -> None:
    """Writes the index, then the id map, then index.json (which gains `file_bytes`)."""
    if len(paths) != index.ntotal:
        raise ValueError(f"expected one path per indexed vector ({index.ntotal}), got {len(paths)}")
    target = folder(run, storage, create=True)
    if target.exists(INFO_FILE):
        target.fs.rm(target.path(INFO_FILE))
    with tempfile.TemporaryDirectory() as tmp:  # FAISS writes files, not streams
        local = os.path.join(tmp, "index.faiss")
        faiss.write_index(index, local)
        info["file_bytes"] = os.path.getsize(local)
        target.put_file(INDEX_FILE, local)
    ids = pa.table({ID: pa.array(np.arange(len(paths), dtype=np.int64)), PATH: paths.cast(pa.string())})
    write_parquet(target, IDS_FILE, ids)
    target.write_json(INFO_FILE, info)
    logger.info("wrote the index of %s (%d vectors, %.1f MB)", run, index.ntotal, info["file_bytes"] / 1e6)


def load_index(run: str, storage: Storage) -> LoadedIndex:
    """Reads the index of `run` and applies its tuned search parameters.

    Raises:
        FileNotFoundError: no run, or a run without an index.
        ValueError: index file, id map and index.json disagree.
    """
    found = run_folder(run, storage)
    if not found.exists(INFO_FILE):
        raise FileNotFoundError(f"{run} has no index ({INFO_FILE} is missing); build it with: vitmae index --run {run}")
    info = found.read_json(INFO_FILE)
    if isinstance(found.fs, LocalFileSystem):
        index = faiss.read_index(found.path(INDEX_FILE))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, "index.faiss")
            found.fs.get_file(found.path(INDEX_FILE), local)
            index = faiss.read_index(local)
    ids = read_parquet(found, IDS_FILE)
    if not index.ntotal == info["count"] == ids.num_rows or index.d != info["dimension"]:
        raise ValueError(
            f"the index of {run} is inconsistent: index.json says {info['count']} x {info['dimension']}-d, the FAISS file "
            f"holds {index.ntotal} x {index.d}-d and the id map {ids.num_rows} rows; rebuild it with: vitmae index --run {run}"
        )
    if not np.array_equal(ids.column(ID).to_numpy(), np.arange(ids.num_rows)):
        raise ValueError(f"the id map of {run} ({IDS_FILE}) is not in id order; rebuild the index")
    set_search_params(index, info.get("search_params", {}))
    return LoadedIndex(index, info, ids.column(PATH).combine_chunks())


FEW_QUERIES = 20  # below this many queries FAISS gives each query one thread and no BLAS


def search(index: faiss.Index, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`index.search` (float32 [Q, D] -> squared L2 [Q, k], ids [Q, k]); a few queries run on one OpenMP thread.

    FAISS runs a few queries one per thread anyway, and waking an idle OpenMP team can cost far more than the search
    where torch, with an OpenMP runtime of its own, is loaded too (measured in benchmarks/RESULTS.md).
    """
    if len(vectors) >= FEW_QUERIES:
        return index.search(vectors, k)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return index.search(vectors, k)
    finally:
        faiss.omp_set_num_threads(threads)


def set_search_params(index: faiss.Index, params: dict[str, int]) -> None:
    """Applies `{"nprobe": n}` or `{"efSearch": n}` to an index of any type (nothing for flat)."""
    if "efSearch" in params:
        faiss.downcast_index(index).hnsw.efSearch = int(params["efSearch"])
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
