"""The listing against the tables: new, changed (by ETag, else size and mtime), unchanged, failed before, removed."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import schema
from pipeline.embed.diff import DiffConfig, compare


def listing(rows: list[tuple[str, int, float | None, str]]) -> pa.Table:
    return pa.table(
        {name: list(column) for name, column in zip(schema.LISTING_SCHEMA.names, zip(*rows))},
        schema=schema.LISTING_SCHEMA,
    )


def table_side(rows: list[tuple[str, int, float | None, str | None]], retryable: list[bool] | None = None) -> pa.Table:
    """Path and identity columns, as the tables hold them (local files have no ETag: null); errors say if retryable."""
    table = listing([(p, s, m, e or None) for p, s, m, e in rows])
    return table.append_column(schema.RETRYABLE, pa.array(retryable or [False] * table.num_rows))


LISTED = listing(
    [
        ("file:///a.png", 10, 1.0, ""),  # unchanged (size and mtime)
        ("file:///b.png", 10, 2.0, ""),  # changed: newer mtime
        ("file:///c.png", 11, 1.0, ""),  # changed: other size
        ("s3://x/d.jpg", 10, 1.0, "e1"),  # unchanged: same ETag, though the mtime moved
        ("s3://x/e.jpg", 10, 1.0, "e9"),  # changed: other ETag
        ("file:///f.png", 10, 1.0, ""),  # failed before, unchanged
        ("file:///g.png", 12, 1.0, ""),  # failed before, changed
        ("file:///h.png", 10, 1.0, ""),  # new
        ("file:///i.png", 10, 1.0, ""),  # failed before, unchanged, but the store was unreachable then: tried again
    ]
)
EMBEDDINGS = table_side(
    [
        ("file:///a.png", 10, 1.0, None),
        ("file:///b.png", 10, 1.0, None),
        ("file:///c.png", 10, 1.0, None),
        ("s3://x/d.jpg", 10, 0.5, "e1"),
        ("s3://x/e.jpg", 10, 1.0, "e2"),
        ("file:///gone.png", 10, 1.0, None),
    ]
)
ERRORS = table_side(
    [
        ("file:///f.png", 10, 1.0, None),
        ("file:///g.png", 10, 1.0, None),
        ("file:///gone-too.png", 1, 1.0, None),
        ("file:///i.png", 10, 1.0, None),
    ],
    retryable=[False, False, False, True],
)


def test_every_class_of_difference(tmp_path):
    diff = compare(LISTED, EMBEDDINGS, ERRORS, str(tmp_path), first_id=100)
    assert diff.work().column(schema.PATH).to_pylist() == [
        "file:///b.png",
        "file:///c.png",
        "file:///g.png",
        "file:///h.png",
        "file:///i.png",
        "s3://x/e.jpg",
    ]
    assert sorted(diff.remove_embeddings.to_pylist()) == [
        "file:///b.png",
        "file:///c.png",
        "file:///gone.png",
        "s3://x/e.jpg",
    ]
    assert sorted(diff.remove_errors.to_pylist()) == ["file:///g.png", "file:///gone-too.png", "file:///i.png"]
    assert diff.counts == {
        "listed": 9,
        "new": 1,
        "changed": 4,
        "unchanged": 2,
        "failed_before": 2,
        "retried": 1,
        "removed": 2,
    }
    assert diff.work().column(schema.ID).to_pylist() == list(range(100, 106)) and diff.work_rows == 6  # in path order


def test_retry_errors_and_keep_missing(tmp_path):
    diff = compare(LISTED, EMBEDDINGS, ERRORS, str(tmp_path), DiffConfig(retry_errors=True, keep_missing=True))
    assert "file:///f.png" in diff.work().column(schema.PATH).to_pylist() and diff.counts["retried"] == 2
    assert sorted(diff.remove_errors.to_pylist()) == [
        "file:///f.png",
        "file:///g.png",
        "file:///i.png",
    ]  # the gone one stays
    assert "file:///gone.png" not in diff.remove_embeddings.to_pylist()


def test_a_first_run_embeds_everything_and_listing_files_work_like_a_table(tmp_path):
    first = compare(LISTED, None, None, str(tmp_path))
    assert first.work_rows == 9 and first.counts["new"] == 9 and not len(first.remove_embeddings)
    (tmp_path / "listing").mkdir()
    pq.write_table(LISTED.slice(0, 5), tmp_path / "listing" / "listing-00000.parquet")
    pq.write_table(LISTED.slice(4), tmp_path / "listing" / "listing-00001.parquet")  # one path in both: compared once
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    from_files = compare(str(tmp_path / "listing" / "*.parquet"), EMBEDDINGS, ERRORS, str(tmp_path / "a")).work()
    assert from_files.equals(compare(LISTED, EMBEDDINGS, ERRORS, str(tmp_path / "b")).work())


def test_nothing_to_do(tmp_path):
    same = table_side(
        [(p, s, m, e) for p, s, m, e in zip(*[LISTED.column(c).to_pylist() for c in LISTED.column_names])]
    )
    diff = compare(LISTED, same, None, str(tmp_path))
    assert diff.work_rows == 0 and not len(diff.remove_embeddings) and not len(diff.remove_errors)
    assert diff.counts["unchanged"] == 9
