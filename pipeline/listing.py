"""Listing the inputs (a folder, prefix or glob, local or s3://) and reading their bytes, through fsspec."""

from __future__ import annotations

import datetime
import logging
import os
from typing import Any, Sequence

import fsspec
import pyarrow as pa
from fsspec.utils import stringify_path

from pipeline import schema
from vitmae.folder import Folder

logger = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")


def storage_options(uri: str, s3_endpoint: str | None = None) -> dict[str, Any]:
    """fsspec options for `uri`: the S3 endpoint and keys from the flag or the standard AWS variables.

    The keys are passed explicitly so that Ray workers on other machines use the driver's settings.
    """
    if not uri.startswith(("s3://", "s3a://")):
        return {}
    options: dict[str, Any] = {}
    endpoint = s3_endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["client_kwargs"] = {"endpoint_url": endpoint}
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        options["key"] = os.environ["AWS_ACCESS_KEY_ID"]
        options["secret"] = os.environ["AWS_SECRET_ACCESS_KEY"]
        if os.environ.get("AWS_SESSION_TOKEN"):  # temporary credentials (STS, SSO) need it with the keys
            options["token"] = os.environ["AWS_SESSION_TOKEN"]
    return options


def absolute_uri(uri: str, may_be_hub_id: bool = False) -> str:
    """`uri` with a local path made absolute: Ray's workers run in other folders than the driver.

    URIs stay as they are, and so does a model name that is no local path (a hub id) when `may_be_hub_id`.
    """
    if "://" in uri or (may_be_hub_id and not os.path.exists(uri)):
        return uri
    return os.path.abspath(uri)


def output_folder(uri: str, options: dict[str, Any]) -> Folder:
    """The --output folder of a run, not created (the first write does that); refuses a file there."""
    fs, root = fsspec.core.url_to_fs(uri, **options)
    if fs.isfile(root):
        raise FileExistsError(f"--output {uri} is a file; pass a folder or prefix for the run")
    return Folder(fs, root, uri)


def _mtime(info: dict[str, Any]) -> float | None:
    value = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    return float(value) if isinstance(value, (int, float)) else None


def list_inputs(uri: str, extensions: Sequence[str], options: dict[str, Any]) -> pa.Table:
    """Every file under `uri` (folder or prefix), matching it (glob), or `uri` itself, with an allowed
    extension, sorted by path.

    Returns:
        A table with `schema.LISTING_SCHEMA`: row_id, path (with scheme), size, mtime, etag.
    """
    fs, root = fsspec.core.url_to_fs(stringify_path(uri), **options)
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


def read_bytes(paths: Sequence[str], options: dict[str, Any]) -> list[bytes | Exception]:
    """The bytes of each path, or the exception that reading it raised; object stores fetch concurrently."""
    if not len(paths):
        return []
    fs, _ = fsspec.core.url_to_fs(paths[0], **options)
    stripped = [fs._strip_protocol(p) for p in paths]
    # Whole files, each path taken literally: `cat` would expand `[`, `*` and `?` in file names as a glob.
    return fs.cat_ranges(stripped, None, None, on_error="return")


def read_error(err: Exception) -> str:
    """A one-line reason for a failed read."""
    if isinstance(err, FileNotFoundError):
        return "object not found (deleted or moved after listing)"
    if isinstance(err, PermissionError):
        return "permission denied reading the object"
    first = str(err).splitlines()[0] if str(err) else ""
    return f"could not read the object: {type(err).__name__} {first}".strip()
