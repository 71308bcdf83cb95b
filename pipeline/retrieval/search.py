"""Similarity search over a run's index: by vectors, or by an indexed image's path.

    searcher = Searcher("s3://bucket/runs/2026-11-22/")
    searcher.search_path("s3://bucket/photos/cat.jpg", k=10)   # [Hit(rank=1, path=..., score=1.0, id=...), ...]
    searcher.search_vectors(vectors, k=10)                    # raw float32 [Q, D] -> one list of hits per row

A new image is embedded as the run embedded its images by `pipeline.embed.query.QueryEmbedder`, then searched by
its vector. Scores are cosine similarities for a cosine index (higher is nearer) and L2 distances for an l2 index
(lower is nearer).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc

from pipeline.retrieval.index_store import LoadedIndex, load_index, require_current, to_scores
from pipeline.retrieval.vectors import for_index, open_embeddings, vectors_of_paths
from pipeline.storage import Storage, listed_uri
from vitmae.errors import InvalidInput

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    """One neighbour."""

    rank: int  # 1 = nearest
    path: str  # the image's URI, as in the embeddings table
    score: float  # cosine similarity (cosine index) or L2 distance (l2 index)
    id: int  # the row's id in the embeddings table, and in the index


class Searcher:
    """The index of one run, loaded once."""

    def __init__(self, run: str, storage: Storage | None = None) -> None:
        """Loads `run/index/`. storage: None reads the environment.

        Raises:
            FileNotFoundError: the run has no index. ValueError: the index is older than the embeddings table.
        """
        self.run = run
        self.storage = storage or Storage.from_environment()
        self.embeddings = open_embeddings(run, self.storage)
        self.loaded: LoadedIndex = load_index(run, self.storage)
        require_current(self.loaded, run, self.embeddings.version)

    @property
    def count(self) -> int:
        return self.loaded.count

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """Raw (not normalised) float32 [Q, D] or [D] -> for each row, its k nearest, nearest first."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if vectors.shape[1] != self.loaded.dimension:
            raise InvalidInput(f"expected query vectors of dimension {self.loaded.dimension}, got {vectors.shape[1]}")
        if k < 1:
            raise InvalidInput(f"expected k >= 1, got {k}")
        distances, ids = self.loaded.search(for_index(vectors, self.loaded.metric), min(k, self.count))
        scores = to_scores(distances, self.loaded.metric)
        hits = []
        for row_ids, row_scores in zip(ids, scores):
            found = row_ids >= 0  # -1: fewer than k vectors reachable
            paths = self.loaded.paths_of(row_ids[found])
            hits.append(
                [
                    Hit(rank, path, float(score), int(i))
                    for rank, (i, path, score) in enumerate(zip(row_ids[found], paths, row_scores[found]), 1)
                ]
            )
        return hits

    def search_path(self, path: str, k: int = 10) -> list[Hit]:
        """The k nearest of an indexed image (itself first), by its path as listed or as a local file path."""
        return self.search_vectors(self.vector_of_path(path), k)[0]

    def resolve_path(self, path: str) -> str:
        """The indexed path `path` names (as given, or a local path as a file:// URI); ValueError when none."""
        candidates = [path] if "://" in path else [path, listed_uri(path)]
        for candidate in candidates:
            if pc.index(self.loaded.paths, candidate).as_py() >= 0:
                return candidate
        example = self.loaded.paths[0].as_py()
        raise InvalidInput(
            f"path {path} is not in the index of {self.run} ({self.count} images; paths look like {example})"
        )

    def vector_of_path(self, path: str) -> np.ndarray:
        """The stored raw embedding of an indexed image. float32 [D]."""
        resolved = self.resolve_path(path)
        found = vectors_of_paths(self.embeddings, [resolved])
        if resolved not in found:
            raise InvalidInput(f"{resolved} is in the index of {self.run} but not in its embeddings; rebuild the index")
        return found[resolved]
