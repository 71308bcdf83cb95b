"""How the model stage embeds and scores: its settings, and the masks each image's loss is scored with.

Imports no torch: the job's driver reads these settings before anything loads torch, and the model actors
(`pipeline.embed.embedder`) load it where they run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

import vitmae
from pipeline.seeding import image_rng
from vitmae.config import dtype_name
from vitmae.errors import InvalidInput

Pooling = Literal["mean", "cls"]
POOLINGS = get_args(Pooling)
# CPU features (as Linux names them) that multiply bf16 matrices natively, which oneDNN, and so torch, uses: there bf16
# runs the model 1.8x as fast as float32 (benchmarks/RESULTS.md); elsewhere bf16 is emulated, and slower.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@dataclass(frozen=True)
class InferConfig:
    """How the model stage embeds and scores; every field but `compile` changes the numbers a run writes."""

    mask_ratio: float = 0.0
    """0: embeddings only (the decoder is never loaded); > 0, e.g. 0.75: also each image's reconstruction loss"""
    loss_samples: int = 4
    """masks averaged per image for the loss: at 0.75, four disjoint masks reconstruct every patch once, and rank
    images far more stably across seeds than one (benchmarks/RESULTS.md)"""
    seed: int = 0
    """with each image's path, fixes that image's masks"""
    patch_loss: bool = False
    """with a loss: also keep each patch's loss (the `patch_loss` column, 2 bytes a patch: 392 a row at 224 pixels),
    drawn over the image as a heatmap by `vitmae anomalies --png` and the page's anomalies view"""
    pooling: Pooling = "mean"
    """mean of the final patch tokens, or the class token"""
    dtype: str = "auto"
    """the model's dtype: float32, bfloat16, float16 or auto: the existing table's, else bfloat16 on GPUs and on CPUs
    with AVX512-BF16 or AMX (every node's), else float32"""
    compile: bool = False
    """torch.compile the model in each actor: on GPUs more images/s, for a longer start-up"""

    def __post_init__(self) -> None:
        if not 0.0 <= self.mask_ratio < 1.0:
            raise InvalidInput(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.pooling not in POOLINGS:
            raise InvalidInput(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.dtype != "auto":
            dtype_name(self.dtype)
        if self.loss_samples < 1:
            raise InvalidInput(f"loss_samples must be at least 1, got {self.loss_samples}")
        if self.patch_loss and self.mask_ratio == 0:
            raise InvalidInput("patch_loss needs a loss to keep: give a mask_ratio above 0 as well, e.g. 0.75")

    def resolved_dtype(self, gpu: bool, cpu_bf16: bool = False, table: str | None = None) -> str:
        """The dtype the model runs in, `auto` resolved: the existing table's (`table`), else bfloat16 on a GPU
        (`gpu`) or on CPUs that multiply bf16 natively (`cpu_bf16`), else float32."""
        if self.dtype != "auto":
            return self.dtype
        if table and table != "auto":
            return table
        return "bfloat16" if gpu or cpu_bf16 else "float32"


def cpu_flags() -> frozenset[str]:
    """This machine's CPU features as Linux names them (/proc/cpuinfo; none where there is no such file)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return frozenset(next((line for line in cpuinfo if line.startswith("flags")), "").split())
    except OSError:
        return frozenset()


def cpu_has_bf16() -> bool:
    """Whether this machine's CPU multiplies bf16 matrices natively (`BF16_CPU_FLAGS`)."""
    return bool(BF16_CPU_FLAGS & cpu_flags())


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


def model_class(mask_ratio: float) -> type:
    """The encoder alone for embeddings; encoder and decoder when the loss is scored."""
    return vitmae.ViTMAEForPreTraining if mask_ratio > 0 else vitmae.ViTMAEModel
