"""What an MAE model learned, as in the paper's figures: original, masked, reconstruction, reconstruction + visible;
and where it failed: each masked patch's loss as a heatmap over the original.

The panels are computed here and drawn by `pipeline.render`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipeline.embed.decode import DecodeConfig, decode_image
from pipeline.embed.infer import mask_noise
from pipeline.images import DecodeError
from pipeline.render import MIN_PANEL_PX, heatmap_overlay, render_rows, save_png
from pipeline.storage import Storage, StorageConfig, read_uri
from vitmae import ViTImageProcessor, ViTMAEForPreTraining
from vitmae.checkpoint import load_hf_state_dict
from vitmae.errors import InvalidInput
from vitmae.folder import open_folder

logger = logging.getLogger(__name__)

MASK_GREY = 128  # uint8 value (every channel) of the masked patches in the "masked" panel


def reconstruction_rows(
    model: ViTMAEForPreTraining,
    processor: ViTImageProcessor,
    images: Sequence[tuple[str, bytes]],
    mask_ratio: float = 0.75,
    seed: int = 0,
) -> list[list[np.ndarray]]:
    """The five panels of each image, as uint8 arrays at the model's input size.

    The mask of an image is a pure function of (seed, name), as in the embedding job's loss
    (`pipeline.embed.infer.mask_noise`), so reruns draw the same patches. With `model.config.norm_pix_loss` the
    model predicts per-patch normalised pixels; each predicted patch is de-normalised with the mean and
    variance of the same patch of the input, as the MAE visualisation does (so the reconstruction borrows
    each masked patch's mean colour and contrast from the original). The model runs on its own device and
    dtype in eval mode (its training mode is restored afterwards); the rest is float32 on the CPU.

    Args:
        model: the MAE with its decoder.
        processor: decodes and normalises as for the model; its size must be the model's image size.
        images: (name, encoded bytes) per image; the name seeds the mask.
        mask_ratio: fraction of patches hidden from the encoder, in (0, 1).
        seed: with the name, fixes each image's mask.

    Returns:
        One list per image of uint8 [H, W, 3] arrays in `LABELS` order: the original, the masked patches
        set to `MASK_GREY`, every patch predicted, the prediction with the visible patches of the original, and the
        original under the heatmap of each masked patch's loss (the embedding job's `patch_loss`, for one mask).

    Raises:
        ValueError: no images, a ratio outside (0, 1), a processor size that is not the model's, or an image
            that does not decode (the message names it).
    """
    if not images:
        raise ValueError("expected at least one image to reconstruct, got none")
    if not 0 < mask_ratio < 1:
        raise ValueError(f"expected a mask ratio in (0, 1), got {mask_ratio}")
    cfg = model.config
    if processor.size != {"height": cfg.image_size, "width": cfg.image_size}:
        raise ValueError(
            f"the processor resizes to {processor.size} but the model expects {cfg.image_size}x{cfg.image_size} images"
        )
    original = np.stack([_decode(name, data, processor) for name, data in images])  # uint8 [N, H, W, 3]
    noise = np.stack([mask_noise(name, seed, cfg.num_patches, mask_ratio, 1)[0] for name, _ in images])  # [N, L]
    x = processor.normalize(torch.from_numpy(original))  # float32 [N, 3, H, W]
    pred, mask, per_patch = _predict(model, x, torch.from_numpy(noise), mask_ratio)
    target = model.patchify(x)  # [N, L, p*p*3]
    if cfg.norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        pred = pred * (var + 1.0e-6) ** 0.5 + mean
    reconstruction = to_uint8(model.unpatchify(pred), processor)  # [N, H, W, 3]
    # mask [N, L] -> [N, H, W, 1], True on the pixels of masked patches.
    hidden = model.unpatchify(mask[..., None].expand_as(target)).permute(0, 2, 3, 1)[..., :1].numpy() > 0.5
    masked = np.where(hidden, np.uint8(MASK_GREY), original)
    pasted = np.where(hidden, reconstruction, original)
    logger.info(
        "reconstructed %d images, %d of %d patches masked each", len(images), int(mask[0].sum()), cfg.num_patches
    )
    hidden_loss = torch.where(mask > 0.5, per_patch, torch.nan).numpy()  # [N, L], NaN on the visible patches
    heat = [np.asarray(heatmap_overlay(Image.fromarray(image), loss)) for image, loss in zip(original, hidden_loss)]
    return [[original[i], masked[i], reconstruction[i], pasted[i], heat[i]] for i in range(len(images))]


def to_uint8(x: torch.Tensor, processor: ViTImageProcessor) -> np.ndarray:
    """Undoes `processor.normalize`: float [N, 3, H, W] -> uint8 [N, H, W, 3], rounded and clipped to 0..255."""
    x = x.float()
    if processor.do_normalize:
        x = x * torch.tensor(processor.image_std).view(1, -1, 1, 1) + torch.tensor(processor.image_mean).view(
            1, -1, 1, 1
        )
    if processor.do_rescale:
        x = x / processor.rescale_factor
    return x.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()


def render_reconstructions(
    model: ViTMAEForPreTraining,
    processor: ViTImageProcessor,
    images: Sequence[tuple[str, bytes]],
    mask_ratio: float = 0.75,
    seed: int = 0,
    panel_px: int | None = None,
) -> Image.Image:
    """`reconstruction_rows` drawn as one sheet; panel_px defaults to max(model image size, MIN_PANEL_PX)."""
    rows = reconstruction_rows(model, processor, images, mask_ratio, seed)
    return render_rows(rows, max(model.config.image_size, MIN_PANEL_PX) if panel_px is None else panel_px)


@dataclass(frozen=True)
class ReconstructConfig:
    """One sheet of an MAE model's reconstructions: a row per image."""

    model: str
    """an MAE checkpoint with its decoder and preprocessor_config.json: a folder, s3:// URI or hub id"""
    images: tuple[str, ...]
    """the images, local paths or URIs, one row each, e.g. [a.jpg,b.jpg]; each path seeds its mask"""
    png: str
    """the PNG to write, local path or URI"""
    mask_ratio: float = 0.75
    """share of the patches masked, in (0, 1)"""
    seed: int = 0
    """with each image's path, fixes its mask (the embedding job's masks for the same seed and ratio)"""
    storage: StorageConfig = StorageConfig()

    def __post_init__(self) -> None:
        if not 0 < self.mask_ratio < 1:
            raise InvalidInput(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if not self.images:
            raise InvalidInput("images is empty: give at least one image")


def save_reconstructions(config: ReconstructConfig, storage: Storage | None = None, limit: int | None = None) -> None:
    """Loads the MAE (with its decoder) and processor from `config.model` and writes the sheet of `config.images` to
    `config.png`.

    Args:
        storage: reaches s3:// URIs (None: from `config.storage` and the AWS_* variables).
        limit: None: every image must read and decode. A number: draw the first `limit` images that read and
            decode, skipping the others with a warning (for callers that pick a few images from a listing).

    Raises:
        NotFound: a missing model folder, config, processor config or image.
        InvalidInput: weights that do not fit the MAE (an encoder-only checkpoint has no decoder), an image that
            cannot be read or decoded, or no usable image at all.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"expected limit >= 1 (or None for every image), got {limit}")
    storage = storage or Storage.from_config(config.storage)
    options = storage.options(config.model)
    model = _load_model(config.model, options)
    processor = ViTImageProcessor.from_pretrained(config.model, options)
    images = _read_images(config.images, processor, storage, limit)
    sheet = render_reconstructions(model, processor, images, config.mask_ratio, config.seed)
    save_png(sheet, config.png, storage)


def _load_model(model_uri: str, options: dict[str, Any]) -> ViTMAEForPreTraining:
    """The MAE in float32 on the CPU; an encoder-only checkpoint gets one short line instead of every missing key."""
    try:
        return ViTMAEForPreTraining.from_pretrained(
            model_uri, dtype=torch.float32, device="cpu", storage_options=options
        )
    except ValueError as err:
        if not _has_decoder(model_uri, options):
            raise InvalidInput(
                f"{model_uri} has no MAE decoder weights (an encoder-only checkpoint?); reconstructions need the whole "
                "ViTMAEForPreTraining checkpoint, such as facebook/vit-mae-base"
            ) from err
        raise


def _has_decoder(model_uri: str, options: dict[str, Any]) -> bool:
    """Whether the checkpoint holds any decoder weight (read again only after loading failed)."""
    try:
        return any(key.startswith("decoder.") for key in load_hf_state_dict(open_folder(model_uri, options)))
    except (ValueError, FileNotFoundError):  # unreadable weights: the loading error already says so
        return True


def _predict(
    model: ViTMAEForPreTraining, x: torch.Tensor, noise: torch.Tensor, mask_ratio: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x: float32 [N, 3, H, W], noise: [N, L] -> float32 logits [N, L, p*p*3], mask [N, L] (1 = masked) and each
    patch's loss [N, L], on the CPU."""
    parameter = next(model.parameters())
    training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = model(
                x.to(parameter.device, parameter.dtype), noise=noise.to(parameter.device), mask_ratio=mask_ratio
            )
    finally:
        model.train(training)  # a caller mid-training (the pre-training job) gets its model back as it was
    return out.logits.float().cpu(), out.mask.float().cpu(), out.per_patch_loss.float().cpu()


def _decode(name: str, data: bytes, processor: ViTImageProcessor) -> np.ndarray:
    """uint8 [H, W, 3] at the processor's size; a DecodeError names the image."""
    try:
        return decode_image(data, processor, DecodeConfig()).pixels
    except DecodeError as err:
        raise DecodeError(f"{name}: {err}") from None


def _read_images(
    uris: Sequence[str], processor: ViTImageProcessor, storage: Storage, limit: int | None
) -> list[tuple[str, bytes]]:
    """(uri, bytes) of the images to draw: all of them (any failure raises), or the first `limit` usable ones."""
    images: list[tuple[str, bytes]] = []
    for uri in uris:  # one at a time: the images may live on different filesystems, and sheets are small
        if limit is not None and len(images) == limit:
            break
        try:
            data = read_uri(uri, storage)
            if limit is not None:
                _decode(uri, data, processor)  # skip what would fail the whole sheet
        except (FileNotFoundError, ValueError) as err:
            if limit is None:
                raise
            logger.warning("not drawn: %s", err)
            continue
        images.append((uri, data))
    if not images:
        raise InvalidInput(f"none of the {len(uris)} images could be read and decoded")
    return images
