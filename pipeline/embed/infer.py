"""How the model stage embeds and scores: its settings, and the masks each image's loss is scored with.

Imports no torch: the job's driver reads these settings before anything loads torch, and the model actors
(`pipeline.embed.embedder`) load it where they run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

import vitmae
from pipeline.seeding import image_rng
from vitmae.config import dtype_name

if TYPE_CHECKING:
    from vitmae import ViTMAEForPreTraining, ViTMAEModel

POOLINGS = ("mean", "cls")


@dataclass(frozen=True)
class InferConfig:
    """How the model stage embeds and scores; every field but `compile` changes the numbers a run writes."""

    mask_ratio: float = 0.0  # 0: embeddings only (no decoder); > 0: also the reconstruction loss
    # Masks averaged per image for the loss: four disjoint masks at 0.75 reconstruct every patch once, and rank
    # images far more stably across seeds than one (benchmarks/RESULTS.md, "The loss score across mask seeds").
    loss_samples: int = 4
    seed: int = 0  # with the path, fixes every image's masks
    pooling: str = "mean"  # mean of the patch tokens, or the class token
    dtype: str = "auto"  # auto: bfloat16 on a GPU, float32 on the CPU
    compile: bool = False  # torch.compile the model in each actor: fuses the work between GEMMs, at a start-up cost

    def __post_init__(self) -> None:
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"--mask-ratio must be in [0, 1), got {self.mask_ratio}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"--pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.dtype != "auto":
            dtype_name(self.dtype)
        if self.loss_samples < 1:
            raise ValueError(f"--loss-samples must be at least 1, got {self.loss_samples}")


def mask_noise(path: str, seed: int, num_patches: int, mask_ratio: float, samples: int) -> np.ndarray:
    """Masking noise for one image, a pure function of (seed, path): float32 [samples, L].

    When `samples` visible sets of the kept size fit in the image (for a ratio of 0.75, four), they
    are disjoint, so every patch is masked, and so reconstructed, in some sample.
    """
    rng = image_rng(seed, path)
    keep = int(num_patches * (1 - mask_ratio))
    if samples * keep > num_patches:
        return rng.random((samples, num_patches), dtype=np.float32)
    rank = np.empty(num_patches, dtype=np.int64)
    rank[rng.permutation(num_patches)] = np.arange(num_patches)
    # Sample k ranks the patches so that its lowest-noise `keep` are the k-th slice of the permutation.
    shifted = (rank[None, :] - keep * np.arange(samples)[:, None]) % num_patches
    return (shifted / num_patches).astype(np.float32)


def model_class(mask_ratio: float) -> type[ViTMAEModel] | type[ViTMAEForPreTraining]:
    """The encoder alone for embeddings; encoder and decoder when the loss is scored."""
    return vitmae.ViTMAEForPreTraining if mask_ratio > 0 else vitmae.ViTMAEModel
