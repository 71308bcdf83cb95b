"""Listing the inputs: a folder, prefix or glob, local or s3://, through fsspec."""

from __future__ import annotations

import datetime
import logging
from typing import Any, Sequence

import fsspec
import pyarrow as pa
from fsspec.utils import stringify_path

from pipeline import schema
from pipeline.storage import Storage

logger = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")


def _mtime(info: dict[str, Any]) -> float | None:
    value = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    return float(value) if isinstance(value, (int, float)) else None


def list_inputs(uri: str, extensions: Sequence[str], storage: Storage) -> pa.Table:
    """Every file under `uri` (folder or prefix), matching it (glob), or `uri` itself, with an allowed
    extension, sorted by path.

    Returns:
        A table with `schema.LISTING_SCHEMA`: row_id, path (with scheme), size, mtime, etag.
    """
    fs, root = fsspec.core.url_to_fs(stringify_path(uri), **storage.options(uri))
    if any(c in root for c in "*?["):
        infos = fs.glob(root, detail=True)
    elif fs.isdir(root):
        infos = fs.find(root, detail=True)
    elif fs.isfile(root):
        infos = {root: fs.info(root)}
    else:
        raise FileNotFoundError(f"--input {uri}: no such folder, prefix or file")
    allowed = {e.lower().lstrip(".") for e in extensions}
    files = sorted(
        (path, info) for path, info in infos.items()
        if info.get("type") == "file" and path.rsplit(".", 1)[-1].lower() in allowed
    )
    if not files:
        found = sum(info.get("type") == "file" for info in infos.values())
        if not found:
            raise ValueError(f"--input {uri}: no files found there")
        raise ValueError(f"--input {uri}: none of its {found} files has one of the extensions {', '.join(sorted(allowed))}")
    logger.info("listed %d inputs under %s", len(files), uri)
    return pa.table(
        {
            schema.ROW_ID: list(range(len(files))),
            schema.PATH: [fs.unstrip_protocol(path) for path, _ in files],
            schema.SIZE: [int(info.get("size") or 0) for _, info in files],
            schema.MTIME: [_mtime(info) for _, info in files],
            schema.ETAG: [(info.get("ETag") or info.get("etag") or "").strip('"') for _, info in files],
        },
        schema=schema.LISTING_SCHEMA,
    )
