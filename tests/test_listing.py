"""Inputs named in a file instead of listed: an inventory in Parquet (with or without identity columns) or text."""

from __future__ import annotations

import datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import schema
from pipeline.embed.listing import list_inputs, read_input_list
from pipeline.storage import Storage


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
