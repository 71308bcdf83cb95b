"""The anomaly and duplicate pages of the service (pipeline.service.rankings) on the gallery run: every ranking the
command line writes, ranked anew when its file is missing or stale, and the groups vitmae duplicates writes."""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import pytest
from conftest import GALLERY_IMAGES as IMAGES
from conftest import GALLERY_OUTLIERS, duplicates_table
from service_api import assert_error, serve, uri

from pipeline.retrieval.anomalies import AnomalyConfig, rank_anomalies
from pipeline.retrieval.duplicates import DuplicateConfig, find_duplicates


def test_anomaly_pages_follow_the_cli_rankings(client, gallery_run, tmp_path):
    first = client.get("/api/anomalies", params={"limit": 10}).json()
    assert (first["by"], first["total"], first["offset"], first["limit"]) == ("knn", IMAGES, 0, 10)
    assert [r["rank"] for r in first["results"]] == list(range(1, 11))
    assert set(first["results"][0]) == {"rank", "path", "loss", "loss_rank", "knn_distance", "knn_rank", "mean_rank"}
    rest = client.get("/api/anomalies", params={"offset": 10, "limit": 500}).json()["results"]
    assert [r["rank"] for r in rest] == list(range(11, IMAGES + 1))
    copy = tmp_path / "run"
    shutil.copytree(gallery_run, copy)
    for by in ("loss", "knn", "both"):
        expected = rank_anomalies(AnomalyConfig(str(copy), by=by)).column("path").to_pylist()
        page = client.get("/api/anomalies", params={"by": by, "limit": 500}).json()
        assert page["by"] == by and [r["path"] for r in page["results"]] == expected, by
    knn = client.get("/api/anomalies", params={"by": "knn", "limit": 3}).json()["results"]
    assert {r["path"].rsplit("/", 1)[-1] for r in knn} == set(GALLERY_OUTLIERS)  # the planted photographs lead
    assert client.get("/api/anomalies", params={"offset": 1000}).json()["results"] == []
    assert_error(client.get("/api/anomalies", params={"by": "size"}), 422, "by:")
    assert_error(client.get("/api/anomalies", params={"limit": 501}), 422, "limit:")
    assert_error(client.get("/api/anomalies", params={"offset": -1}), 422, "offset:")


def test_anomalies_are_ranked_when_the_file_is_missing_or_stale(gallery_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(gallery_run, copy)
    (copy / "anomalies.parquet").unlink(missing_ok=True)
    with serve(copy) as client:
        page = client.get("/api/anomalies", params={"by": "knn", "limit": 5}).json()
    written = pq.read_table(copy / "anomalies.parquet")
    assert written.schema.metadata[b"anomalies.table_version"] == str(page["table_version"]).encode()
    assert [r["path"] for r in page["results"]] == written.column("path").to_pylist()[:5]


def test_duplicate_groups_largest_first_once_there_are_any(gallery_run, gallery, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(gallery_run, copy)
    (copy / "duplicates.parquet").unlink(missing_ok=True)
    with serve(copy) as client:
        assert_error(client.get("/api/duplicates"), 404, "no duplicates.parquet", "vitmae duplicates")
        version = client.get("/api/health").json()["table_version"]
        pq.write_table(duplicates_table(gallery, version), copy / "duplicates.parquet")
        page = client.get("/api/duplicates", params={"limit": 2}).json()
        assert (page["total"], page["offset"], page["limit"], page["table_version"], page["current"]) == (
            3,
            0,
            2,
            version,
            True,
        )
        assert [(g["group"], g["size"]) for g in page["results"]] == [(3, 4), (7, 3)]
        members = [m["path"].rsplit("/", 1)[-1] for m in page["results"][1]["members"]]
        assert members == ["coffee-04.png", "coffee-05.png", "coffee-06.png"]  # the representative, then by similarity
        assert page["results"][1]["representative"] == uri(gallery, "coffee-04.png")
        last = client.get("/api/duplicates", params={"offset": 2, "limit": 2}).json()
        assert [g["group"] for g in last["results"]] == [2] and last["results"][0]["members"][1][
            "similarity"
        ] == pytest.approx(0.91)
        pq.write_table(duplicates_table(gallery, version - 1), copy / "duplicates.parquet")  # an older version's groups
        assert client.get("/api/duplicates").json()["current"] is False
        assert_error(client.get("/api/duplicates", params={"limit": 0}), 422, "limit:")


def test_the_groups_vitmae_duplicates_writes_are_served_as_written(gallery_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(gallery_run, copy)
    written = find_duplicates(DuplicateConfig(str(copy), threshold=0.5))
    groups = written.column("group").to_pylist()
    assert len(set(groups)) >= 2, "the gallery's crops should make groups at 0.5"
    with serve(copy) as client:
        page = client.get("/api/duplicates", params={"limit": 100}).json()
    assert page["total"] == len(set(groups)) and page["current"] is True
    rows = written.to_pylist()
    assert [g["group"] for g in page["results"]] == list(dict.fromkeys(groups))  # largest first
    for group in page["results"]:
        members = [r for r in rows if r["group"] == group["group"]]
        assert group["members"][0]["path"] == group["representative"] == members[0]["representative"]
        assert {m["path"]: m["similarity"] for m in group["members"]} == pytest.approx(
            {r["path"]: r["similarity"] for r in members}
        )
