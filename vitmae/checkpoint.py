"""Reading and writing Hugging Face checkpoint folders through fsspec (local, s3://, hub ids)."""

from __future__ import annotations

import io
import logging
import os
import pickle
from typing import Any, ClassVar

import safetensors
import safetensors.torch
import torch
from fsspec.implementations.local import LocalFileSystem
from torch import nn

from vitmae.config import EncoderConfig, dtype_name
from vitmae.convert import hf_to_vitmae, vitmae_to_hf
from vitmae.errors import InvalidInput, one_line
from vitmae.folder import CONFIG_NAME, SAFETENSORS_NAME, Folder, open_folder, weight_files

logger = logging.getLogger(__name__)


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """A torch dtype from a dtype or its name ('bf16', 'bfloat16', 'float32', ...)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    return getattr(torch, dtype_name(dtype))


def load_hf_state_dict(folder: Folder) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint folder, with the names as stored (safetensors preferred)."""
    state: dict[str, torch.Tensor] = {}
    for name in weight_files(folder):
        state.update(_load_file(folder, name))
    return state


def _load_file(folder: Folder, name: str) -> dict[str, torch.Tensor]:
    """Raises ValueError, naming the file, when it is damaged or (a .bin) holds more than tensors."""
    path = folder.path(name)
    local = isinstance(folder.fs, LocalFileSystem)
    try:
        if name.endswith(".safetensors"):
            return safetensors.torch.load_file(path) if local else safetensors.torch.load(folder.fs.cat_file(path))
        # weights_only: a .bin is a pickle, and only tensors may come out of it.
        source = path if local else io.BytesIO(folder.fs.cat_file(path))
        return torch.load(source, map_location="cpu", weights_only=True)
    except (safetensors.SafetensorError, pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise InvalidInput(f"cannot read {folder.uri}/{name}: {one_line(err)}") from err


class PretrainedMixin:
    """`from_pretrained`/`save_pretrained` for the models, in the Hugging Face file layout.

    Subclasses set `config_class`, and `encoder_prefix` ("vit." for classes that wrap the encoder
    in a `vit` attribute, as transformers does). An encoder-only class loading a checkpoint saved
    from a wrapping class drops exactly the keys of `head_prefixes`.
    """

    config_class: ClassVar[type[EncoderConfig]]
    encoder_prefix: ClassVar[str] = ""
    head_prefixes: ClassVar[tuple[str, ...]] = ("decoder.", "classifier.")

    @classmethod
    def from_pretrained(
        cls,
        path_or_uri: str | os.PathLike,
        *,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        storage_options: dict[str, Any] | None = None,
        **model_kwargs: Any,
    ):
        """Loads config.json and weights from a folder, fsspec URI or hub id; returns the model in eval mode."""
        folder = open_folder(path_or_uri, storage_options)
        config = cls.config_class.from_dict(folder.read_json(CONFIG_NAME))
        with torch.device("meta"):  # every tensor comes from the checkpoint: no memory or random init spent here
            model = cls(config, **model_kwargs)
        state = cls._match_prefix(hf_to_vitmae(load_hf_state_dict(folder)))
        _check_state(model, state, folder.uri)
        model.load_state_dict(state, strict=True, assign=True)
        return model.to(device=device, dtype=parse_dtype(dtype) or torch.get_default_dtype()).eval()

    @classmethod
    def _match_prefix(cls, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        wrapped = any(k.startswith("vit.") for k in state)
        if cls.encoder_prefix and not wrapped:
            return {f"{cls.encoder_prefix}{k}": v for k, v in state.items()}
        if not cls.encoder_prefix and wrapped:
            return {k.removeprefix("vit."): v for k, v in state.items() if not k.startswith(cls.head_prefixes)}
        return state

    def save_pretrained(self, path_or_uri: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> None:
        """Writes model.safetensors, then config.json, in the layout transformers reads."""
        assert isinstance(self, nn.Module)
        folder = open_folder(path_or_uri, storage_options, create=True)
        state = {k: v.detach().contiguous().cpu() for k, v in vitmae_to_hf(self.state_dict()).items()}
        folder.write_bytes(SAFETENSORS_NAME, safetensors.torch.save(state, metadata={"format": "pt"}))
        dtype = next(self.parameters()).dtype
        config = {
            **self.config.to_dict(),
            "architectures": [type(self).__name__],
            "dtype": str(dtype).removeprefix("torch."),
        }
        folder.write_json(CONFIG_NAME, config)
        logger.info("saved %s to %s", type(self).__name__, folder.uri)


def _check_state(model: nn.Module, state: dict[str, torch.Tensor], uri: str) -> None:
    """Raises one ValueError listing every missing, unexpected or mis-shaped weight."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if state[k].shape != expected[k].shape
    ]
    if not (missing or unexpected or shapes):
        return
    hf_names = lambda keys: sorted(vitmae_to_hf({k: expected.get(k, state.get(k)) for k in keys}))  # noqa: E731
    problems = []
    if missing:
        problems.append(f"missing {hf_names(missing)}")
        if all(k.startswith("pooler.") for k in missing):
            problems.append("(the checkpoint has no pooler: pass add_pooling_layer=False)")
    if unexpected:
        problems.append(f"unexpected {hf_names(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch {shapes}")
    raise InvalidInput(f"checkpoint {uri} does not fit {type(model).__name__}: " + "; ".join(problems))
