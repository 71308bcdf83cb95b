"""Listing the inputs: globs walked like prefixes; inputs named in a file: S3 Inventory reports, Parquet or text."""

from __future__ import annotations

import datetime
import gzip
import hashlib
import json
import urllib.parse
import uuid
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.orc
import pyarrow.parquet as pq
import pytest
from conftest import s3_storage

import pipeline.embed.listing
from pipeline import schema
from pipeline.embed.listing import iter_input_list, iter_listing, list_inputs, read_input_list
from pipeline.embed.run import EmbedConfig, run
from pipeline.storage import Storage, StorageConfig
from pipeline.tables import dataset, open_table
from vitmae.errors import InvalidInput, NotFound

# A tree for globs: names with spaces and non-ASCII letters, files at three depths, folders sharing a name's start.
TREE = (
    "a.jpg",
    "b.png",
    "x1.jpg",
    "x2.jpg",
    "x10.jpg",
    "sub/c.jpg",
    "sub/deep/d.jpg",
    "sub/deep/e.png",
    "sub2/e1.jpg",
    "sub2/e2.jpg",
    "sub2/e3.jpg",
    "other-x/f.jpg",
    "space name/ü ö.jpg",
    "notes.txt",
)
# Each after the tree's folder; the last also matches a sibling folder sharing the start of its name.
PATTERNS = (
    "/*.jpg",
    "/**/*.jpg",
    "/**",
    "/sub*/*.jpg",
    "/sub2/e[12].jpg",
    "/sub2/e[!1].jpg",
    "/x?.jpg",
    "/s*/**/d.jpg",
    "/sub/**",
    "/[ao]*/*",
    "/space name/*",
    "/*/*/*.png",
    "*/a.jpg",
)


def test_a_text_list_is_looked_up_and_matches_the_listing(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("b.png", "a.png"):
        (folder / name).write_bytes(b"x" * 10)
    (tmp_path / "list.txt").write_text(
        f"# inputs\n{folder / 'b.png'}\n\nfile://{folder / 'a.png'}\n{folder / 'b.png'}\n"
    )
    listed = read_input_list(str(tmp_path / "list.txt"), Storage())
    assert listed.equals(list_inputs(str(folder), ("png",), Storage()))  # same paths, sizes and mtimes, each once
    (tmp_path / "missing.txt").write_text(f"{folder / 'gone.png'}\n")
    gone = read_input_list(str(tmp_path / "missing.txt"), Storage()).to_pylist()
    assert gone == [{schema.PATH: f"file://{folder / 'gone.png'}", schema.SIZE: 0, schema.MTIME: None, schema.ETAG: ""}]


def test_an_inventory_gives_the_identity_without_a_lookup(tmp_path):
    when = datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc)
    pq.write_table(
        pa.table(
            {
                "path": ["s3://b/k2.jpg", "s3://b/k1.jpg"],
                "size": [5, 7],
                "last_modified": [when, when],
                "e_tag": ["e2", "e1"],
            }
        ),
        tmp_path / "inventory.parquet",
    )
    listed = read_input_list(str(tmp_path / "inventory.parquet"), Storage()).to_pylist()
    assert listed == [
        {schema.PATH: "s3://b/k1.jpg", schema.SIZE: 7, schema.MTIME: when.timestamp(), schema.ETAG: "e1"},
        {schema.PATH: "s3://b/k2.jpg", schema.SIZE: 5, schema.MTIME: when.timestamp(), schema.ETAG: "e2"},
    ]


def test_bad_lists_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_input_list(str(tmp_path / "none.txt"), Storage())
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(ValueError, match="lists no inputs"):
        read_input_list(str(tmp_path / "empty.txt"), Storage())
    pq.write_table(pa.table({"key": ["a"]}), tmp_path / "wrong.parquet")
    with pytest.raises(
        ValueError, match="expected a 'path' column, or an S3 Inventory's 'bucket' and 'key', found key"
    ):
        read_input_list(str(tmp_path / "wrong.parquet"), Storage())


def glob_against_fsspec(base: str, storage: Storage, monkeypatch) -> None:
    """Every pattern after `base` lists the files fsspec's glob matches, and fs.glob is never called."""
    fs, _ = fsspec.core.url_to_fs(base, **storage.options(base))
    expected = {}
    for pattern in PATTERNS:
        found = fs.glob(base + pattern, detail=True)
        expected[pattern] = sorted(
            fs.unstrip_protocol(p) for p, info in found.items() if info["type"] == "file" and not p.endswith(".txt")
        )
        assert expected[pattern], pattern

    def refused(*args, **kwargs):
        raise AssertionError("fs.glob holds every match at once")

    monkeypatch.setattr(fs, "glob", refused)  # the instance the listing gets, as fsspec caches them
    for pattern, paths in expected.items():
        listed = list_inputs(base + pattern, ("jpg", "png"), storage)
        assert listed.column(schema.PATH).to_pylist() == paths, pattern
        assert all(size == 3 for size in listed.column(schema.SIZE).to_pylist())


def test_a_glob_matches_what_fsspec_matches_on_a_local_tree(tmp_path, monkeypatch):
    for name in (*(f"glob/{name}" for name in TREE), "globbed-not/a.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"abc")
    glob_against_fsspec(str(tmp_path / "glob"), Storage(), monkeypatch)


def test_a_glob_matches_what_fsspec_matches_on_s3(s3, monkeypatch):
    fs = fsspec.filesystem("s3", **s3.storage_options())
    fs.pipe({f"test/listing/glob/{name}": b"abc" for name in TREE})
    fs.pipe("test/listing/globbed-not/a.jpg", b"abc")
    glob_against_fsspec("s3://test/listing/glob", s3_storage(s3), monkeypatch)


def test_an_s3_prefix_is_listed_a_page_at_a_time(s3, monkeypatch):
    """The first chunk comes after the first page of keys: no request lists the whole prefix, and no page is held
    beyond its chunk."""
    uri = f"s3://test/listing/{uuid.uuid4().hex}/"
    fsspec.filesystem("s3", **s3.storage_options()).pipe({f"{uri}{i:02d}.jpg": b"abc" for i in range(7)})
    storage = s3_storage(s3)
    fs, _ = fsspec.core.url_to_fs(uri, **storage.options(uri))  # the instance the listing gets, as fsspec caches them
    pages, call_s3 = [], fs.call_s3

    def counted(method: str, **kwargs):
        answer = call_s3(method, **kwargs)
        pages.append(len(answer.get("Contents", ())))
        return answer

    monkeypatch.setattr(fs, "call_s3", counted)
    monkeypatch.setattr(pipeline.embed.listing, "S3_PAGE_KEYS", 2)
    chunks = iter_listing(uri, ("jpg",), storage, chunk_rows=2)
    assert len(next(chunks)) == 2 and pages == [2]
    assert [len(chunk) for chunk in chunks] == [2, 2, 1] and pages == [2, 2, 2, 1]
    listed = list_inputs(uri, ("jpg",), storage)
    assert listed.column(schema.PATH).to_pylist() == [f"{uri}{i:02d}.jpg" for i in range(7)]
    assert listed.column(schema.SIZE).to_pylist() == [3] * 7
    assert all(listed.column(schema.MTIME).to_pylist()) and all(listed.column(schema.ETAG).to_pylist())


def test_a_glob_is_walked_in_chunks_and_bad_globs_are_one_line_errors(tmp_path):
    for i in range(25):
        (tmp_path / f"{i:02d}.jpg").write_bytes(b"x")
    chunks = list(iter_listing(f"{tmp_path}/1*.jpg", ("jpg",), Storage(), chunk_rows=4))
    assert [len(chunk) for chunk in chunks] == [4, 4, 2]
    with pytest.raises(ValueError, match="no files found there"):
        list_inputs(f"{tmp_path}/9*.jpg", ("jpg",), Storage())
    with pytest.raises(ValueError, match="'\\*\\*' can only be an entire path component"):
        list_inputs(f"{tmp_path}/a**/x.jpg", ("jpg",), Storage())
    with pytest.raises(ValueError, match="wildcard in the bucket's name"):
        list_inputs("s3://buck*/photos/", ("jpg",), Storage())


def utc(*args: int) -> datetime.datetime:
    return datetime.datetime(*args, tzinfo=datetime.timezone.utc)


# An S3 Inventory report of the versioned bucket photos-src in AWS's fields and order, in two data files: keys with
# spaces, a '+' and non-ASCII letters, a version that is not the latest, and a deleted object (its delete marker and
# the version before it).
FIELDS = (
    "Bucket",
    "Key",
    "VersionId",
    "IsLatest",
    "IsDeleteMarker",
    "Size",
    "LastModifiedDate",
    "ETag",
    "StorageClass",
)
REPORT = (
    (
        ("photos-src", "a.jpg", "v1", True, False, 10, utc(2026, 11, 1, 12, 0, 0, 123000), "etag-a", "STANDARD"),
        (
            "photos-src",
            "dir/with space/ü + plus.jpg",
            "v2",
            True,
            False,
            11,
            utc(2026, 11, 1, 13),
            "etag-u",
            "STANDARD",
        ),
        ("photos-src", "old.jpg", "v3", True, False, 12, utc(2026, 11, 1, 14), "etag-new", "STANDARD_IA"),
    ),
    (
        ("photos-src", "old.jpg", "v0", False, False, 99, utc(2026, 10, 1), "etag-old", "STANDARD"),
        ("photos-src", "deleted.jpg", "v5", True, True, None, utc(2026, 11, 1, 15), None, None),
        ("photos-src", "deleted.jpg", "v4", False, False, 13, utc(2026, 10, 2), "etag-d", "STANDARD"),
        ("photos-src", "b.png", "v6", True, False, 14, utc(2026, 11, 1, 16), "etag-b", "GLACIER_IR"),
    ),
)
LISTED = [  # what the report lists, by path
    ("s3://photos-src/a.jpg", 10, utc(2026, 11, 1, 12, 0, 0, 123000), "etag-a"),
    ("s3://photos-src/b.png", 14, utc(2026, 11, 1, 16), "etag-b"),
    ("s3://photos-src/dir/with space/ü + plus.jpg", 11, utc(2026, 11, 1, 13), "etag-u"),
    ("s3://photos-src/old.jpg", 12, utc(2026, 11, 1, 14), "etag-new"),
]
FILE_SCHEMAS = {  # the fileSchema AWS writes for ORC and Parquet reports (those files name their own columns)
    "ORC": "struct<bucket:string,key:string,version_id:string,is_latest:boolean,is_delete_marker:boolean,size:bigint,"
    "last_modified_date:timestamp,e_tag:string,storage_class:string>",
    "Parquet": "message s3.inventory { required binary bucket (UTF8); required binary key (UTF8); optional binary "
    "version_id (UTF8); optional boolean is_latest; optional boolean is_delete_marker; optional int64 size; "
    "optional int64 last_modified_date (TIMESTAMP_MILLIS); optional binary e_tag (UTF8); optional binary "
    "storage_class (UTF8);}",
}


def listing_rows(listed: list[tuple]) -> list[dict]:
    return [
        {schema.PATH: p, schema.SIZE: size, schema.MTIME: when.timestamp(), schema.ETAG: etag}
        for p, size, when, etag in listed
    ]


def csv_bytes(rows: tuple[tuple, ...]) -> bytes:
    """Rows as AWS writes a CSV report: no header, every field quoted, keys URL-encoded, empty where unknown."""

    def field(value) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, datetime.datetime):
            return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
        return "" if value is None else str(value)

    lines = [
        ",".join(f'"{urllib.parse.quote_plus(field(v)) if i == 1 else field(v)}"' for i, v in enumerate(row))
        for row in rows
    ]
    return "".join(f"{line}\n" for line in lines).encode()


def report_table(rows: tuple[tuple, ...]) -> pa.Table:
    """Rows as ORC and Parquet reports hold them: snake_case columns, typed."""
    columns = list(zip(*rows))
    types = (
        pa.string(),
        pa.string(),
        pa.string(),
        pa.bool_(),
        pa.bool_(),
        pa.int64(),
        pa.timestamp("ms", tz="UTC"),
        pa.string(),
        pa.string(),
    )
    names = (
        "bucket",
        "key",
        "version_id",
        "is_latest",
        "is_delete_marker",
        "size",
        "last_modified_date",
        "e_tag",
        "storage_class",
    )
    return pa.table({name: pa.array(values, kind) for name, values, kind in zip(names, columns, types)})


def write_report(bucket: Path, prefix: str, file_format: str, report: tuple[tuple[tuple, ...], ...] = REPORT) -> Path:
    """A report (REPORT unless given: data files of rows of FIELDS) as AWS lays it out in the folder `bucket` (a copy
    of the destination bucket 'test'), keys under `prefix`; returns the manifest's path."""
    files = []
    for rows in report:
        key = (
            f"{prefix}photos-src/config-1/data/{uuid.uuid4()}."
            + {"CSV": "csv.gz", "ORC": "orc", "Parquet": "parquet"}[file_format]
        )
        path = bucket / key
        path.parent.mkdir(parents=True, exist_ok=True)
        if file_format == "CSV":
            path.write_bytes(gzip.compress(csv_bytes(rows)))
        elif file_format == "ORC":
            pyarrow.orc.write_table(report_table(rows), path)
        else:
            pq.write_table(report_table(rows), path)
        files.append(
            {"key": key, "size": path.stat().st_size, "MD5checksum": hashlib.md5(path.read_bytes()).hexdigest()}
        )
    manifest = bucket / f"{prefix}photos-src/config-1/2026-11-02T01-00Z/manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(
        json.dumps(
            {
                "sourceBucket": "photos-src",
                "destinationBucket": "arn:aws:s3:::test",
                "version": "2016-11-30",
                "creationTimestamp": "1793581200000",
                "fileFormat": file_format,
                "fileSchema": ", ".join(FIELDS) if file_format == "CSV" else FILE_SCHEMAS[file_format],
                "files": files,
            },
            indent=4,
        )
    )
    return manifest


@pytest.mark.parametrize("file_format", ["CSV", "ORC", "Parquet"])
def test_an_inventory_report_is_read_from_its_manifest(tmp_path, file_format):
    manifest = write_report(tmp_path / "test", "inventories/", file_format)
    assert read_input_list(str(manifest), Storage()).to_pylist() == listing_rows(LISTED)
    chunks = list(iter_input_list(str(manifest), Storage(), chunk_rows=2))
    assert [len(chunk) for chunk in chunks] == [2, 1, 1]  # a chunk at most; the second file's rows less those left out
    assert all(chunk.schema == schema.LISTING_SCHEMA for chunk in chunks)


@pytest.mark.parametrize("file_format", ["CSV", "ORC", "Parquet"])
def test_an_inventory_report_is_read_from_s3(s3, tmp_path, file_format):
    write_report(tmp_path / "test", f"listing/inventory-{file_format}/", file_format)
    fs = fsspec.filesystem("s3", **s3.storage_options())
    fs.put(str(tmp_path / "test" / "listing"), "test/", recursive=True)
    manifest = f"s3://test/listing/inventory-{file_format}/photos-src/config-1/2026-11-02T01-00Z/manifest.json"
    assert fs.exists(manifest)
    assert read_input_list(manifest, s3_storage(s3)).to_pylist() == listing_rows(LISTED)


@pytest.mark.parametrize("file_format", ["ORC", "Parquet"])
def test_an_orc_or_parquet_data_file_is_read_alone(tmp_path, file_format):
    manifest = write_report(tmp_path / "test", "", file_format)
    second = json.loads(manifest.read_text())["files"][1]["key"]
    listed = read_input_list(str(tmp_path / "test" / second), Storage()).to_pylist()
    assert listed == listing_rows([LISTED[1]])


def test_a_csv_data_file_alone_is_read_as_bucket_key_size_time_etag(tmp_path):
    rows = tuple((b, k, size, when, etag, storage) for b, k, _, _, _, size, when, etag, storage in REPORT[0])
    (tmp_path / "plain.csv").write_bytes(csv_bytes(rows))
    (tmp_path / "part.csv.gz").write_bytes(gzip.compress(csv_bytes(rows)))
    for name in ("plain.csv", "part.csv.gz"):
        assert read_input_list(str(tmp_path / name), Storage()).to_pylist() == listing_rows(
            [LISTED[0], LISTED[2], LISTED[3]]
        )
    (tmp_path / "versioned.csv.gz").write_bytes(gzip.compress(csv_bytes(REPORT[0])))  # VersionId where Size is read
    with pytest.raises(
        ValueError,
        match="versioned.csv.gz: not an S3 Inventory CSV file, read as Bucket, Key, Size, "
        "LastModifiedDate, ETag; give its manifest.json instead",
    ):
        read_input_list(str(tmp_path / "versioned.csv.gz"), Storage())


def test_what_is_not_an_inventory_or_a_list_is_a_one_line_error(tmp_path):
    def fails(path: Path, error: type, message: str) -> None:
        with pytest.raises(error, match=message):
            read_input_list(str(path), Storage())

    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)))
    fails(
        tmp_path / "photo.jpg",
        InvalidInput,
        "expected an S3 Inventory report \\(its manifest.json, or a CSV, ORC or "
        "Parquet data file\\), Parquet with a 'path' column, or text with one URI a line; found binary data",
    )
    (tmp_path / "broken.parquet").write_bytes(b"PAR1" + bytes(100))
    fails(tmp_path / "broken.parquet", InvalidInput, "broken.parquet: not a Parquet file")
    pyarrow.orc.write_table(pa.table({"name": ["a"]}), tmp_path / "other.orc")
    fails(
        tmp_path / "other.orc",
        InvalidInput,
        "other.orc: expected an S3 Inventory's 'bucket' and 'key' columns, found name",
    )
    (tmp_path / "other.json").write_text('{"sourceBucket": "photos-src"}')
    fails(
        tmp_path / "other.json",
        InvalidInput,
        "expected an S3 Inventory manifest with destinationBucket, fileFormat, fileSchema, files; found sourceBucket",
    )

    manifest = write_report(tmp_path / "test", "", "CSV")
    fields = json.loads(manifest.read_text())
    manifest.write_text(json.dumps(fields | {"fileFormat": "JSON"}))
    fails(manifest, InvalidInput, "fileFormat 'JSON', expected one of CSV, ORC, Parquet")
    manifest.write_text(json.dumps(fields | {"fileSchema": "Bucket, Key, Size"}))
    fails(
        manifest,
        InvalidInput,
        r"manifest.json: its data file file://.*\.csv\.gz: 9 columns, its manifest's fileSchema names 3",
    )
    moved = tmp_path / "elsewhere" / "manifest.json"
    moved.parent.mkdir()
    moved.write_text(json.dumps(fields))
    fails(
        moved,
        InvalidInput,
        "its data files are keys in the bucket test; a manifest on a local disk must lie in a "
        "copy of that bucket, a folder named test above it",
    )
    (tmp_path / "test" / fields["files"][0]["key"]).unlink()
    manifest.write_text(json.dumps(fields))
    fails(manifest, NotFound, f"its data file file://{tmp_path}/test/{fields['files'][0]['key']} does not exist")


@pytest.mark.slow  # a run over an S3 Inventory: ~25 s
def test_a_run_embeds_the_objects_an_inventory_lists(ray_cluster, s3, model_dir, photo_paths, tmp_path, monkeypatch):
    fs = fsspec.filesystem("s3", **s3.storage_options())
    keys = {"listing/run/a photo.png": photo_paths[0], "listing/run/ü+1.jpg": photo_paths[3]}
    fs.pipe({f"test/{key}": path.read_bytes() for key, path in keys.items()})
    infos = {key: fs.info(f"test/{key}") for key in keys}
    rows = tuple(
        ("test", key, "v1", True, False, info["size"], info["LastModified"], info["ETag"].strip('"'), "STANDARD")
        for key, info in infos.items()
    )
    deleted = (("test", "listing/run/gone.jpg", "v2", True, True, None, utc(2026, 11, 1), None, None),)
    manifest = write_report(tmp_path / "test", "", "CSV", (rows, deleted))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    record = run(
        EmbedConfig(
            input=None,
            input_list=str(manifest),
            output=str(tmp_path / "out"),
            model=str(model_dir),
            storage=StorageConfig(s3.endpoint_url),
            build_index=False,
            num_gpus=0,
        )
    )
    assert (record["counts"]["listed"], record["counts"]["embedded"], record["counts"]["failed"]) == (2, 2, 0)
    table = open_table(str(tmp_path / "out" / "embeddings"), Storage())
    embedded = dataset(table, str(tmp_path / "out" / "embeddings"), Storage()).to_table().to_pylist()
    assert sorted((r[schema.PATH], r[schema.ETAG]) for r in embedded) == sorted(
        (f"s3://test/{key}", info["ETag"].strip('"')) for key, info in infos.items()
    )
