"""S3 Inventory reports as input lists: a report's manifest.json and its data files, or one data file alone, read
one at a time into the listing's path and identity columns (docs/design.md, "S3 Inventory").
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from pipeline import schema
from vitmae.errors import InvalidInput, NotFound

logger = logging.getLogger(__name__)

# The columns read, as ORC and Parquet reports name them; a manifest's fileSchema names a CSV report's columns in
# AWS's CamelCase field names (Bucket, Key, LastModifiedDate, ETag), which `column_name` turns into these.
BUCKET = "bucket"
KEY = "key"
SIZE = "size"
LAST_MODIFIED = "last_modified_date"
ETAG = "e_tag"
IS_LATEST = "is_latest"
IS_DELETE_MARKER = "is_delete_marker"
COLUMNS = (BUCKET, KEY, SIZE, LAST_MODIFIED, ETAG, IS_LATEST, IS_DELETE_MARKER)
# A CSV data file read without its manifest is taken to start with these fields, in this order: a report without
# versions that has size, last modification and ETag, as AWS orders its fields. Further columns are not read.
CSV_FIELDS = ("Bucket", "Key", "Size", "LastModifiedDate", "ETag")
FORMATS = ("CSV", "ORC", "Parquet")  # a manifest's fileFormat
ARN_PREFIX = "arn:aws:s3:::"  # a manifest names its destination bucket by ARN
GZIP_MAGIC = b"\x1f\x8b"
CSV_BLOCK_BYTES = 1 << 20  # bytes of a CSV file parsed at once
_CSV_MOST_COLUMNS = 100  # AWS has 20-odd fields; all are read as text


def column_name(field: str) -> str:
    """A report's field as ORC and Parquet reports name it: 'LastModifiedDate' -> 'last_modified_date'."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", field.strip()).lower()


@dataclass(frozen=True)
class Manifest:
    """What a report's manifest.json says (AWS's field names in the comments)."""

    destination_bucket: str  # destinationBucket, the bucket's name out of its ARN: where the data files are
    file_format: str  # fileFormat: CSV, ORC or Parquet
    columns: tuple[
        str, ...
    ]  # a CSV report's fileSchema as column names, in order; () for ORC and Parquet (files name theirs)
    files: tuple[str, ...]  # files[].key: the data files, keys in the destination bucket

    @classmethod
    def from_json(cls, text: str, uri: str) -> Manifest:
        try:
            fields = json.loads(text)
        except json.JSONDecodeError as err:
            raise InvalidInput(
                f"--input_list {uri}: expected an S3 Inventory manifest.json, found text that is not JSON ({err})"
            ) from None
        expected = ("destinationBucket", "fileFormat", "fileSchema", "files")
        if not isinstance(fields, dict) or not all(name in fields for name in expected):
            found = ", ".join(fields) if isinstance(fields, dict) else type(fields).__name__
            raise InvalidInput(
                f"--input_list {uri}: expected an S3 Inventory manifest with {', '.join(expected)}; found {found}"
            )
        file_format = next((f for f in FORMATS if f.lower() == str(fields["fileFormat"]).lower()), None)
        if file_format is None:
            raise InvalidInput(
                f"--input_list {uri}: fileFormat {fields['fileFormat']!r}, expected one of {', '.join(FORMATS)}"
            )
        columns = tuple(column_name(f) for f in str(fields["fileSchema"]).split(",")) if file_format == "CSV" else ()
        try:
            files = tuple(str(f["key"]) for f in fields["files"])
        except (TypeError, KeyError):
            raise InvalidInput(
                f'--input_list {uri}: expected files as a list of {{"key": ...}}, found {fields["files"]!r:.200}'
            ) from None
        return cls(
            destination_bucket=str(fields["destinationBucket"]).removeprefix(ARN_PREFIX),
            file_format=file_format,
            columns=columns,
            files=files,
        )


def iter_manifest(fs: fsspec.AbstractFileSystem, root: str, uri: str, chunk_rows: int) -> Iterator[pa.Table]:
    """The listing rows of every data file of the manifest at `root` in `fs`, one file at a time (see `iter_data_file`).

    The data files are keys in the destination bucket of the manifest's own store, read with its storage options: in
    S3, `s3://DESTINATION/KEY`; on a local disk (a copy of the bucket), `KEY` under the manifest's nearest enclosing
    folder named like the destination bucket.
    """
    with fs.open(root, "rt", encoding="utf-8") as f:
        manifest = Manifest.from_json(f.read(), uri)
    bucket = _bucket_root(fs, root, manifest.destination_bucket, uri)
    logger.info("reading %d %s data files of the inventory %s", len(manifest.files), manifest.file_format, uri)
    for key in manifest.files:
        path = f"{bucket}/{key}"
        if not fs.isfile(path):
            raise NotFound(
                f"--input_list {uri}: its data file {fs.unstrip_protocol(path)} does not exist; expected the "
                f"report as AWS writes it, its data files keys in the bucket {manifest.destination_bucket}"
            )
        yield from iter_data_file(
            fs,
            path,
            manifest.file_format,
            chunk_rows,
            f"--input_list {uri}: its data file {fs.unstrip_protocol(path)}",
            manifest.columns,
        )


def _bucket_root(fs: fsspec.AbstractFileSystem, manifest: str, bucket: str, uri: str) -> str:
    """The path in `fs` under which the keys of `bucket` lie, for the manifest at path `manifest`."""
    if not isinstance(fs, LocalFileSystem):
        return bucket
    parts = manifest.split("/")
    for end in range(len(parts) - 1, 0, -1):
        if parts[end - 1] == bucket:
            return "/".join(parts[:end])
    raise InvalidInput(
        f"--input_list {uri}: its data files are keys in the bucket {bucket}; a manifest on a local disk "
        f"must lie in a copy of that bucket, a folder named {bucket} above it"
    )


def iter_data_file(
    fs: fsspec.AbstractFileSystem,
    path: str,
    file_format: str,
    chunk_rows: int,
    where: str,
    csv_columns: tuple[str, ...] = (),
) -> Iterator[pa.Table]:
    """The listing rows of one data file at `path` in `fs`, as tables of at most `chunk_rows` rows with the column
    `schema.PATH` and, where the report has a size, the identity columns (`identity_columns`). `where` starts the
    errors' messages ('--input_list URI').

    Delete markers and versions that are not the latest are left out. A CSV file's columns are `csv_columns` (from
    its manifest) or else `CSV_FIELDS`, and its keys are URL-decoded.
    """
    alone = file_format == "CSV" and not csv_columns
    if alone:
        logger.info(
            "reading %s as an S3 Inventory CSV file without its manifest: its first columns taken as %s",
            fs.unstrip_protocol(path),
            ", ".join(CSV_FIELDS),
        )
    try:
        with fs.open(path, "rb") as f:
            for batch in _batches(f, file_format, chunk_rows, csv_columns, where):
                for start in range(0, batch.num_rows, chunk_rows):
                    rows = _listing_rows(pa.Table.from_batches([batch.slice(start, chunk_rows)]), file_format == "CSV")
                    if rows.num_rows:
                        yield rows
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        assumed = f", read as {', '.join(CSV_FIELDS)}; give its manifest.json instead" if alone else ""
        raise InvalidInput(
            f"{where}: not an S3 Inventory {file_format} file{assumed} ({str(err).splitlines()[0]})"
        ) from None


def _batches(
    f: IO[bytes], file_format: str, chunk_rows: int, csv_columns: tuple[str, ...], where: str
) -> Iterator[pa.RecordBatch]:
    """The rows of an opened data file with the columns of `COLUMNS` it has (CSV's as text); `where` starts errors."""
    if file_format == "Parquet":
        parquet = pq.ParquetFile(f)
        yield from parquet.iter_batches(
            batch_size=chunk_rows, columns=_columns_present(parquet.schema_arrow.names, where)
        )
    elif file_format == "ORC":
        import pyarrow.orc  # not every pyarrow build has ORC; only ORC reports need it

        orc = pyarrow.orc.ORCFile(f)
        columns = _columns_present(orc.schema.names, where)
        for stripe in range(orc.nstripes):
            yield orc.read_stripe(stripe, columns=columns)
    else:
        yield from _csv_batches(f, csv_columns, where)


def _columns_present(names: list[str], where: str) -> list[str]:
    """The columns of `COLUMNS` among a file's `names`; `bucket` and `key` must be."""
    present = [name for name in COLUMNS if name in names]
    if BUCKET not in present or KEY not in present:
        raise InvalidInput(
            f"{where}: expected an S3 Inventory's '{BUCKET}' and '{KEY}' columns, found {', '.join(names)}"
        )
    return present


def _csv_batches(raw: IO[bytes], columns: tuple[str, ...], where: str) -> Iterator[pa.RecordBatch]:
    magic = raw.read(2)
    raw.seek(0)
    stream: IO[bytes] = gzip.GzipFile(fileobj=raw) if magic == GZIP_MAGIC else raw
    if not stream.read(1):  # a report's empty part
        return
    stream.seek(0)
    reader = pa_csv.open_csv(  # every column as text: keys such as '007' stay as written
        stream,
        read_options=pa_csv.ReadOptions(autogenerate_column_names=True, block_size=CSV_BLOCK_BYTES),
        convert_options=pa_csv.ConvertOptions(
            column_types={f"f{i}": pa.string() for i in range(_CSV_MOST_COLUMNS)},
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )
    count = len(reader.schema)
    if columns and count != len(columns):
        raise InvalidInput(f"{where}: {count} columns, its manifest's fileSchema names {len(columns)}")
    names = list(columns or (column_name(f) for f in CSV_FIELDS[:count]))
    names += [f"unread_{i}" for i in range(len(names), count)]
    wanted = _columns_present(names, where)
    for batch in reader:
        yield batch.rename_columns(names).select(wanted)


def _listing_rows(table: pa.Table, url_encoded: bool) -> pa.Table:
    """A batch of report rows as listing rows: the objects that exist now (no delete markers, latest versions)."""
    keep = pa.array([True] * table.num_rows)
    if IS_DELETE_MARKER in table.column_names:
        keep = pc.and_(keep, pc.invert(_flag(table.column(IS_DELETE_MARKER), default=False)))
    if IS_LATEST in table.column_names:
        keep = pc.and_(keep, _flag(table.column(IS_LATEST), default=True))
    table = table.filter(keep)
    keys = table.column(KEY).to_pylist()
    if url_encoded:
        keys = [urllib.parse.unquote_plus(key) for key in keys]  # as AWS encodes them: a space as '+', '+' as '%2B'
    paths = [f"s3://{bucket}/{key}" for bucket, key in zip(table.column(BUCKET).to_pylist(), keys)]
    if SIZE not in table.column_names:
        return pa.table({schema.PATH: pa.array(paths, pa.string())})
    optional = {name: table.column(name) if name in table.column_names else None for name in (LAST_MODIFIED, ETAG)}
    return pa.table(
        {
            schema.PATH: pa.array(paths, pa.string()),
            **identity_columns(table.column(SIZE), optional[LAST_MODIFIED], optional[ETAG]),
        }
    )


def _flag(column: pa.ChunkedArray, default: bool) -> pa.ChunkedArray:
    """A boolean column ('true' and 'false' in CSV reports), nulls as `default`."""
    if pa.types.is_string(column.type):
        column = pc.equal(pc.utf8_lower(column), "true")
    return column.cast(pa.bool_()).fill_null(default)


def identity_columns(
    size: pa.ChunkedArray, mtime: pa.ChunkedArray | None, etag: pa.ChunkedArray | None
) -> dict[str, pa.ChunkedArray]:
    """The listing's identity columns (`schema.IDENTITY`) from an inventory's size, last modification and ETag (None
    where it has none): sizes as integers (null as 0), times (timestamps, ISO 8601 text or seconds) as seconds since
    the epoch (null where unknown), ETags unquoted ("" where unknown).

    Raises:
        pyarrow.ArrowInvalid: a value that is not a size or a time.
    """
    unknown = pa.chunked_array([pa.nulls(len(size), pa.float64())])
    etags = pc.utf8_trim(etag.cast(pa.string()), '"') if etag is not None else unknown.cast(pa.string())
    return {
        schema.SIZE: size.cast(pa.int64()).fill_null(0),
        schema.MTIME: _seconds(mtime) if mtime is not None else unknown,
        schema.ETAG: etags.fill_null(""),
    }


def _seconds(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_string(column.type):
        column = column.cast(pa.timestamp("us", tz="UTC"))
    if pa.types.is_timestamp(column.type):  # microseconds (below 2**53, exact as floats) as datetime.timestamp() gives
        micros = column.cast(pa.timestamp("us", tz=column.type.tz), safe=False).cast(pa.int64())
        return pc.divide(micros.cast(pa.float64()), 1e6)
    return column.cast(pa.float64())
