"""Query images embedded as a run embedded its own: the run's model, processor, pooling and pixel limit.

run = "s3://bucket/runs/2026-11-22/"
hits = search_image(Searcher(run), QueryEmbedder(run), "query.jpg", k=10)
"""

from __future__ import annotations

import logging

import numpy as np

from pipeline import schema
from pipeline.embed.decode import DecodeConfig, decode_image
from pipeline.embed.embedder import Embedder
from pipeline.embed.infer import InferConfig
from pipeline.records import latest_run
from pipeline.retrieval.search import Hit, Searcher
from pipeline.storage import Storage, read_uri
from vitmae import ViTImageProcessor
from vitmae.errors import InvalidInput, NotFound

logger = logging.getLogger(__name__)


class QueryEmbedder:
    """The run's model, loaded once (on the CPU, float32), for images that are not in the run."""

    def __init__(self, run: str, storage: Storage | None = None) -> None:
        """Reads the latest run's record and loads its model.

        Raises:
            FileNotFoundError: no finished run, or a model that is gone.
        """
        self.storage = storage or Storage.from_environment()
        record = latest_run(run, self.storage)
        self.processor = ViTImageProcessor.from_dict(record["processor"])
        self.decode = DecodeConfig.from_dict(record["decode"])
        infer = InferConfig(pooling=record["infer"]["pooling"], dtype="float32")
        self.model = record["model"]
        self.embedder = Embedder(self.model, infer, self.storage)
        self.dimension = int(self.embedder.encoder.config.hidden_size)
        logger.info("loaded the run's model %s for image queries", self.model)

    def __call__(self, image: str | bytes) -> np.ndarray:
        """An image (local path, URI or encoded bytes) -> its raw embedding, float32 [D].

        Raises:
            FileNotFoundError: no such image. ValueError: the bytes are not a decodable image.
        """
        name = image if isinstance(image, str) else "the query image"
        try:
            data = read_uri(image, self.storage) if isinstance(image, str) else image
        except FileNotFoundError:
            raise NotFound(f"query image {image}: no such file") from None
        try:
            decoded = decode_image(data, self.processor, self.decode)
        except ValueError as err:
            raise InvalidInput(f"{name}: {err}") from None
        out = self.embedder(
            {
                schema.PATH: np.array([name], dtype=object),
                schema.PIXELS: decoded.pixels[None].copy(),
                schema.ERROR: np.array([""], dtype=object),
            }
        )
        return out[schema.EMBEDDING][0]


def search_image(searcher: Searcher, embedder: QueryEmbedder, image: str | bytes, k: int = 10) -> list[Hit]:
    """The k nearest of an image (path, URI or bytes) in the searcher's index, embedded as the run did.

    Raises:
        ValueError: the run's model makes vectors of another width than the index holds (a stale index).
    """
    if embedder.dimension != searcher.loaded.dimension:
        raise InvalidInput(
            f"the run's model {embedder.model} makes {embedder.dimension}-d embeddings but the index of {searcher.run} "
            f"holds {searcher.loaded.dimension}-d vectors; rebuild the index (vitmae index --run {searcher.run} "
            "--rebuild true)"
        )
    return searcher.search_vectors(embedder(image), k)[0]
