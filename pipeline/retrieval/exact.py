"""Exact nearest neighbours of a few rows over every live vector of a run, and how far approximate distances can be off.

The bounds that make an approximate search checkable: docs/design.md, "Exact search and its bounds".
"""

from __future__ import annotations

import logging

import faiss
import numpy as np

from pipeline.retrieval.index_store import LoadedIndex, inner
from pipeline.retrieval.vectors import Embeddings, for_index, iter_batches, vectors_of_ids

logger = logging.getLogger(__name__)

# Relative allowance for float32 rounding in a squared L2 distance, as a share of (|x| + |y|)². The worst case of a
# 768-long float32 dot product is about 768 x 6e-8 = 4.6e-5 of its scale; typical errors are a hundred times smaller.
ROUNDING = 1e-4
HOLDS_VECTORS = ("flat", "hnsw")  # index types that keep every vector in float32


class ExactTopK:
    """The exact k nearest (squared L2) of fixed queries, over vectors seen a batch at a time."""

    def __init__(self, queries: np.ndarray, k: int) -> None:
        """queries: float32 [Q, D]."""
        self.queries = queries
        self.k = k
        self.distances = np.full((len(queries), k), np.inf, np.float32)  # [Q, k], ascending
        self.ids = np.full((len(queries), k), -1, np.int64)  # [Q, k]

    def add(self, vectors: np.ndarray, ids_of: np.ndarray) -> None:
        """vectors: float32 [B, D], with ids int64 [B]."""
        distances, positions = faiss.knn(self.queries, vectors, min(self.k, len(vectors)))
        ids = np.where(positions >= 0, ids_of[np.maximum(positions, 0)], -1)
        distances = np.where(ids >= 0, distances, np.inf)
        merged_d = np.concatenate([self.distances, distances], axis=1)
        merged_i = np.concatenate([self.ids, ids], axis=1)
        order = np.argsort(merged_d, axis=1, kind="stable")[:, : self.k]
        self.distances = np.take_along_axis(merged_d, order, axis=1)
        self.ids = np.take_along_axis(merged_i, order, axis=1)


class ExactSearch:
    """Brute-force search over every live vector of a run's index (flat, HNSW) or embeddings table (IVF).

    Args:
        loaded: the run's index, current with `embeddings`.
        embeddings: the version of the table the index reflects.
        batch_rows: rows read at a time when the table is scanned.
    """

    def __init__(self, loaded: LoadedIndex, embeddings: Embeddings, batch_rows: int = 16_384) -> None:
        self.loaded, self.embeddings, self.batch_rows = loaded, embeddings, batch_rows
        self.index_type = loaded.info["index_type"]
        self.scans = 0  # scans of the table so far (IVF only)
        if self.index_type == "hnsw":
            id_map = faiss.downcast_index(loaded.index)
            self._storage = faiss.downcast_index(inner(id_map).storage)
            self._labels = faiss.vector_to_array(id_map.id_map).astype(np.int64)  # position in the graph -> table id
            removed = np.flatnonzero(np.isin(self._labels, loaded.removed)).astype(np.int64)
            self._params = None
            if len(removed):
                selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(removed))
                self._params = faiss.SearchParameters(sel=selector)
                self._params.selector_keepalive = selector  # the Python object must outlive the searches

    @property
    def holds_vectors(self) -> bool:
        return self.index_type in HOLDS_VECTORS

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """int64 [n] live ids -> float32 [n, D] as the index stores them (unit length for cosine)."""
        if not self.holds_vectors:
            self.scans += 1
        return stored_vectors(self.loaded, self.embeddings, ids, self.batch_rows)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """float32 [Q, D] as stored -> exact squared L2 [Q, k] and ids [Q, k] (-1 and inf past the live vectors)."""
        if self.index_type == "flat":
            return self.loaded.search(queries, k)
        if self.index_type == "hnsw":
            squared, labels = self._storage.search(queries, k, params=self._params)
            return squared, np.where(labels >= 0, self._labels[np.maximum(labels, 0)], -1)
        self.scans += 1
        top = ExactTopK(queries, k)
        for batch in iter_batches(self.embeddings, self.batch_rows):
            top.add(for_index(batch.vectors, self.loaded.metric), batch.ids)
        return top.distances, top.ids


def stored_vectors(
    loaded: LoadedIndex, embeddings: Embeddings, ids: np.ndarray, batch_rows: int = 16_384
) -> np.ndarray:
    """int64 [n] live ids -> float32 [n, D] as the index stores them (unit length for cosine): from the index where it
    holds its vectors (flat, HNSW), else read back from the table (IVF: one scan)."""
    ids = np.asarray(ids, np.int64)
    if loaded.info["index_type"] in HOLDS_VECTORS:
        return loaded.index.reconstruct_batch(ids)
    return for_index(vectors_of_ids(embeddings, ids, batch_rows), loaded.metric)


def reconstruction_errors(loaded: LoadedIndex, embeddings: Embeddings, batch_rows: int = 16_384) -> np.ndarray:
    """float32 [count], aligned with `loaded.ids`: |x - decode(encode(x))| of every live vector as the index stores it
    (L2); zeros for flat and HNSW, whose vectors are stored whole. A scan of the table for IVF."""
    errors = np.zeros(loaded.count, np.float32)
    if loaded.info["index_type"] in HOLDS_VECTORS:
        return errors
    for batch in iter_batches(embeddings, batch_rows):
        vectors = for_index(batch.vectors, loaded.metric)
        decoded = loaded.index.sa_decode(loaded.index.sa_encode(vectors))
        errors[np.searchsorted(loaded.ids, batch.ids)] = np.linalg.norm(vectors - decoded, axis=1)
    logger.info(
        "reconstruction errors of the %s codes: median %.4g, max %.4g",
        loaded.info["index_type"],
        float(np.median(errors)) if len(errors) else 0.0,
        float(errors.max()) if len(errors) else 0.0,
    )
    return errors


def farthest_possible(queries: np.ndarray, squared: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """The most the true L2 distance can be, given what an approximate search computed. float32 [Q, n].

    Args:
        queries: float32 [Q, D], as stored in the index. squared: [Q, n] squared L2 the index computed (inf: none).
        errors: [Q, n] reconstruction error of each found vector (0 for flat and HNSW).
    """
    lengths = np.linalg.norm(queries, axis=1)[:, None]
    found = np.sqrt(np.maximum(squared, 0.0))
    # |y| <= |q| + |q - y|: the scale of the rounding of |q - y|² is at most (2|q| + |q - y|)².
    return (np.sqrt(np.maximum(squared, 0.0) + ROUNDING * (2 * lengths + found) ** 2) + errors).astype(np.float32)
