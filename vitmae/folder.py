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

from vitmae.errors import InvalidInput, NotFound, one_line

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
            raise NotFound(f"{self.uri} has no {name}")
        try:
            return json.loads(self.fs.cat_file(self.path(name)))
        except json.JSONDecodeError as err:
            raise InvalidInput(f"{self.uri}/{name} is not valid JSON: {err}") from None

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
SAFETENSORS_NAME = "model.safetensors"  # the weights as this package writes them
WEIGHT_FILES = (SAFETENSORS_NAME, "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def weight_files(folder: Folder) -> list[str]:
    """The names of a checkpoint folder's weight files (safetensors preferred; the shards of a sharded one)."""
    name = next((n for n in WEIGHT_FILES if folder.exists(n)), None)
    if name is None:
        present = sorted(os.path.basename(p) for p in folder.fs.ls(folder.root, detail=False))
        raise InvalidInput(
            f"no weights in {folder.uri}: expected one of {', '.join(WEIGHT_FILES)}, found {present or 'nothing'}"
        )
    if name.endswith(".index.json"):
        return sorted(set(folder.read_json(name)["weight_map"].values()))
    return [name]


def is_hub_id(name: str) -> bool:
    """Whether `name` has the shape of a Hugging Face hub id ("owner/name"), and is no URI or existing path."""
    return "://" not in name and bool(_HUB_ID.match(name)) and not os.path.exists(name)


def open_folder(
    path_or_uri: str | os.PathLike, storage_options: dict[str, Any] | None = None, create: bool = False
) -> Folder:
    """Resolves a local folder, an fsspec URI, or (when no such folder exists) a Hugging Face hub id.

    Raises:
        NotFound: no such folder, and, for a name shaped like a hub id, the hub could not give it (one line that
            says both, and what to do).
    """
    uri = os.fspath(path_or_uri)
    fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    if create:
        fs.makedirs(root, exist_ok=True)
        return Folder(fs, root, uri)
    if fs.isdir(root):
        return Folder(fs, root, uri)
    where = uri if "://" in uri else os.path.abspath(uri)
    if fs.isfile(root):
        raise NotFound(f"checkpoint folder not found: {where} is a file; pass the folder that holds {CONFIG_NAME}")
    if not is_hub_id(uri):
        raise NotFound(f"checkpoint folder not found: {where}")
    return Folder(LocalFileSystem(), _download_from_hub(uri, where), uri)


def _download_from_hub(repo_id: str, where: str) -> str:
    """The local copy (in the hub's cache) of the checkpoint files of `repo_id`; `where`: the folder looked for
    first."""
    from huggingface_hub import snapshot_download  # imported when needed: it costs a Ray worker that only writes files

    try:
        return snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "pytorch_model.bin"])
    except Exception as err:  # the hub client raises many types for offline, missing and gated repos
        raise NotFound(
            f"checkpoint folder not found: no local folder {where}, and the Hugging Face hub could not give {repo_id} "
            f"({_hub_reason(err)}); check the name, or where the hub is reachable run "
            f"`hf download {repo_id} --local-dir DIR` and pass DIR in its place"
        ) from err


def _hub_reason(err: Exception) -> str:
    """A few words on why the hub gave no checkpoint: offline, unreachable, no such (or a private) repository, gated."""
    from huggingface_hub import constants, errors

    chain: list[BaseException] = [err]  # err, then what it was raised from, as a traceback shows them
    while (
        inner := chain[-1].__cause__ or (None if chain[-1].__suppress_context__ else chain[-1].__context__)
    ) is not None:
        chain.append(inner)
    login = "log in with `hf auth login` if you have access"
    if any(isinstance(e, errors.OfflineModeIsEnabled) for e in chain):
        return "offline: HF_HUB_OFFLINE is set"
    if isinstance(err, errors.GatedRepoError):
        return f"the repository is gated: accept its conditions on its page, then {login}"
    if isinstance(err, errors.RepositoryNotFoundError):
        return f"no such repository, or a private one: {login}"
    answered = next((e for e in chain if isinstance(e, errors.HfHubHTTPError)), None)
    if answered is not None:
        return f"{constants.ENDPOINT} answered HTTP {answered.response.status_code}"
    if len(chain) > 1:  # the request itself failed: refused, no such host, timed out
        return f"cannot reach {constants.ENDPOINT}: {one_line(chain[-1], 120)}"
    return one_line(err, 200)
