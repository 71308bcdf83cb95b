"""Listing the inputs: a folder, prefix or glob, local or s3://, through fsspec; or a list of them in a file."""

from __future__ import annotations

import datetime
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
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
        A table with `schema.LISTING_SCHEMA`: path (with scheme), size, mtime, etag.
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
    return _listing([fs.unstrip_protocol(path) for path, _ in files], [info for _, info in files])


def _listing(paths: Sequence[str], infos: Sequence[dict[str, Any]]) -> pa.Table:
    return pa.table(
        {
            schema.PATH: paths,
            schema.SIZE: [int(info.get("size") or 0) for info in infos],
            schema.MTIME: [_mtime(info) for info in infos],
            schema.ETAG: [(info.get("ETag") or info.get("etag") or "").strip('"') for info in infos],
        },
        schema=schema.LISTING_SCHEMA,
    )


def read_input_list(uri: str, storage: Storage, threads: int = 32) -> pa.Table:
    """The inputs named in a file: Parquet with a `path` column (and, as S3 Inventory reports give them, the
    identity columns `size_bytes` or `size`, `mtime` or `last_modified`, `etag`), or text with one URI or path a
    line. Objects a list gives no identity for are looked up (`threads` at a time); missing ones stay listed, and
    the run records them as not found.

    Returns:
        A table with `schema.LISTING_SCHEMA`, sorted by path, each path once.
    """
    fs, root = fsspec.core.url_to_fs(stringify_path(uri), **storage.options(uri))
    if not fs.isfile(root):
        raise FileNotFoundError(f"--input-list {uri}: no such file")
    if root.endswith(".parquet"):
        with fs.open(root, "rb") as f:
            table = pq.read_table(f)
        if schema.PATH not in table.column_names:
            raise ValueError(f"--input-list {uri}: expected a '{schema.PATH}' column, found {', '.join(table.column_names)}")
        paths = table.column(schema.PATH).to_pylist()
        known = _known_identity(table)
    else:
        with fs.open(root, "rt") as f:
            paths = [line.strip() for line in f if line.strip() and not line.startswith("#")]
        known = None
    if not paths:
        raise ValueError(f"--input-list {uri}: lists no inputs")
    paths = [_normalised(path, storage) for path in paths]
    infos = known if known is not None else _stat(paths, storage, threads)
    order = sorted(range(len(paths)), key=paths.__getitem__)
    unique = [i for j, i in enumerate(order) if j == 0 or paths[i] != paths[order[j - 1]]]
    logger.info("read %d inputs from %s", len(unique), uri)
    return _listing([paths[i] for i in unique], [infos[i] for i in unique])


def _known_identity(table: pa.Table) -> list[dict[str, Any]] | None:
    """Each row's size, mtime and etag from the columns an inventory has, or None when it has no size."""
    names = {name.lower(): name for name in table.column_names}
    size = names.get(schema.SIZE) or names.get("size")
    if size is None:
        return None
    mtime = names.get(schema.MTIME) or names.get("last_modified") or names.get("last_modified_date")
    etag = names.get(schema.ETAG) or names.get("e_tag")
    columns = {key: table.column(name).to_pylist() if name else [None] * table.num_rows
               for key, name in (("size", size), ("mtime", mtime), ("etag", etag))}
    return [{key: values[i] for key, values in columns.items()} for i in range(table.num_rows)]


def _normalised(path: str, storage: Storage) -> str:
    """A listed path as the listing writes it: with its scheme, local paths absolute."""
    fs, stripped = fsspec.core.url_to_fs(path, **storage.options(path))
    return fs.unstrip_protocol(stripped)


def _stat(paths: Sequence[str], storage: Storage, threads: int) -> list[dict[str, Any]]:
    """The info of each path (an empty one for a missing object: the read then says it is gone)."""

    def one(path: str) -> dict[str, Any]:
        fs, stripped = fsspec.core.url_to_fs(path, **storage.options(path))
        try:
            return fs.info(stripped)
        except FileNotFoundError:
            return {}

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, paths))
