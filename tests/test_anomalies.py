"""Anomaly rankings: planted outliers on top of the kNN ranking of a real run, the table, the sheet, the rank rules."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import GALLERY_CROPS, GALLERY_OUTLIERS, clustered_vectors, write_embeddings
from jobs import anomalies as anomalies_job
from pipeline.retrieval.anomalies import AnomalyConfig, descending_ranks, rank_anomalies, ranking
from pipeline.render import Layout
from pipeline.retrieval.index import IndexConfig, build_index


def test_planted_outliers_top_the_knn_ranking(gallery_run, tmp_path, capsys):
    png = tmp_path / "anomalies.png"
    argv = ["--run", str(gallery_run), "--by", "knn", "--top", "5", "--json", "--png", str(png)]
    assert anomalies_job.main(argv) == 0
    top = json.loads(capsys.readouterr().out)
    assert [row["rank"] for row in top] == [1, 2, 3, 4, 5]
    assert {row["path"].rsplit("/", 1)[-1] for row in top[:3]} == set(GALLERY_OUTLIERS), top
    outlier_gap = min(r["knn_distance"] for r in top[:3]) / max(r["knn_distance"] for r in top[3:])
    assert outlier_gap > 3  # far from the rest, not merely first
    table = pq.read_table(gallery_run / "anomalies.parquet")
    assert table.num_rows == GALLERY_CROPS + len(GALLERY_OUTLIERS)
    assert table.column("rank").to_pylist() == list(range(1, table.num_rows + 1))
    assert sorted(table.column("loss_rank").to_pylist()) == list(range(1, table.num_rows + 1))  # every score and rank
    assert table.schema.metadata[b"anomalies.by"] == b"knn"
    sheet = Image.open(png)
    assert sheet.size == Layout(columns=5, lines=3).size(5)  # five tiles with three caption lines


def test_both_averages_the_two_ranks_and_is_the_default_for_a_run_with_a_loss(gallery_run, capsys):
    assert anomalies_job.main(["--run", str(gallery_run), "--top", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("top 3 of 27 images by both (auto: the run has a reconstruction loss)") and len(out) == 5
    table = pq.read_table(gallery_run / "anomalies.parquet").to_pydict()
    mean = np.array(table["mean_rank"])
    assert np.allclose(mean, (np.array(table["loss_rank"]) + np.array(table["knn_rank"])) / 2)
    assert list(mean) == sorted(mean)  # sorted by the average rank
    assert all(loss > 0 for loss in table["loss"])


def test_rank_rules_with_ties_and_missing_scores():
    assert descending_ranks(np.array([0.1, np.nan, 0.5, 0.5])).tolist()[::2] == [3.0, 1.0]
    assert np.isnan(descending_ranks(np.array([0.1, np.nan]))[1])
    paths = pa.array(["a", "b", "c", "d"])
    loss = np.array([4.0, 3.0, 2.0, 1.0], np.float32)  # a b c d
    knn = np.array([0.1, 0.4, 0.3, 0.2], np.float32)  # b c d a
    table = ranking(paths, loss, knn, "both").to_pydict()
    # mean ranks: a (1+4)/2 = 2.5, b (2+1)/2 = 1.5, c (3+2)/2 = 2.5, d (4+3)/2 = 3.5; the a-c tie goes to c (kNN rank 2)
    assert table["path"] == ["b", "c", "a", "d"] and table["rank"] == [1, 2, 3, 4]
    assert ranking(paths, loss, knn, "loss").column("path").to_pylist() == ["a", "b", "c", "d"]
    no_index = ranking(paths, loss, np.full(4, np.nan, np.float32), "loss").to_pydict()
    assert no_index["knn_rank"] == [None] * 4 and no_index["rank"] == [1, 2, 3, 4]


def test_knn_scores_need_an_index_and_loss_scores_need_a_loss(tmp_path, capsys):
    vectors = clustered_vectors(60, 8, clusters=1, noise=0.1)
    vectors[[5, 40]] *= -1  # planted outliers: pointing away from the cluster
    write_embeddings(str(tmp_path), vectors)
    assert anomalies_job.main(["--run", str(tmp_path), "--by", "knn"]) == 2
    assert "has no index" in capsys.readouterr().err
    build_index(str(tmp_path), IndexConfig(index_type="hnsw"))
    for by in ("loss", "both"):
        assert anomalies_job.main(["--run", str(tmp_path), "--by", by]) == 2
        err = capsys.readouterr().err.strip()
        assert "has no reconstruction loss (it was embedded with --mask-ratio 0); rank with --by knn" in err
        assert len(err.splitlines()) == 1
    table = rank_anomalies(AnomalyConfig(run=str(tmp_path), by="knn", k=5))
    assert sorted(table.column("path").to_pylist()[:2]) == ["s3://images/000005.jpg", "s3://images/000040.jpg"]
    assert table.column("loss").null_count == 60


def test_a_stale_index_is_refused(tmp_path):
    write_embeddings(str(tmp_path), clustered_vectors(50, 8))
    build_index(str(tmp_path))
    write_embeddings(str(tmp_path), clustered_vectors(50, 8), paths=[f"file:///other/{i}.png" for i in range(50)])
    with pytest.raises(ValueError, match="reflects version 0 of its embeddings table, which is now at version 1; update it"):
        rank_anomalies(AnomalyConfig(run=str(tmp_path), by="knn"))


def test_auto_ranks_a_run_without_a_loss_by_knn(tmp_path, capsys):
    """`vitmae embed` (mask ratio 0 by default) then `vitmae anomalies` with its defaults: ranked by kNN, and said so."""
    vectors = clustered_vectors(40, 8, clusters=1, noise=0.1)
    vectors[3] *= -1
    write_embeddings(str(tmp_path), vectors)
    build_index(str(tmp_path))
    assert anomalies_job.main(["--run", str(tmp_path), "--top", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("top 2 of 40 images by knn (auto: the run has no reconstruction loss)")
    assert out[2].endswith("s3://images/000003.jpg")
    assert pq.read_table(tmp_path / "anomalies.parquet").schema.metadata[b"anomalies.by"] == b"knn"
