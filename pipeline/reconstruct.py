"""What an MAE model learned, drawn as in the paper's figures: original, masked, reconstruction, reconstruction + visible."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from pipeline.contact_sheet import label_font, save_png
from pipeline.decode import DecodeConfig, DecodeError, decode_image
from pipeline.infer import mask_noise
from pipeline.listing import read_bytes, storage_options
from vitmae import ViTImageProcessor, ViTMAEForPreTraining
from vitmae.checkpoint import load_hf_state_dict
from vitmae.folder import open_folder

logger = logging.getLogger(__name__)

LABELS = ("original", "masked", "reconstruction", "reconstruction + visible")  # the panels of a row, left to right
MASK_GREY = 128  # uint8 value (every channel) of the masked patches in the "masked" panel
MIN_PANEL_PX = 128  # default panel side: the model's image size, but at least this (tiny models stay visible)
MARGIN_PX = 8  # around the sheet and between panels
LABEL_PX = 14  # font size of the labels
LINE_PX = 17  # height of one label line
HEADER_LINES = 2  # label lines in the header ("reconstruction + visible" wraps in a narrow panel)
HEADER_PX = HEADER_LINES * LINE_PX  # the header row above the first row of panels
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)


def reconstruction_rows(
    model: ViTMAEForPreTraining,
    processor: ViTImageProcessor,
    images: Sequence[tuple[str, bytes]],
    mask_ratio: float = 0.75,
    seed: int = 0,
) -> list[list[np.ndarray]]:
    """The four panels of each image, as uint8 arrays at the model's input size.

    The mask of an image is a pure function of (seed, name), as in the embedding job's loss
    (`pipeline.infer.mask_noise`), so reruns draw the same patches. With `model.config.norm_pix_loss` the
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
        set to `MASK_GREY`, every patch predicted, and the prediction with the visible patches of the original.

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
    pred, mask = _predict(model, x, torch.from_numpy(noise), mask_ratio)
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
    logger.info("reconstructed %d images, %d of %d patches masked each", len(images), int(mask[0].sum()), cfg.num_patches)
    return [[original[i], masked[i], reconstruction[i], pasted[i]] for i in range(len(images))]


def to_uint8(x: torch.Tensor, processor: ViTImageProcessor) -> np.ndarray:
    """Undoes `processor.normalize`: float [N, 3, H, W] -> uint8 [N, H, W, 3], rounded and clipped to 0..255."""
    x = x.float()
    if processor.do_normalize:
        x = x * torch.tensor(processor.image_std).view(1, -1, 1, 1) + torch.tensor(processor.image_mean).view(1, -1, 1, 1)
    if processor.do_rescale:
        x = x / processor.rescale_factor
    return x.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()


def render_rows(rows: Sequence[Sequence[np.ndarray]], panel_px: int) -> Image.Image:
    """The sheet: the header of `LABELS`, then one row of panels per image, each scaled (NEAREST) to panel_px."""
    if not rows:
        raise ValueError("expected at least one row of panels, got none")
    if panel_px < 1:
        raise ValueError(f"expected panel_px >= 1, got {panel_px}")
    sheet = Image.new("RGB", sheet_size(len(rows), panel_px), BACKGROUND)
    font = label_font(LABEL_PX)
    for column, label in enumerate(LABELS):
        # Each label is drawn on its own cell so that a narrow panel clips it instead of overlapping the next one.
        cell = Image.new("RGB", (panel_px, HEADER_PX), BACKGROUND)
        draw = ImageDraw.Draw(cell)
        for line, text in enumerate(_wrap(draw, label, font, panel_px)):
            draw.text((0, line * LINE_PX), text, fill=TEXT, font=font)
        sheet.paste(cell, (panel_origin(0, column, panel_px)[0], MARGIN_PX))
    for row, panels in enumerate(rows):
        for column, panel in enumerate(panels):
            picture = Image.fromarray(panel).resize((panel_px, panel_px), Image.Resampling.NEAREST)
            sheet.paste(picture, panel_origin(row, column, panel_px))
    return sheet


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


def save_reconstructions(
    model_uri: str,
    image_uris: Sequence[str],
    png_uri: str,
    mask_ratio: float = 0.75,
    seed: int = 0,
    s3_endpoint: str | None = None,
    limit: int | None = None,
) -> None:
    """Loads the MAE (with its decoder) and processor from `model_uri` and writes the sheet of `image_uris` as PNG.

    Args:
        model_uri: a checkpoint folder (local, fsspec URI or hub id) with config.json, the weights of a
            `ViTMAEForPreTraining` and preprocessor_config.json.
        image_uris: the images, local paths or URIs; each URI seeds its mask.
        png_uri: where the PNG goes, local path or URI.
        mask_ratio, seed: as in `reconstruction_rows`.
        s3_endpoint: S3 endpoint URL for s3:// URIs (default: the AWS_* variables).
        limit: None: every image must read and decode. A number: draw the first `limit` images that read and
            decode, skipping the others with a warning (for callers that pick a few images from a listing).

    Raises:
        FileNotFoundError: a missing model folder, config, processor config or image.
        ValueError: weights that do not fit the MAE (an encoder-only checkpoint has no decoder), an image that
            cannot be read or decoded, no usable image at all, or a bad ratio.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"expected limit >= 1 (or None for every image), got {limit}")
    options = storage_options(model_uri, s3_endpoint)
    model = _load_model(model_uri, options)
    processor = ViTImageProcessor.from_pretrained(model_uri, options)
    images = _read_images(image_uris, processor, s3_endpoint, limit)
    sheet = render_reconstructions(model, processor, images, mask_ratio, seed)
    save_png(sheet, png_uri, s3_endpoint)


def sheet_size(rows: int, panel_px: int) -> tuple[int, int]:
    """(width, height) of a sheet of `rows` images."""
    return MARGIN_PX + len(LABELS) * (panel_px + MARGIN_PX), MARGIN_PX + HEADER_PX + rows * (panel_px + MARGIN_PX)


def panel_origin(row: int, column: int, panel_px: int) -> tuple[int, int]:
    """(left, top) of the panel in `column` (a `LABELS` index) of image `row`."""
    return MARGIN_PX + column * (panel_px + MARGIN_PX), MARGIN_PX + HEADER_PX + row * (panel_px + MARGIN_PX)


def _load_model(model_uri: str, options: dict[str, Any]) -> ViTMAEForPreTraining:
    """The MAE in float32 on the CPU; an encoder-only checkpoint gets one short line instead of every missing key."""
    try:
        return ViTMAEForPreTraining.from_pretrained(model_uri, dtype=torch.float32, device="cpu", storage_options=options)
    except ValueError as err:
        if not _has_decoder(model_uri, options):
            raise ValueError(
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """x: float32 [N, 3, H, W], noise: [N, L] -> float32 logits [N, L, p*p*3] and mask [N, L] (1 = masked), on the CPU."""
    parameter = next(model.parameters())
    training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = model(x.to(parameter.device, parameter.dtype), noise=noise.to(parameter.device), mask_ratio=mask_ratio)
    finally:
        model.train(training)  # a caller mid-training (the pre-training job) gets its model back as it was
    return out.logits.float().cpu(), out.mask.float().cpu()


def _decode(name: str, data: bytes, processor: ViTImageProcessor) -> np.ndarray:
    """uint8 [H, W, 3] at the processor's size; a DecodeError names the image."""
    try:
        return decode_image(data, processor, DecodeConfig()).pixels
    except DecodeError as err:
        raise DecodeError(f"{name}: {err}") from None


def _read_images(
    uris: Sequence[str], processor: ViTImageProcessor, s3_endpoint: str | None, limit: int | None
) -> list[tuple[str, bytes]]:
    """(uri, bytes) of the images to draw: all of them (any failure raises), or the first `limit` usable ones."""
    images: list[tuple[str, bytes]] = []
    for uri in uris:  # one at a time: the images may live on different filesystems, and sheets are small
        if limit is not None and len(images) == limit:
            break
        try:
            data = _read(uri, s3_endpoint)
            if limit is not None:
                _decode(uri, data, processor)  # skip what would fail the whole sheet
        except (FileNotFoundError, ValueError) as err:
            if limit is None:
                raise
            logger.warning("not drawn: %s", err)
            continue
        images.append((uri, data))
    if not images:
        raise ValueError(f"none of the {len(uris)} images could be read and decoded")
    return images


def _read(uri: str, s3_endpoint: str | None) -> bytes:
    found = read_bytes([uri], storage_options(uri, s3_endpoint))[0]
    if isinstance(found, FileNotFoundError):
        raise FileNotFoundError(f"image not found: {uri}")
    if isinstance(found, Exception):
        reason = str(found).splitlines()[0] if str(found) else type(found).__name__
        raise ValueError(f"cannot read {uri}: {reason}")
    return found


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    """`text` in at most HEADER_LINES lines of at most `width` pixels, broken at spaces where it can be."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines[: HEADER_LINES - 1] + [" ".join(lines[HEADER_LINES - 1:])] if len(lines) > HEADER_LINES else lines
