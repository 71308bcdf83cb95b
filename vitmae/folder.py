"""Folders on any fsspec filesystem (local, s3://, Hugging Face hub ids), with writes no reader sees half-done.

Imports no torch, so stages that only read and write files (the pipeline's writer) start quickly.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from vitmae.errors import NotFound, one_line

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Folder:
    """A folder on any fsspec filesystem: a checkpoint, or a run's outputs."""

    fs: fsspec.AbstractFileSystem
    root: str
    uri: str  # as the user gave it, for messages

    def path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def exists(self, name: str) -> bool:
        return self.fs.exists(self.path(name))

    def remove(self, names: tuple[str, ...]) -> None:
        """Removes those of `names` (files or folders) that exist, in the order given."""
        for name in names:
            if self.exists(name):
                self.fs.rm(self.path(name), recursive=True)

    def read_json(self, name: str) -> dict[str, Any]:
        if not self.exists(name):
            raise FileNotFoundError(f"{self.uri} has no {name}")
        try:
            return json.loads(self.fs.cat_file(self.path(name)))
        except json.JSONDecodeError as err:
            raise ValueError(f"{self.uri}/{name} is not valid JSON: {err}") from None

    def write_bytes(self, name: str, data: bytes) -> None:
        """Writes so that no reader sees a half-written file: temp file and rename, or one PUT."""
        path = self.path(name)
        if isinstance(self.fs, LocalFileSystem):
            with _replacing(path) as tmp, open(tmp, "wb") as f:
                f.write(data)
        else:
            self.fs.pipe_file(path, data)

    def put_file(self, name: str, local_path: str) -> None:
        """Copies a local file to `name` so that no reader sees it half-written, as `write_bytes`."""
        path = self.path(name)
        if isinstance(self.fs, LocalFileSystem):
            with _replacing(path) as tmp:
                shutil.copyfile(local_path, tmp)
        else:
            self.fs.put_file(local_path, path)

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        self.write_bytes(name, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


@contextlib.contextmanager
def _replacing(path: str) -> Iterator[str]:
    """Yields a temporary name beside `path` to write; renames it to `path` when the block succeeds, else removes it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


CONFIG_NAME = "config.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def weight_files(folder: Folder) -> list[str]:
    """The names of a checkpoint folder's weight files (safetensors preferred; the shards of a sharded one)."""
    name = next((n for n in WEIGHT_FILES if folder.exists(n)), None)
    if name is None:
        present = sorted(os.path.basename(p) for p in folder.fs.ls(folder.root, detail=False))
        raise ValueError(
            f"no weights in {folder.uri}: expected one of {', '.join(WEIGHT_FILES)}, found {present or 'nothing'}"
        )
    if name.endswith(".index.json"):
        return sorted(set(folder.read_json(name)["weight_map"].values()))
    return [name]


def open_folder(path_or_uri: str | os.PathLike, storage_options: dict[str, Any] | None = None, create: bool = False) -> Folder:
    """Resolves a local folder, an fsspec URI, or (when not found locally) a Hugging Face hub id."""
    uri = os.fspath(path_or_uri)
    fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    if create:
        fs.makedirs(root, exist_ok=True)
        return Folder(fs, root, uri)
    if fs.isdir(root):
        return Folder(fs, root, uri)
    if "://" not in uri and _HUB_ID.match(uri) and not os.path.exists(uri):
        return Folder(LocalFileSystem(), _download_from_hub(uri), uri)
    raise NotFound(f"checkpoint folder not found: {uri}")


def _download_from_hub(repo_id: str) -> str:
    advice = (
        f"download it first (huggingface-cli download {repo_id} --local-dir DIR) and pass DIR, "
        "or pass a local folder or s3:// URI holding config.json and model.safetensors"
    )
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(f"{repo_id!r} is not a folder and huggingface_hub is not installed: {advice}") from None
    try:
        return snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "pytorch_model.bin"])
    except Exception as err:  # the hub client raises many types for offline, missing and gated repos
        raise FileNotFoundError(f"could not fetch {repo_id!r} from the Hugging Face hub ({one_line(err)}): {advice}") from None
