"""How good a ViTMAE checkpoint is on labelled images: held-out reconstruction loss and nearest-neighbour precision.

Both numbers come from the embedding job's own model stage (`pipeline.embed.embedder.Embedder`, called directly, no
Ray): the loss with the job's deterministic masks, the embeddings with its pooling, so they say what a run would see.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline import schema
from pipeline.embed.decode import DecodeConfig, decode_image
from pipeline.embed.embedder import Embedder
from pipeline.embed.infer import InferConfig
from pipeline.storage import Storage, read_bytes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Quality:
    """A checkpoint's scores on one labelled set."""

    loss: float  # mean masked-reconstruction loss over the images
    precision_at_k: float  # mean share of each image's k nearest others (cosine) that carry its label
    k: int  # neighbours per image


def similarities(embeddings: np.ndarray) -> np.ndarray:
    """float [N, D] -> the cosine similarity of every two rows, float [N, N], -inf on the diagonal (no row is its own
    neighbour)."""
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity


def precision_at_k(embeddings: np.ndarray, labels: np.ndarray, k: int) -> float:
    """float [N, D] embeddings, [N] labels -> mean share of the k nearest others (cosine) with the same label."""
    if len(embeddings) <= k:
        raise ValueError(f"expected more than k={k} images, got {len(embeddings)}")
    nearest = np.argpartition(-similarities(embeddings), k, axis=1)[:, :k]  # [N, k]
    return float((labels[nearest] == labels[:, None]).mean())


def embed_encoded(embedder: Embedder, paths: Sequence[str], encoded: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Encoded images, decoded as the job decodes them, through the job's model stage in one call: (embeddings
    float32 [N, D], losses float32 [N], NaN without masking). `paths` seed the masks. ValueError: one does not decode.
    """
    pixels = np.stack([decode_image(data, embedder.processor, DecodeConfig()).pixels for data in encoded])
    out = embedder(
        {
            schema.PATH: np.array(list(paths), dtype=object),
            schema.PIXELS: pixels,
            schema.ERROR: np.array([""] * len(paths), dtype=object),
        }
    )
    return out[schema.EMBEDDING], out[schema.LOSS]


def evaluate(
    model: str,
    paths: Sequence[str],
    labels: Sequence[object],
    mask_ratio: float = 0.75,
    loss_samples: int = 4,
    seed: int = 0,
    pooling: str = "mean",
    k: int = 10,
    batch_size: int = 256,
    storage: Storage | None = None,
) -> Quality:
    """Scores checkpoint `model` on the images at `paths` (local paths or URIs of one filesystem) with their `labels`.

    Raises:
        ValueError: an image does not decode, or there are no more images than k.
    """
    storage = storage or Storage.from_environment()
    embedder = Embedder(model, InferConfig(mask_ratio, loss_samples, seed, pooling), storage)
    embeddings, losses = [], []
    for start in range(0, len(paths), batch_size):
        chunk = list(paths[start : start + batch_size])
        encoded = read_bytes(chunk, storage)
        for path, data in zip(chunk, encoded):
            if isinstance(data, Exception):
                raise ValueError(f"{path}: {data}")
        chunk_embeddings, chunk_losses = embed_encoded(embedder, chunk, encoded)
        embeddings.append(chunk_embeddings)
        losses.append(chunk_losses)
    precision = precision_at_k(np.concatenate(embeddings), np.asarray(labels), k)
    return Quality(float(np.concatenate(losses).mean()), precision, k)
