"""Listing the inputs: a folder, prefix or glob, local or s3://, through fsspec; or a list of them in a file.

Listings stream: folders are walked and S3 prefixes read a page at a time, in chunks of `CHUNK_ROWS` rows, so that
the driver holds one chunk, never every path of a large listing; a glob walks its fixed prefix the same way and keeps
what matches; `write_listing` puts the chunks in Parquet files.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import glob_translate, stringify_path

from pipeline import schema
from pipeline.embed import inventory
from pipeline.storage import Storage, listed_etag, listed_mtime, listed_uri
from vitmae.errors import InvalidInput, NotFound

logger = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
CHUNK_ROWS = 100_000  # listing rows held at once
S3_PAGE_KEYS = 1_000  # keys an S3 listing request asks for (S3 answers at most 1,000)
GLOB_CHARACTERS = "*?["  # what makes an input a pattern, as fsspec's glob reads one
PARQUET_MAGIC = b"PAR1"
ORC_MAGIC = b"ORC"
LIST_FORMATS = (
    "an S3 Inventory report (its manifest.json, or a CSV, ORC or Parquet data file), Parquet with a "
    f"'{schema.PATH}' column, or text with one URI a line"
)
# The identity columns a Parquet list with a path column may have, by the listing's names (lower case).
LIST_IDENTITY_COLUMNS = {
    schema.SIZE: (schema.SIZE, inventory.SIZE),
    schema.MTIME: (schema.MTIME, "last_modified", inventory.LAST_MODIFIED),
    schema.ETAG: (schema.ETAG, inventory.ETAG),
}


def _listing(paths: Sequence[str], infos: Sequence[dict[str, Any]]) -> pa.Table:
    return pa.table(
        {
            schema.PATH: paths,
            schema.SIZE: [int(info.get("size") or 0) for info in infos],
            schema.MTIME: [listed_mtime(info) for info in infos],
            schema.ETAG: [listed_etag(info) for info in infos],
        },
        schema=schema.LISTING_SCHEMA,
    )


def iter_listing(
    uri: str, extensions: Sequence[str], storage: Storage, chunk_rows: int = CHUNK_ROWS
) -> Iterator[pa.Table]:
    """Every file under `uri` (folder or prefix), matching it (glob), or `uri` itself, with an allowed extension, as
    tables of `schema.LISTING_SCHEMA` of at most `chunk_rows` rows, in no particular order.

    Raises:
        NotFound: no such folder, prefix or file. InvalidInput: no files there, or none with the extensions, or a
        pattern fsspec's glob refuses.
    """
    fs, root = fsspec.core.url_to_fs(stringify_path(uri), **storage.options(uri))
    if any(c in root for c in GLOB_CHARACTERS):
        entries: Iterator[tuple[str, dict[str, Any]]] = _glob(fs, root, uri)
    elif fs.isdir(root):
        entries = _walk(fs, f"{root.rstrip('/')}/")
    elif fs.isfile(root):
        entries = iter([(root, fs.info(root))])
    else:
        raise NotFound(f"--input {uri}: no such folder, prefix or file")
    allowed = {e.lower().lstrip(".") for e in extensions}
    files = listed = 0
    paths: list[str] = []
    infos: list[dict[str, Any]] = []
    for path, info in entries:
        if info.get("type") != "file":
            continue
        files += 1
        if path.rsplit(".", 1)[-1].lower() not in allowed:
            continue
        paths.append(fs.unstrip_protocol(path))
        infos.append(info)
        if len(paths) == chunk_rows:
            listed += len(paths)
            yield _listing(paths, infos)
            paths, infos = [], []
    if paths:
        listed += len(paths)
        yield _listing(paths, infos)
    if not listed:
        if not files:
            raise InvalidInput(f"--input {uri}: no files found there")
        raise InvalidInput(
            f"--input {uri}: none of its {files} files has one of the extensions {', '.join(sorted(allowed))}"
        )
    logger.info("listed %d inputs under %s", listed, uri)


def _glob(fs: fsspec.AbstractFileSystem, pattern: str, uri: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, info) of every entry matching `pattern` by fsspec's glob rules (`*` and `?` within a path segment, `**`
    across segments, `[...]` a character class), found by walking the fixed prefix before the first wildcard as
    `_walk` walks any prefix, so that no list of the matches is ever held. Local folders below the depth a pattern
    without `**` can reach are not entered; an S3 prefix is listed whole, however deep."""
    fixed = pattern[: min(pattern.find(c) for c in GLOB_CHARACTERS if c in pattern)]
    if not isinstance(fs, LocalFileSystem) and "/" not in fixed:
        raise InvalidInput(f"--input {uri}: a wildcard in the bucket's name; name the bucket, wildcards may follow it")
    try:
        matches = re.compile(glob_translate(pattern)).match
    except ValueError as err:  # '**' inside a segment
        raise InvalidInput(f"--input {uri}: {err}") from None
    depth = None if "**" in pattern else pattern.count("/") - fixed.count("/") + 1
    return ((path, info) for path, info in _walk(fs, fixed, depth) if matches(path))


def _walk(fs: fsspec.AbstractFileSystem, prefix: str, depth: int | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, info) of every entry whose path starts with `prefix` (a folder's ends with '/'), a page or a folder at a
    time where the filesystem allows; on local disks, only down to `depth` segments below the prefix's folder."""
    folder, start = prefix.rsplit("/", 1)
    if isinstance(fs, LocalFileSystem):
        yield from _walk_local(folder or "/", start, depth)
        return
    if hasattr(fs, "call_s3"):  # s3fs
        yield from _walk_s3(fs, prefix)
        return
    for path, info in fs.find(folder, detail=True).items():  # other filesystems: whole
        if path.startswith(prefix):
            yield path, info


def _walk_s3(fs: fsspec.AbstractFileSystem, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """`_walk` on S3: every key under `prefix` ("bucket/key-prefix"), one page of `S3_PAGE_KEYS` keys a request."""
    bucket, _, key = prefix.partition("/")
    request = {"Bucket": bucket, "Prefix": key, "MaxKeys": S3_PAGE_KEYS}
    while True:
        page = fs.call_s3("list_objects_v2", **request)
        for entry in page.get("Contents", ()):
            path = f"{bucket}/{entry['Key']}"
            yield path, {**entry, "name": path, "type": "file", "size": entry["Size"]}
        if not page.get("IsTruncated"):
            return
        request["ContinuationToken"] = page["NextContinuationToken"]


def _walk_local(folder: str, start: str, depth: int | None) -> Iterator[tuple[str, dict[str, Any]]]:
    """`_walk` on a local disk: the files under `folder` whose path below it starts with `start`."""
    for parent, folders, names in os.walk(folder):
        level = 0 if parent == folder else os.path.relpath(parent, folder).count(os.sep) + 1
        if level == 0 and start:
            folders[:] = [name for name in folders if name.startswith(start)]
            names = [name for name in names if name.startswith(start)]
        if depth is not None and level + 1 >= depth:
            folders[:] = []
        for name in names:
            path = os.path.join(parent, name)
            try:
                stat = os.stat(path)
            except FileNotFoundError:  # gone while walking
                continue
            yield path, {"type": "file", "size": stat.st_size, "mtime": stat.st_mtime}


def iter_input_list(uri: str, storage: Storage, chunk_rows: int = CHUNK_ROWS, threads: int = 32) -> Iterator[pa.Table]:
    """The inputs named in a file, as tables of `schema.LISTING_SCHEMA` of at most `chunk_rows` rows. The file is
    told by its content: an S3 Inventory report, as its manifest.json or one of its CSV, ORC or Parquet data files
    (`pipeline.embed.inventory`); Parquet with a `path` column (and, where it has them, the identity columns
    `size_bytes` or `size`, `mtime`, `last_modified` or `last_modified_date`, `etag` or `e_tag`); or text with one URI
    or path a line (a file named `.csv` is read as an inventory's CSV). Objects a list gives no size for are looked
    up (`threads` at a time); missing ones stay listed, and the run records them as not found. A path listed twice
    is compared once (`pipeline.embed.diff`).
    """
    fs, root = fsspec.core.url_to_fs(stringify_path(uri), **storage.options(uri))
    if not fs.isfile(root):
        raise NotFound(f"--input_list {uri}: no such file")
    rows = 0
    for table in _read_list(fs, root, uri, chunk_rows):
        paths = [listed_uri(path) for path in table.column(schema.PATH).to_pylist()]
        rows += len(paths)
        if schema.SIZE not in table.column_names:
            yield _listing(paths, _stat(paths, storage, threads))
        else:
            identity = {name: table.column(name) for name in schema.IDENTITY}
            yield pa.table({schema.PATH: paths, **identity}, schema=schema.LISTING_SCHEMA)
    if not rows:
        raise InvalidInput(f"--input_list {uri}: lists no inputs")
    logger.info("read %d inputs from %s", rows, uri)


def _read_list(fs: fsspec.AbstractFileSystem, root: str, uri: str, chunk_rows: int) -> Iterator[pa.Table]:
    """The rows of the list at `root` as tables with `schema.PATH` and, where the list gives them, `schema.IDENTITY`."""
    with fs.open(root, "rb") as f:
        head = f.read(64)
    if head.startswith(PARQUET_MAGIC):
        return _parquet_list(fs, root, uri, chunk_rows)
    if head.startswith(ORC_MAGIC):
        return inventory.iter_data_file(fs, root, "ORC", chunk_rows, f"--input_list {uri}")
    if head.startswith(inventory.GZIP_MAGIC) or root.endswith(".csv"):
        return inventory.iter_data_file(fs, root, "CSV", chunk_rows, f"--input_list {uri}")
    if head.lstrip().startswith(b"{"):
        return inventory.iter_manifest(fs, root, uri, chunk_rows)
    return _text_list(fs, root, uri, chunk_rows)


def _parquet_list(fs: fsspec.AbstractFileSystem, root: str, uri: str, chunk_rows: int) -> Iterator[pa.Table]:
    with fs.open(root, "rb") as f:
        try:
            parquet = pq.ParquetFile(f)
        except pa.ArrowInvalid as err:
            raise InvalidInput(f"--input_list {uri}: not a Parquet file ({str(err).splitlines()[0]})") from None
        names = parquet.schema_arrow.names
        if schema.PATH not in names and {inventory.BUCKET, inventory.KEY} <= set(names):
            yield from inventory.iter_data_file(fs, root, "Parquet", chunk_rows, f"--input_list {uri}")
            return
        if schema.PATH not in names:
            raise InvalidInput(
                f"--input_list {uri}: expected a '{schema.PATH}' column, or an S3 Inventory's "
                f"'{inventory.BUCKET}' and '{inventory.KEY}', found {', '.join(names)}"
            )
        for batch in parquet.iter_batches(batch_size=chunk_rows):
            yield _path_rows(pa.Table.from_batches([batch]), uri)


def _path_rows(table: pa.Table, uri: str) -> pa.Table:
    """A batch of a Parquet list with a `path` column, with the identity columns it has under the listing's names."""
    names = {name.lower(): name for name in table.column_names}
    found = {
        key: next((names[n] for n in aliases if n in names), None) for key, aliases in LIST_IDENTITY_COLUMNS.items()
    }
    if found[schema.SIZE] is None:
        return table.select([schema.PATH])
    size, mtime, etag = (table.column(found[key]) if found[key] else None for key in schema.IDENTITY)
    try:
        return pa.table({schema.PATH: table.column(schema.PATH), **inventory.identity_columns(size, mtime, etag)})
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        columns = ", ".join(filter(None, found.values()))
        raise InvalidInput(
            f"--input_list {uri}: expected sizes, times and ETags in {columns}, found {str(err).splitlines()[0]}"
        ) from None


def _text_list(fs: fsspec.AbstractFileSystem, root: str, uri: str, chunk_rows: int) -> Iterator[pa.Table]:
    chunk: list[str] = []
    try:
        with fs.open(root, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip() and not line.startswith("#"):
                    chunk.append(line.strip())
                    if len(chunk) == chunk_rows:
                        yield pa.table({schema.PATH: chunk})
                        chunk = []
    except UnicodeDecodeError:
        raise InvalidInput(
            f"--input_list {uri}: expected {LIST_FORMATS}; found binary data that is none of them"
        ) from None
    if chunk:
        yield pa.table({schema.PATH: chunk})


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


def write_listing(chunks: Iterator[pa.Table], folder: str) -> int:
    """Writes the chunks as Parquet files `listing-NNNNN.parquet` in the local `folder`; returns the rows."""
    rows = 0
    for number, chunk in enumerate(chunks):
        pq.write_table(chunk, os.path.join(folder, f"listing-{number:05d}.parquet"))
        rows += chunk.num_rows
    return rows


def _whole(chunks: Iterator[pa.Table]) -> pa.Table:
    """The chunks as one table sorted by path, each path once."""
    table = pa.concat_tables(list(chunks)).sort_by(schema.PATH)
    paths = table.column(schema.PATH)
    if len(paths) < 2:
        return table
    first = pc.not_equal(paths.slice(1), paths.slice(0, len(paths) - 1))
    return table.filter(pa.concat_arrays([pa.array([True]), first.combine_chunks()]))


def list_inputs(uri: str, extensions: Sequence[str], storage: Storage) -> pa.Table:
    """`iter_listing` as one table sorted by path, for callers that hold a listing whole (pre-training)."""
    return _whole(iter_listing(uri, extensions, storage))


def read_input_list(uri: str, storage: Storage) -> pa.Table:
    """`iter_input_list` as one table sorted by path, each path once."""
    return _whole(iter_input_list(uri, storage))
