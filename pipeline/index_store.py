"""A run's index on storage: `index/index.faiss`, `index/ids.parquet` (FAISS id -> path), `index/index.json`.

Written through fsspec (local or s3://) so that no reader sees half an index: index.json goes last and is
removed first on a rebuild, and readers trust an index only when index.json is there. The FAISS file goes
through a local temporary file (`faiss.write_index` / `read_index`) rather than `serialize_index` bytes: a
serialised copy would double the index's memory, which at a 1 GB budget is the budget again.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any

import faiss
import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from vitmae.folder import Folder

logger = logging.getLogger(__name__)

INDEX_DIR = "index"
INDEX_FILE = f"{INDEX_DIR}/index.faiss"
IDS_FILE = f"{INDEX_DIR}/ids.parquet"
INFO_FILE = f"{INDEX_DIR}/index.json"
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


def run_folder(run: str, options: dict[str, Any], create: bool = False) -> Folder:
    """The run folder, without checkpoint-style hub-id guessing; FileNotFoundError when it is missing."""
    fs, root = fsspec.core.url_to_fs(run, **options)
    if create:
        fs.makedirs(root, exist_ok=True)
    elif not fs.isdir(root):
        raise FileNotFoundError(f"{run}: no such run folder")
    return Folder(fs, root, run)


def save_index(run: str, options: dict[str, Any], index: faiss.Index, paths: pa.Array, info: dict[str, Any]) -> None:
    """Writes the index, then the id map, then index.json (which gains `file_bytes`)."""
    if len(paths) != index.ntotal:
        raise ValueError(f"expected one path per indexed vector ({index.ntotal}), got {len(paths)}")
    folder = run_folder(run, options, create=True)
    if folder.exists(INFO_FILE):
        folder.fs.rm(folder.path(INFO_FILE))
    info["file_bytes"] = _put_index(folder, index)
    sink = io.BytesIO()
    ids = pa.table({ID: pa.array(np.arange(len(paths), dtype=np.int64)), PATH: paths.cast(pa.string())})
    pq.write_table(ids, sink, compression="zstd")
    folder.write_bytes(IDS_FILE, sink.getvalue())
    folder.write_json(INFO_FILE, info)
    logger.info("wrote the index of %s (%d vectors, %.1f MB)", run, index.ntotal, info["file_bytes"] / 1e6)


def _put_index(folder: Folder, index: faiss.Index) -> int:
    """Writes index.faiss (temporary name then rename; one PUT on object stores); returns its size in bytes."""
    path = folder.path(INDEX_FILE)
    if isinstance(folder.fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        faiss.write_index(index, tmp)
        size = os.path.getsize(tmp)
        os.replace(tmp, path)
        return size
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "index.faiss")
        faiss.write_index(index, local)
        folder.fs.put_file(local, path)
        return os.path.getsize(local)


def load_index(run: str, options: dict[str, Any]) -> LoadedIndex:
    """Reads the index of `run` and applies its tuned search parameters.

    Raises:
        FileNotFoundError: no run, or a run without an index.
        ValueError: index file, id map and index.json disagree.
    """
    folder = run_folder(run, options)
    if not folder.exists(INFO_FILE):
        raise FileNotFoundError(f"{run} has no index ({INFO_FILE} is missing); build it with: vitmae index --run {run}")
    info = folder.read_json(INFO_FILE)
    if isinstance(folder.fs, LocalFileSystem):
        index = faiss.read_index(folder.path(INDEX_FILE))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, "index.faiss")
            folder.fs.get_file(folder.path(INDEX_FILE), local)
            index = faiss.read_index(local)
    with folder.fs.open(folder.path(IDS_FILE), "rb") as f:
        ids = pq.read_table(f)
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

    FAISS runs a few queries one per thread anyway, and waking an idle OpenMP team can cost far more than the search:
    on 2 cores with torch loaded (a second OpenMP runtime), 16 ms per single flat query against 0.2 ms on one thread.
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
