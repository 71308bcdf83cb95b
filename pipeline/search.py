"""Similarity search over a run's index: by vectors, by an indexed path, or by a new image embedded as the run did.

    searcher = Searcher("s3://bucket/runs/2026-11-22/")
    searcher.search_path("s3://bucket/photos/cat.jpg", k=10)   # [Hit(rank=1, path=..., score=1.0, id=...), ...]
    searcher.search_image("query.jpg", k=10)                  # embeds with the run's model, pooling, processor
    searcher.search_vectors(vectors, k=10)                    # raw float32 [Q, D] -> one list of hits per row

Scores are cosine similarities for a cosine index (higher is nearer) and L2 distances for an l2 index (lower is nearer).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import pyarrow.compute as pc
import torch

from pipeline.decode import DecodeConfig, decode_image
from pipeline.index_store import LoadedIndex, load_index, run_folder, search, to_scores
from pipeline.infer import pool
from pipeline.listing import storage_options
from pipeline.vectors import for_index, open_embeddings, vectors_of_paths
from pipeline.write import MANIFEST
from vitmae import ViTImageProcessor, ViTMAEModel
from vitmae.checkpoint import CONFIG_NAME
from vitmae.folder import open_folder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    """One neighbour."""

    rank: int  # 1 = nearest
    path: str  # the image's URI, as in embeddings/*.parquet
    score: float  # cosine similarity (cosine index) or L2 distance (l2 index)
    id: int  # FAISS id: the row number in the run


class Searcher:
    """The index of one run, loaded once, and (on first use) the run's model for image queries."""

    def __init__(self, run: str, s3_endpoint: str | None = None) -> None:
        """Loads `run/index/`; FileNotFoundError when the run has no index."""
        self.run = run
        self.s3_endpoint = s3_endpoint
        self.options = storage_options(run, s3_endpoint)
        self.loaded: LoadedIndex = load_index(run, self.options)
        self._model: tuple[ViTMAEModel, ViTImageProcessor, dict[str, Any]] | None = None

    @property
    def count(self) -> int:
        return int(self.loaded.index.ntotal)

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """Raw (not normalised) float32 [Q, D] or [D] -> for each row, its k nearest, nearest first."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if vectors.shape[1] != self.loaded.dimension:
            raise ValueError(f"expected query vectors of dimension {self.loaded.dimension}, got {vectors.shape[1]}")
        if k < 1:
            raise ValueError(f"expected k >= 1, got {k}")
        distances, ids = search(self.loaded.index, for_index(vectors, self.loaded.metric), min(k, self.count))
        scores = to_scores(distances, self.loaded.metric)
        hits = []
        for row_ids, row_scores in zip(ids, scores):
            found = row_ids >= 0  # -1: fewer than k vectors reachable
            hits.append([
                Hit(rank, self.loaded.paths[int(i)].as_py(), float(score), int(i))
                for rank, (i, score) in enumerate(zip(row_ids[found], row_scores[found]), 1)
            ])
        return hits

    def search_path(self, path: str, k: int = 10) -> list[Hit]:
        """The k nearest of an indexed image (itself first), by its path as listed or as a local file path."""
        return self.search_vectors(self.vector_of_path(path), k)[0]

    def search_image(self, image: str | bytes, k: int = 10) -> list[Hit]:
        """The k nearest of an image (a local path, a URI or encoded bytes), embedded as the run embedded its images."""
        return self.search_vectors(self.embed_image(image), k)[0]

    def resolve_path(self, path: str) -> str:
        """The indexed path `path` names (as given, or a local path as a file:// URI); ValueError when none."""
        candidates = [path] if "://" in path else [path, f"file://{os.path.abspath(path)}"]
        for candidate in candidates:
            if pc.index(self.loaded.paths, candidate).as_py() >= 0:
                return candidate
        example = self.loaded.paths[0].as_py()
        raise ValueError(f"--path {path} is not in the index of {self.run} ({self.count} images; paths look like {example})")

    def vector_of_path(self, path: str) -> np.ndarray:
        """The stored raw embedding of an indexed image. float32 [D]."""
        resolved = self.resolve_path(path)
        found = vectors_of_paths(open_embeddings(self.run, self.options), [resolved])
        if resolved not in found:
            raise ValueError(f"{resolved} is in the index of {self.run} but not in its embeddings; rebuild the index")
        return found[resolved]

    def embed_image(self, image: str | bytes) -> np.ndarray:
        """An image (path, URI or bytes) -> its raw embedding, float32 [D], with the run's model and settings.

        Raises:
            FileNotFoundError: no such image, or the run has no manifest.
            ValueError: the bytes are not a decodable image, or the model's dimension is not the index's.
        """
        model, processor, manifest = self._load_model()
        name = image if isinstance(image, str) else "the query image"
        data = _read(image, self.s3_endpoint) if isinstance(image, str) else image
        try:
            decoded = decode_image(data, processor, DecodeConfig(max_pixels=int(manifest.get("max_pixels", DecodeConfig.max_pixels))))
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
        x = processor.normalize(torch.from_numpy(decoded.pixels[None].copy()))
        with torch.inference_mode():
            hidden = model(x, mask_ratio=0.0).last_hidden_state
        return pool(hidden, manifest.get("pooling", "mean"))[0].numpy()

    def _load_model(self) -> tuple[ViTMAEModel, ViTImageProcessor, dict[str, Any]]:
        if self._model is None:
            manifest = run_folder(self.run, self.options).read_json(MANIFEST)
            uri = manifest["model"]
            options = storage_options(uri, self.s3_endpoint or manifest.get("s3_endpoint"))
            hidden = open_folder(uri, options).read_json(CONFIG_NAME).get("hidden_size")
            if hidden != self.loaded.dimension:
                raise ValueError(
                    f"the run's model {uri} makes {hidden}-d embeddings but the index of {self.run} holds "
                    f"{self.loaded.dimension}-d vectors; rebuild the index (vitmae index --run {self.run})"
                )
            model = ViTMAEModel.from_pretrained(uri, dtype=torch.float32, device="cpu", storage_options=options)
            processor = ViTImageProcessor.from_dict(manifest["processor"])
            logger.info("loaded the run's model %s for image queries", uri)
            self._model = (model, processor, manifest)
        return self._model


def _read(uri: str, s3_endpoint: str | None) -> bytes:
    fs, path = fsspec.core.url_to_fs(uri, **storage_options(uri, s3_endpoint))
    if not fs.isfile(path):
        raise FileNotFoundError(f"query image {uri}: no such file")
    return fs.cat_file(path)
