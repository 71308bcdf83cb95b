"""`ViTImageProcessor`: the preprocessing of transformers' PIL path, split into a CPU and a tensor half.

Only the tensor half loads torch, so that the CPU half and the settings (the embedding job's driver, its decoders)
import without it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from vitmae.errors import InvalidInput
from vitmae.folder import open_folder

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

PROCESSOR_NAME = "preprocessor_config.json"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # per RGB channel, of pixels in [0, 1]
# MAE's preprocessing, as its checkpoints on the hub (facebook/vit-mae-*) describe it: ImageNet's mean and std, bicubic
# resampling, 224 pixels. Keyword arguments of `ViTImageProcessor` and of transformers' image processors alike.
MAE_PROCESSOR = {"image_mean": list(IMAGENET_MEAN), "image_std": list(IMAGENET_STD), "resample": 3, "size": 224}
_IGNORED_KEYS = frozenset(
    {"image_processor_type", "feature_extractor_type", "processor_class", "do_center_crop", "crop_size"}
)


def _hw(size: int | dict[str, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if isinstance(size, dict) and "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    if isinstance(size, dict) and "shortest_edge" in size and len(size) == 1:
        return int(size["shortest_edge"]), int(size["shortest_edge"])
    raise InvalidInput(f"expected size as an int or {{'height': H, 'width': W}}, got {size!r}")


@dataclass(frozen=True)
class ViTImageProcessor:
    """Resize, rescale and normalise as `transformers.ViTImageProcessor` (PIL path).

    `resize_to_uint8` is the CPU half (PIL resize, uint8 [H, W, C]); `normalize` is the tensor half
    (rescale and normalise, on any device). Together they equal `__call__`.
    """

    do_resize: bool = True  # resize to `size`
    size: dict[str, int] = field(default_factory=lambda: {"height": 224, "width": 224})  # output size
    resample: int = int(Image.Resampling.BILINEAR)  # PIL resampling filter
    do_rescale: bool = True  # multiply by rescale_factor
    rescale_factor: float = 1 / 255  # uint8 -> [0, 1]
    do_normalize: bool = True  # subtract image_mean, divide by image_std
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)  # per-channel mean
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)  # per-channel std
    do_convert_rgb: bool | None = None  # convert every image to RGB first

    def __post_init__(self) -> None:
        height, width = _hw(self.size)
        object.__setattr__(self, "size", {"height": height, "width": width})
        object.__setattr__(self, "image_mean", tuple(float(m) for m in np.atleast_1d(self.image_mean)))
        object.__setattr__(self, "image_std", tuple(float(s) for s in np.atleast_1d(self.image_std)))
        object.__setattr__(self, "_device_stats", {})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ViTImageProcessor:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - _IGNORED_KEYS)
        if unknown:
            logger.warning("ignoring unknown preprocessor keys: %s", ", ".join(unknown))
        if data.get("do_center_crop"):
            raise InvalidInput("center cropping is not supported by ViTImageProcessor; expected do_center_crop false")
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["image_mean"], data["image_std"] = list(self.image_mean), list(self.image_std)
        return {**data, "image_processor_type": "ViTImageProcessor"}

    @classmethod
    def from_pretrained(
        cls, path_or_uri: str | os.PathLike, storage_options: dict[str, Any] | None = None
    ) -> ViTImageProcessor:
        """Reads preprocessor_config.json from a folder, fsspec URI or hub id."""
        return cls.from_dict(open_folder(path_or_uri, storage_options).read_json(PROCESSOR_NAME))

    def save_pretrained(self, path_or_uri: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> None:
        open_folder(path_or_uri, storage_options, create=True).write_json(PROCESSOR_NAME, self.to_dict())

    def resize_to_uint8(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """CPU half: one image -> uint8 [H, W, C] at `size` (C = 1 for a single-channel image)."""
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim not in (2, 3):
                raise ValueError(f"expected a uint8 array [H, W] or [H, W, C], got {image.dtype} {image.shape}")
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise ValueError(f"expected a PIL image or a uint8 numpy array, got {type(image).__name__}")
        if self.do_convert_rgb and image.mode != "RGB":
            image = image.convert("RGB")
        if self.do_resize:
            height, width = self.size["height"], self.size["width"]
            image = image.resize((width, height), resample=self.resample, reducing_gap=None)
        array = np.asarray(image)
        return array[..., None] if array.ndim == 2 else array

    def normalize(self, pixels: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Tensor half: uint8 [N, H, W, C] on any device -> normalised [N, C, H, W] in `dtype` (None: float32)."""
        import torch

        x = pixels.permute(0, 3, 1, 2).to(torch.float32)
        if self.do_rescale:
            x = x * self.rescale_factor
        if self.do_normalize:
            if x.shape[1] != len(self.image_mean):
                raise ValueError(
                    f"expected images with {len(self.image_mean)} channels to match image_mean, got {x.shape[1]}; "
                    "set do_convert_rgb=True to convert them"
                )
            mean, std = self._stats(x.device)
            x = (x - mean) / std
        return x.to(dtype or torch.float32)

    def _stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """image_mean and image_std as float32 [1, C, 1, 1] on `device`, made once per device: making them copies
        from the host, which on a GPU waits for all queued work and so would stall a pipelined caller."""
        import torch

        key = str(device)
        if key not in self._device_stats:
            with torch.inference_mode(False):  # plain tensors, usable where autograd runs too
                self._device_stats[key] = tuple(
                    torch.tensor(values, device=device).view(1, -1, 1, 1)
                    for values in (self.image_mean, self.image_std)
                )
        return self._device_stats[key]

    def __getstate__(self) -> dict[str, Any]:
        """Pickles without the per-device tensors, so a processor travels to machines without that device."""
        return {**self.__dict__, "_device_stats": {}}

    def __call__(
        self, images: Image.Image | np.ndarray | Sequence[Image.Image | np.ndarray], return_tensors: str = "pt"
    ) -> dict[str, torch.Tensor]:
        """images -> {"pixel_values": float32 [N, C, H, W]}, as transformers with return_tensors="pt"."""
        import torch

        if return_tensors != "pt":
            raise ValueError(f"expected return_tensors='pt', got {return_tensors!r}")
        if isinstance(images, (Image.Image, np.ndarray)):
            images = [images]
        arrays = [self.resize_to_uint8(image) for image in images]
        if len({a.shape for a in arrays}) > 1:
            raise ValueError(f"images differ in shape after resizing: {sorted({a.shape for a in arrays})}")
        return {"pixel_values": self.normalize(torch.from_numpy(np.stack(arrays)))}
