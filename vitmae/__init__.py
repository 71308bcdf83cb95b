"""A pure-PyTorch ViTMAE and ViT that read and write Hugging Face checkpoints and match transformers."""

from vitmae.config import ViTConfig, ViTMAEConfig
from vitmae.mae import ViTMAEDecoder, ViTMAEForPreTraining, ViTMAEForPreTrainingOutput, ViTMAEModel, ViTMAEModelOutput
from vitmae.processor import ViTImageProcessor
from vitmae.vit import ImageClassifierOutput, ViTForImageClassification, ViTModel, ViTModelOutput

__all__ = [
    "ImageClassifierOutput",
    "ViTConfig",
    "ViTForImageClassification",
    "ViTImageProcessor",
    "ViTMAEConfig",
    "ViTMAEDecoder",
    "ViTMAEForPreTraining",
    "ViTMAEForPreTrainingOutput",
    "ViTMAEModel",
    "ViTMAEModelOutput",
    "ViTModel",
    "ViTModelOutput",
]
