"""The model stage: a Ray actor that embeds uint8 batches and scores their masked-reconstruction loss."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import numpy as np
import torch

from pipeline import schema
from pipeline.embed.infer import InferConfig, cpu_has_bf16, mask_noise, model_class
from pipeline.embed.poison import MAX_ATTEMPTS, batch_key, clear_attempts, count_attempt
from pipeline.embed.preprocess import PreprocessConfig, preprocess_batch
from pipeline.storage import Storage
from vitmae import ViTImageProcessor
from vitmae.checkpoint import parse_dtype

logger = logging.getLogger(__name__)

# On a GPU a batch is sent in slices of this many images, so copying one overlaps the model's work on the last.
GPU_SLICE_ROWS = 128


def pool(last_hidden_state: torch.Tensor, pooling: str) -> torch.Tensor:
    """[N, 1 + L, D] final-LayerNorm tokens -> float32 [N, D]: mean of patch tokens, or the class token."""
    tokens = last_hidden_state.float()
    return tokens[:, 1:].mean(dim=1) if pooling == "mean" else tokens[:, 0]


def _ray_gpu_ids() -> list:
    """The GPUs Ray gave this actor; none outside Ray, where the same code runs too (benchmarks/actor_path.py)."""
    ray = sys.modules.get("ray")
    return ray.get_gpu_ids() if ray is not None and ray.is_initialized() else []


def _ray_node_id() -> str:
    """The Ray node this actor runs on ("" outside Ray)."""
    ray = sys.modules.get("ray")
    return ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else ""


class Embedder:
    """A Ray Data actor: builds the model once, then maps batches. Needs no Ray itself.

    Runs on the GPU given to it (bfloat16 by default, normalising on the device); without one it runs the same code
    on the CPU (bfloat16 by default where the CPU multiplies it natively, else float32), with `threads` torch threads
    (at most the node's cores; None: torch's default). The job's driver gives every actor the dtype it resolved.
    """

    def __init__(
        self,
        model: str,
        config: InferConfig = InferConfig(),
        storage: Storage | None = None,
        threads: int | None = None,
        attempts: Any = None,
    ) -> None:
        """model: checkpoint folder, URI or hub id (with preprocessor_config.json); storage: reaches it (None: the
        environment's, `Storage.from_environment`); attempts: the run's `pipeline.embed.poison.Attempts` actor, which
        finds the batches that kill model actors (None: not counted)."""
        self.config = config
        self.attempts = attempts
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        gpu = self.device.type == "cuda"
        self.dtype = parse_dtype(config.resolved_dtype(gpu, cpu_bf16=not gpu and cpu_has_bf16()))
        if self.device.type == "cpu" and _ray_gpu_ids():
            logger.warning("the actor was given a GPU but torch sees none; running on the CPU")
        if self.device.type == "cpu" and threads:
            # Ray sets OMP_NUM_THREADS to the actor's 1 CPU; on CPU-only nodes the model is nearly all the work.
            torch.set_num_threads(min(threads, os.cpu_count() or 1))
        options = (storage or Storage.from_environment()).options(model)
        self.model = model_class(config.mask_ratio).from_pretrained(
            model, dtype=self.dtype, device=self.device, storage_options=options
        )
        self.encoder = self.model.vit if config.mask_ratio > 0 else self.model
        # One graph for every batch size (dynamic), so a short last batch compiles nothing new.
        self.encode = torch.compile(self.encoder, dynamic=True) if config.compile else self.encoder
        self.score = torch.compile(self.model, dynamic=True) if config.compile and config.mask_ratio > 0 else self.model
        self.slice_rows = GPU_SLICE_ROWS if self.device.type == "cuda" else 1 << 30  # the CPU has nothing to overlap
        self.processor = ViTImageProcessor.from_pretrained(model, storage_options=options)
        self.num_patches = self.model.config.num_patches
        self.node = _ray_node_id()
        logger.info("model actor ready on %s (%s, %d threads)", self.device, self.dtype, torch.get_num_threads())

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rows with pixels -> the same rows without pixels, with `embedding` [N, D], `loss` [N] and, when the config
        keeps it, `patch_loss` float16 [N, L].

        A batch that killed model actors `MAX_ATTEMPTS` times (Ray Data gives it to a new one each time) is embedded
        image by image; an image that kills them that often becomes an error row.
        """
        if self.attempts is None:
            return self.embed_batch(batch)
        key = batch_key(batch[schema.ID])
        if count_attempt(self.attempts, key) > MAX_ATTEMPTS:
            return self._image_by_image(batch)
        out = self.embed_batch(batch)
        clear_attempts(self.attempts, key)
        return out

    def _image_by_image(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The batch embedded one image at a time, each counted, so that the one that kills the actor is found."""
        logger.warning(
            "a batch killed model actors %d times; embedding its %d images one by one",
            MAX_ATTEMPTS,
            len(batch[schema.ID]),
        )
        errors = batch[schema.ERROR].copy()
        parts = []
        for i in range(len(errors)):
            key = batch_key(batch[schema.ID][i : i + 1])
            if not errors[i] and count_attempt(self.attempts, key) > MAX_ATTEMPTS:
                errors[i] = f"the model's process died on this image {MAX_ATTEMPTS} times (out of memory?)"
                logger.warning("%s: %s", batch[schema.PATH][i], errors[i])
            one = {name: values[i : i + 1] for name, values in batch.items()}
            one[schema.ERROR] = errors[i : i + 1]
            parts.append(self.embed_batch(one))
            clear_attempts(self.attempts, key)
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def embed_batch(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`__call__` without the count of attempts."""
        start = time.perf_counter()
        n = len(batch[schema.PATH])
        ok = ~schema.failed_rows(batch[schema.ERROR])
        embeddings = np.zeros((n, self.encoder.config.hidden_size), dtype=np.float32)
        losses = np.full(n, np.nan, dtype=np.float32)
        patches = np.full((n, self.num_patches), np.nan, dtype=np.float16) if self.config.patch_loss else None
        if ok.any():
            rows = batch[schema.PIXELS] if ok.all() else batch[schema.PIXELS][ok]  # a mask copies: only when needed
            paths = batch[schema.PATH][ok]
            step = self.slice_rows
            parts = [self._embed(rows[i : i + step], paths[i : i + step]) for i in range(0, len(rows), step)]
            embeddings[ok] = torch.cat([embedding for embedding, _, _ in parts]).cpu().numpy()
            if self.config.mask_ratio > 0:
                losses[ok] = torch.cat([loss for _, loss, _ in parts]).cpu().numpy()
            if patches is not None:
                patches[ok] = torch.cat([patch for _, _, patch in parts]).cpu().numpy()
        logger.debug("embedded %d images in %.2fs", int(ok.sum()), time.perf_counter() - start)
        out = {k: v for k, v in batch.items() if k != schema.PIXELS}
        if patches is not None:
            out[schema.PATCH_LOSS] = patches
        return {
            **out,
            schema.EMBEDDING: embeddings,
            schema.LOSS: losses,
            schema.NODE: np.full(n, self.node, dtype=object),
        }

    def _embed(
        self, rows: np.ndarray, paths: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """uint8 [n, H, W, C] rows -> (float32 [n, D] embeddings, float32 [n] losses or None, float16 [n, L] per-patch
        losses or None), left on the device.

        Nothing here waits for the GPU, so on a GPU the host pins and sends the next slice while this one runs.
        """
        pixels = self.to_device(torch.from_numpy(np.ascontiguousarray(rows)))
        x = self.processor.normalize(pixels, self.dtype)
        with torch.inference_mode():
            embedding = pool(self.encode(x, mask_ratio=0.0).last_hidden_state, self.config.pooling)
            loss, patch = self._loss(x, paths) if self.config.mask_ratio > 0 else (None, None)
        return embedding, loss, patch

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host tensor on the model's device; to a GPU through pinned memory, without waiting for the copy."""
        if self.device.type != "cuda":
            return tensor
        return tensor.pin_memory().to(self.device, non_blocking=True)

    def _loss(self, x: torch.Tensor, paths: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: [N, C, H, W] normalised -> (float32 [N], the per-image loss averaged over the K masks; with
        `config.patch_loss`, float16 [N, L], each patch's loss averaged over the masks that hid it, NaN where none
        did), on the device.

        The K masked copies of the batch go through the model as one batch of N * K images.
        """
        cfg = self.config
        n, k = len(paths), cfg.loss_samples
        noise = np.stack([mask_noise(p, cfg.seed, self.num_patches, cfg.mask_ratio, k) for p in paths])
        noise_t = self.to_device(torch.from_numpy(noise)).flatten(0, 1)  # [N * K, L], image-major
        copies = x.repeat_interleave(k, dim=0)  # [N * K, C, H, W]
        out = self.score(copies, noise=noise_t, mask_ratio=cfg.mask_ratio)
        loss = out.per_sample_loss.view(n, k).mean(dim=1)
        if not cfg.patch_loss:
            return loss, None
        mask = out.mask.float().view(n, k, -1)
        hidden = (out.per_patch_loss.view(n, k, -1) * mask).sum(dim=1) / mask.sum(dim=1)  # 0 / 0: NaN
        return loss, hidden.half()


class DecodingEmbedder(Embedder):
    """The CPU stage and the model stage in one actor, for nodes without GPUs: each actor decodes a batch on its
    threads, then runs the model on it, and no decoded pixels cross processes."""

    def __init__(
        self,
        model: str,
        preprocess: PreprocessConfig,
        config: InferConfig = InferConfig(),
        storage: Storage | None = None,
        threads: int | None = None,
        attempts: Any = None,
    ) -> None:
        super().__init__(model, config, storage, threads, attempts)
        self.preprocess = preprocess

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Listing rows (`schema.WORK_SCHEMA`) -> as `Embedder`, with `width`, `height` and the decoding errors."""
        return super().__call__(preprocess_batch(batch, self.preprocess))
