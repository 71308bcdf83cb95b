"""The runs/ table: each finished run's record written and read back, newest first; an output without one."""

from __future__ import annotations

import re

import pytest

from pipeline.records import append_run, finished_runs, latest_run
from pipeline.storage import Storage
from vitmae.errors import NotFound


def record(run_id: str, finished: str, version: int) -> dict:
    return {
        "run_id": run_id,
        "started": "2026-01-01T00:00:00+00:00",
        "finished": finished,
        "versions": {"embeddings": version},
        "counts": {"embedded": version * 10},
        "model": "m",
    }


def test_records_read_back_whole_and_newest_first(tmp_path):
    output = str(tmp_path / "out")
    old, middle, new = (
        record(run_id, f"2026-01-0{day}T00:00:00+00:00", day) for run_id, day in (("a", 2), ("b", 3), ("c", 4))
    )
    for run in (middle, old, new):  # the finish time orders them, not the order they were appended in
        append_run(output, Storage(), run)
    assert finished_runs(output, Storage()) == [new, middle, old]
    assert latest_run(output, Storage()) == new


def test_an_output_without_a_finished_run(tmp_path):
    output = str(tmp_path / "empty")
    assert finished_runs(output, Storage()) == []
    with pytest.raises(NotFound, match=f"^{re.escape(output)} holds no finished run of the embedding job"):
        latest_run(output, Storage())
