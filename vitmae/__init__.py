"""A pure-PyTorch ViTMAE and ViT that read and write Hugging Face checkpoints and match transformers.

The public names load their modules on first use, so that `vitmae.folder` (file access only) imports
without torch: a Ray worker that only writes files then starts in a fraction of a second.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_MODULES = {
    "ImageClassifierOutput": "vitmae.vit",
    "ViTConfig": "vitmae.config",
    "ViTForImageClassification": "vitmae.vit",
    "ViTImageProcessor": "vitmae.processor",
    "ViTMAEConfig": "vitmae.config",
    "ViTMAEDecoder": "vitmae.mae",
    "ViTMAEForPreTraining": "vitmae.mae",
    "ViTMAEForPreTrainingOutput": "vitmae.mae",
    "ViTMAEModel": "vitmae.mae",
    "ViTMAEModelOutput": "vitmae.mae",
    "ViTModel": "vitmae.vit",
    "ViTModelOutput": "vitmae.vit",
}

__all__ = sorted(_MODULES)

if TYPE_CHECKING:
    from vitmae.config import ViTConfig, ViTMAEConfig
    from vitmae.mae import (
        ViTMAEDecoder,
        ViTMAEForPreTraining,
        ViTMAEForPreTrainingOutput,
        ViTMAEModel,
        ViTMAEModelOutput,
    )
    from vitmae.processor import ViTImageProcessor
    from vitmae.vit import ImageClassifierOutput, ViTForImageClassification, ViTModel, ViTModelOutput


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module 'vitmae' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULES[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
