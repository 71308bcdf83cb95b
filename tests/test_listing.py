"""Listing the inputs: globs walked like prefixes; inputs named in a file: S3 Inventory reports, Parquet or text."""

from __future__ import annotations

import datetime

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import schema
from pipeline.embed.listing import iter_listing, list_inputs, read_input_list
from pipeline.storage import Storage
from conftest import s3_storage

# A tree for globs: names with spaces and non-ASCII letters, files at three depths, folders sharing a name's start.
TREE = ("a.jpg", "b.png", "x1.jpg", "x2.jpg", "x10.jpg", "sub/c.jpg", "sub/deep/d.jpg", "sub/deep/e.png", "sub2/e1.jpg",
        "sub2/e2.jpg", "sub2/e3.jpg", "other-x/f.jpg", "space name/ü ö.jpg", "notes.txt")
# Each after the tree's folder; the last also matches a sibling folder sharing the start of its name.
PATTERNS = ("/*.jpg", "/**/*.jpg", "/**", "/sub*/*.jpg", "/sub2/e[12].jpg", "/sub2/e[!1].jpg", "/x?.jpg", "/s*/**/d.jpg",
            "/sub/**", "/[ao]*/*", "/space name/*", "/*/*/*.png", "*/a.jpg")


def test_a_text_list_is_looked_up_and_matches_the_listing(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("b.png", "a.png"):
        (folder / name).write_bytes(b"x" * 10)
    (tmp_path / "list.txt").write_text(f"# inputs\n{folder / 'b.png'}\n\nfile://{folder / 'a.png'}\n{folder / 'b.png'}\n")
    listed = read_input_list(str(tmp_path / "list.txt"), Storage())
    assert listed.equals(list_inputs(str(folder), ("png",), Storage()))  # same paths, sizes and mtimes, each once
    (tmp_path / "missing.txt").write_text(f"{folder / 'gone.png'}\n")
    gone = read_input_list(str(tmp_path / "missing.txt"), Storage()).to_pylist()
    assert gone == [{schema.PATH: f"file://{folder / 'gone.png'}", schema.SIZE: 0, schema.MTIME: None, schema.ETAG: ""}]


def test_an_inventory_gives_the_identity_without_a_lookup(tmp_path):
    when = datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc)
    pq.write_table(pa.table({"path": ["s3://b/k2.jpg", "s3://b/k1.jpg"], "size": [5, 7], "last_modified": [when, when],
                             "e_tag": ["e2", "e1"]}), tmp_path / "inventory.parquet")
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
    with pytest.raises(ValueError, match="expected a 'path' column, found key"):
        read_input_list(str(tmp_path / "wrong.parquet"), Storage())


def glob_against_fsspec(base: str, storage: Storage, monkeypatch) -> None:
    """Every pattern after `base` lists the files fsspec's glob matches, and fs.glob is never called."""
    fs, _ = fsspec.core.url_to_fs(base, **storage.options(base))
    expected = {}
    for pattern in PATTERNS:
        found = fs.glob(base + pattern, detail=True)
        expected[pattern] = sorted(fs.unstrip_protocol(p) for p, info in found.items() if info["type"] == "file" and not p.endswith(".txt"))
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
