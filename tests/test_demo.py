"""`make demo` end to end: what it prints and writes says what its README line promises (a small MAE learns, the
planted photographs lead the anomalies, the non-image is an error row)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from deltalake import DeltaTable

from pipeline.demo import NOT_AN_IMAGE, OUTLIERS

pytestmark = pytest.mark.slow  # the whole demo: pre-training, embedding, index, rankings


def test_the_demo_learns_and_finds_the_planted_photographs(demo):
    report = json.loads((demo / "demo.json").read_text())
    before, after = report["before"], report["after"]
    assert after["loss"] < before["loss"] / 4, (before, after)
    assert after["precision_at_k"] > before["precision_at_k"] + 0.1, (before, after)
    assert report["planted_in_top"] >= len(OUTLIERS) - 2, report["anomalies"]
    assert set(report["pngs"]) == {"reconstructions", "search", "anomalies"}
    assert all(Path(png).stat().st_size > 10_000 for png in report["pngs"].values()), report["pngs"]
    errors = DeltaTable(str(demo / "run" / "errors")).to_pyarrow_table(columns=["path"]).column("path").to_pylist()
    assert [path.rsplit("/", 1)[-1] for path in errors] == [NOT_AN_IMAGE]
    printed = (demo / "demo.out").read_text()
    assert f"{report['planted_in_top']} of the top {len(OUTLIERS)} are the planted photographs" in printed
