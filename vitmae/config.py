"""Model configurations with Hugging Face field names: `ViTConfig` and `ViTMAEConfig`."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

from vitmae.errors import InvalidInput

logger = logging.getLogger(__name__)

# Keys that Hugging Face writes into every config.json and that carry nothing for these models.
_GENERIC_HF_KEYS = frozenset(
    {
        "architectures",
        "transformers_version",
        "torch_dtype",
        "dtype",
        "_name_or_path",
        "problem_type",
        "return_dict",
        "output_hidden_states",
        "output_attentions",
        "torchscript",
        "use_bfloat16",
        "pruned_heads",
        "tie_word_embeddings",
        "chunk_size_feed_forward",
        "is_encoder_decoder",
        "is_decoder",
        "add_cross_attention",
        "tf_legacy_loss",
        "label2id",
        "_attn_implementation_autoset",
        "finetuning_task",
        "tokenizer_class",
        "prefix",
        "bos_token_id",
        "pad_token_id",
        "eos_token_id",
        "sep_token_id",
        "decoder_start_token_id",
        "task_specific_params",
        "cross_attention_hidden_size",
    }
)


# The dtypes a model runs in, by torch's names, and their bytes an element; named without torch, so that code which
# only checks settings (the embedding job's driver) imports none.
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_DTYPE_ALIASES = {"fp32": "float32", "float": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


def dtype_name(dtype: str) -> str:
    """torch's name of a dtype from any of its names ('bf16' -> 'bfloat16'); ValueError for an unknown one."""
    name = _DTYPE_ALIASES.get(dtype, dtype)
    if name not in DTYPE_BYTES:
        raise InvalidInput(f"unknown dtype {dtype!r}; expected one of {sorted([*DTYPE_BYTES, *_DTYPE_ALIASES])}")
    return name


def _square(value: Any, name: str) -> int:
    """Hugging Face allows `image_size`/`patch_size` as an int or a pair; these models need a square."""
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
        return int(value[0])
    raise InvalidInput(f"{name} must be an int or a square pair, got {value!r}")


@dataclass(frozen=True)
class EncoderConfig:
    """Fields shared by the ViT and ViTMAE encoders, with Hugging Face names."""

    model_type: ClassVar[str] = ""

    hidden_size: int = 768  # width D of every token
    num_hidden_layers: int = 12  # transformer blocks
    num_attention_heads: int = 12  # heads per block; D must divide by it
    intermediate_size: int = 3072  # hidden width of each block's MLP
    hidden_act: str = "gelu"  # MLP activation (exact erf GELU by default)
    hidden_dropout_prob: float = 0.0  # dropout after attention and MLP (training only)
    attention_probs_dropout_prob: float = 0.0  # dropout on attention weights (training only)
    initializer_range: float = 0.02  # std of the normal init of tokens and weights
    layer_norm_eps: float = 1e-12  # LayerNorm epsilon
    image_size: int = 224  # square input side in pixels
    patch_size: int = 16  # square patch side in pixels
    num_channels: int = 3  # input channels
    qkv_bias: bool = True  # bias on the query/key/value projections
    # Class labels of a fine-tuned checkpoint (hub configs carry them with num_labels and label2id); None: none.
    id2label: dict[int, str] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.id2label is not None:
            object.__setattr__(self, "id2label", {int(k): str(v) for k, v in self.id2label.items()})
        object.__setattr__(self, "image_size", _square(self.image_size, "image_size"))
        object.__setattr__(self, "patch_size", _square(self.patch_size, "patch_size"))
        if self.hidden_size % self.num_attention_heads:
            raise InvalidInput(
                f"hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.image_size % self.patch_size:
            raise InvalidInput(f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})")

    @property
    def num_patches(self) -> int:
        """Patches per image at `image_size`."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_labels(self) -> int:
        return len(self.id2label) if self.id2label else 2

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        """Build from a config.json dict; a wrong `model_type` is an error, unknown keys a warning."""
        model_type = data.get("model_type", cls.model_type)
        if model_type != cls.model_type:
            raise InvalidInput(f"expected a config with model_type {cls.model_type!r}, got {model_type!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - _GENERIC_HF_KEYS - {"model_type", "num_labels"})
        if unknown:
            logger.warning("ignoring unknown %s config keys: %s", cls.__name__, ", ".join(unknown))
        kwargs = {k: v for k, v in data.items() if k in names}
        if kwargs.get("id2label") is None and "num_labels" in data:
            kwargs["id2label"] = {i: f"LABEL_{i}" for i in range(int(data["num_labels"]))}
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The config.json dict, readable by transformers."""
        data = {"model_type": self.model_type, **dataclasses.asdict(self)}
        if self.id2label:
            data["id2label"] = {str(k): v for k, v in self.id2label.items()}
            data["label2id"] = {v: k for k, v in self.id2label.items()}
        else:
            del data["id2label"]
        return data


@dataclass(frozen=True)
class ViTConfig(EncoderConfig):
    """A ViT encoder (and optional classifier head), field for field as `transformers.ViTConfig`."""

    model_type: ClassVar[str] = "vit"

    encoder_stride: int = 16  # kept for file compatibility (masked image modeling heads)
    pooler_output_size: int | None = None  # ViTModel pooler width; None means hidden_size
    pooler_act: str = "tanh"  # ViTModel pooler activation

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        if data["pooler_output_size"] is None:
            data["pooler_output_size"] = self.hidden_size
        return data


@dataclass(frozen=True)
class ViTMAEConfig(EncoderConfig):
    """A ViTMAE encoder and decoder, field for field as `transformers.ViTMAEConfig`."""

    model_type: ClassVar[str] = "vit_mae"

    decoder_num_attention_heads: int = 16  # heads per decoder block
    decoder_hidden_size: int = 512  # decoder token width
    decoder_num_hidden_layers: int = 8  # decoder blocks
    decoder_intermediate_size: int = 2048  # decoder MLP width
    mask_ratio: float = 0.75  # fraction of patches hidden from the encoder by default
    norm_pix_loss: bool = False  # reconstruct per-patch normalised pixels (MAE paper, Table 3)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.mask_ratio < 1.0:
            raise InvalidInput(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
