"""What an embedding run checks before any work: the model and its processor, and the settings an existing table
was embedded with, which must be this run's (every one of them changes the numbers)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from pipeline.embed.decode import DecodeConfig
from pipeline.embed.infer import InferConfig, model_class
from pipeline.storage import Storage, probe
from pipeline.storage_errors import explained
from vitmae.config import ViTMAEConfig
from vitmae.errors import InvalidInput, NotFound
from vitmae.folder import CONFIG_NAME, Folder, open_folder, weight_files
from vitmae.processor import PROCESSOR_NAME, ViTImageProcessor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Model:
    """A checked model."""

    uri: str
    config: dict[str, Any]  # config.json
    processor: ViTImageProcessor
    files: list[dict[str, Any]]  # name, size and ETag or mtime of each weight file: the digest's cache key
    sha256: str  # of the weight files, as stored

    @property
    def dimension(self) -> int:
        return int(self.config["hidden_size"])


def check_model(uri: str, storage: Storage, known: dict[str, Any] | None = None) -> Model:
    """Reads the model's config and processor, checks they fit, and fingerprints its weights.

    The weights are hashed, unless `known` (an earlier run's {"files", "sha256"}) names the same files with the same
    sizes and ETags or modification times: a nightly run with nothing new does not read a large checkpoint again.

    Raises:
        AccessDenied, NotFound, StorageAttemptUnreachable: the store refused the model's folder, or did not answer.
    """
    with explained(uri, storage, "read"):
        probe(uri, storage)  # the store's refusals, which opening the folder could take for "not found"
        return _checked_model(open_folder(uri, storage.options(uri)), storage, known)


def _checked_model(folder: Folder, storage: Storage, known: dict[str, Any] | None) -> Model:
    uri = folder.uri
    config = folder.read_json(CONFIG_NAME)
    mae = ViTMAEConfig.from_dict(config)
    if not folder.exists(PROCESSOR_NAME):
        raise NotFound(
            f"model {uri} has no {PROCESSOR_NAME}; save the processor the model was trained with next to it "
            "(vitmae.ViTImageProcessor(...).save_pretrained(folder))"
        )
    processor = ViTImageProcessor.from_pretrained(folder.uri, storage.options(uri))
    if not processor.do_resize or processor.size != {"height": mae.image_size, "width": mae.image_size}:
        size = processor.size if processor.do_resize else "nothing (do_resize is false)"
        raise InvalidInput(
            f"model {uri}: the processor resizes to {size} "
            f"but the model expects {mae.image_size}x{mae.image_size} images"
        )
    files = [_identity(folder, name) for name in weight_files(folder)]
    if known and known.get("files") == files:
        sha256 = known["sha256"]
    else:
        sha256 = _digest(folder, [f["name"] for f in files])
    return Model(uri, config, processor, files, sha256)


def check_weights(model: Model, infer: InferConfig, storage: Storage) -> int:
    """Loads the model as the actors will, on the meta device: unreadable weights, and weights that do not fit the
    config, fail here. Returns its parameter count (the decoder's too when the loss is scored).

    The first call in a process imports torch (about a second of a core), which nothing before it in the job's
    driver does: the run makes this call while Ray starts."""
    loaded = model_class(infer.mask_ratio).from_pretrained(
        model.uri, device="meta", storage_options=storage.options(model.uri)
    )
    return sum(p.numel() for p in loaded.parameters())


def _identity(folder: Folder, name: str) -> dict[str, Any]:
    info = folder.fs.info(folder.path(name))
    stamp = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified")
    return {"name": name, "size": int(info.get("size") or 0), "stamp": str(stamp)}


def _digest(folder: Folder, names: list[str]) -> str:
    digest = hashlib.sha256()
    for name in names:
        with folder.fs.open(folder.path(name), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                digest.update(chunk)
    return digest.hexdigest()


# Settings that tables written before they were recorded had: JPEGs decoded at a reduced scale, as "fast" does, and
# no per-patch loss.
_UNRECORDED = {"decode": "fast", "patch_loss": False}


def settings(model: Model, infer: InferConfig, dtype: str, decode: DecodeConfig) -> dict[str, Any]:
    """The settings that change the numbers a run writes; every run on a table must have the table's.

    dtype: the one the model runs in ("auto" resolved, `InferConfig.resolved_dtype`).
    """
    return {
        "decode": decode.mode,
        "model_sha256": model.sha256,
        "processor": model.processor.to_dict(),
        "pooling": infer.pooling,
        "mask_ratio": infer.mask_ratio,
        "loss_samples": infer.loss_samples if infer.mask_ratio > 0 else None,  # no masks, no loss: any K is the same
        "seed": infer.seed if infer.mask_ratio > 0 else None,
        "patch_loss": infer.patch_loss,
        "dtype": dtype,
    }


def check_settings(table: dict[str, Any], run: dict[str, Any], output: str) -> None:
    """Refuses a run whose settings differ from the table's, naming each difference; "auto" dtype matches any."""
    table = {**_UNRECORDED, **table}
    run = {name: value for name, value in run.items() if not (name == "dtype" and value == "auto")}
    differences = [
        f"{name} {shown_setting(ours)} (the table) vs {shown_setting(theirs)} (this run)"
        for name, (ours, theirs) in differing_settings({name: table.get(name) for name in run}, run).items()
    ]
    if differences:
        raise InvalidInput(
            f"output {output} was embedded with other settings: {'; '.join(differences)}; run with the table's "
            "settings, or give --overwrite true to start new tables"
        )


def differing_settings(first: dict[str, Any], second: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{name: (first's value, second's)} of every setting that differs; a dict's keys compared one by one
    (`processor.size.height`)."""
    found = {}
    for name in sorted(set(first) | set(second)):
        a, b = first.get(name), second.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            found.update({f"{name}.{key}": pair for key, pair in differing_settings(a, b).items()})
        elif a != b:
            found[name] = (a, b)
    return found


def shown_setting(value: Any) -> str:
    """A setting's value for a one-line message: "(not recorded)" for None, JSON for a dict or list, cut at 60."""
    if value is None:
        return "(not recorded)"
    text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
