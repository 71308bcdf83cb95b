"""The FAISS index: the auto rule, recall of the approximate types against exact search, streaming, S3, errors."""

from __future__ import annotations

import json

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import clustered_vectors, s3_storage, write_embeddings

from jobs.cli import main as cli
from pipeline.retrieval.exact import ExactTopK
from pipeline.retrieval.index import IndexConfig, build_index, choose_index
from pipeline.retrieval.index_store import load_index
from pipeline.retrieval.search import Searcher
from pipeline.storage import Storage

GB = 10**9


@pytest.mark.parametrize(
    "count, dim, budget_gb, expected",
    [
        (10_000, 768, 4, "flat"),  # small: exact
        (49_000, 768, 0.1, "ivfsq8"),  # small, but flat (0.15 GB) and HNSW do not fit
        (500_000, 768, 4, "hnsw"),  # medium: the graph fits
        (500_000, 768, 1, "ivfsq8"),  # medium, but the graph (1.7 GB) does not fit
        (1_000_000, 768, 1, "ivfsq8"),  # the benchmark's case: SQ8 codes are 0.78 GB
        (3_000_000, 768, 64, "ivfsq8"),  # large: inverted lists even when memory is plentiful
        (10_000_000, 768, 1, "ivfpq"),  # large and tight: product quantisation
    ],
)
def test_auto_picks_by_count_and_budget(count, dim, budget_gb, expected):
    spec = choose_index(count, dim, int(budget_gb * GB))
    assert spec.index_type == expected, spec.reason
    assert spec.estimated_bytes <= budget_gb * GB
    assert f"{count:,} {dim}-d vectors" in spec.reason


def test_auto_sizes_ivf_lists_and_pq_codes():
    spec = choose_index(1_000_000, 768, GB)
    assert spec.factory == "IVF2564,SQ8"  # 4·sqrt(N) = 4000, capped by the 100,000 training vectors / 39
    assert spec.train_rows == 100_000 and "8-bit scalar codes" in spec.reason
    large = choose_index(10_000_000, 768, GB)
    assert large.params == {"nlist": 2564, "m": 48, "nbits": 8} and "not IVF-SQ8 (7.77 GB does not fit)" in large.reason
    assert choose_index(10_000_000, 768, 2 * GB).params["m"] == 96  # more budget, finer codes
    assert choose_index(200_000, 768, 4 * GB, train_rows=1_000_000).params == {"M": 32, "ef_construction": 80}


@pytest.mark.parametrize(
    "count, budget_gb, index_type, message",
    [
        (100_000_000, 0.5, "auto", "over the memory_budget_gb of 0.50 GB"),
        (1_000_000, 1, "flat", "index_type flat needs about 3.07 GB, over the memory_budget_gb of 1.00 GB"),
        (1_000_000, 1, "hnsw", "index_type hnsw needs about 3.35 GB"),
    ],
)
def test_budgets_nothing_fits_are_refused(count, budget_gb, index_type, message):
    with pytest.raises(ValueError, match=message.replace("-", r"\-").replace(".", r"\.")):
        choose_index(count, 768, int(budget_gb * GB), index_type)


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Cosine neighbours by brute force in numpy, each query's own row excluded. int [Q, k]."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = unit[queries] @ unit.T
    similarity[np.arange(len(queries)), queries] = -np.inf
    return np.argsort(-similarity, axis=1)[:, :k]


@pytest.mark.parametrize("index_type, bound", [("hnsw", 0.95), ("ivfsq8", 0.9), ("ivfpq", 0.5)])
def test_recall_of_approximate_indexes_against_exact(index_type, bound, tmp_path):
    vectors = clustered_vectors(4000, 32)
    write_embeddings(str(tmp_path), vectors)
    info = build_index(str(tmp_path), IndexConfig(index_type=index_type, batch_rows=700))
    queries = np.arange(0, 4000, 7)
    truth = exact_neighbours(vectors, queries, 10)
    hits = Searcher(str(tmp_path)).search_vectors(vectors[queries], 11)
    found = [[h.id for h in row if h.id != q][:10] for q, row in zip(queries, hits)]
    recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])
    assert recall >= bound, (index_type, recall, info["recall"])
    assert abs(info["recall"]["value"] - recall) < 0.05  # index.json measures what a user gets
    assert info["index_type"] == index_type and info["count"] == 4000 and info["dimension"] == 32
    curve = [r for _, r in info["recall"]["curve"]]
    assert curve == sorted(curve) and info["recall"]["target_met"] == (curve[-1] >= 0.95)


def test_hnsw_range_search_over_more_queries_than_faiss_checks_at_once(tmp_path):
    """FAISS's HNSW range search aborts the process when it splits the queries into blocks; LoadedIndex keeps one."""
    import faiss

    from pipeline.retrieval.index_store import inner, set_search_params

    vectors = clustered_vectors(3000, 64, seed=4)
    write_embeddings(str(tmp_path), vectors)
    build_index(str(tmp_path), IndexConfig(index_type="hnsw"))
    loaded = load_index(str(tmp_path), Storage())
    set_search_params(loaded.index, {"efSearch": 512})
    hnsw = inner(loaded.index).hnsw
    assert faiss.InterruptCallback.get_period_hint(hnsw.max_level * 64 * 512) < 3000  # several blocks, unguarded
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    lims, distances, ids = loaded.range_search(unit.astype(np.float32), 0.05)
    assert len(lims) == 3001 and (distances < 0.05).all()
    similarity = unit @ unit.T
    assert len(ids) == (similarity > 1 - 0.05 / 2).sum()  # every pair within the radius, each query itself included
    assert faiss.InterruptCallback.get_period_hint(1000) < 2**30  # Ctrl-C checks are back


def test_exact_top_k_over_batches_equals_one_pass():
    rng = np.random.default_rng(1)
    vectors, queries = (
        rng.standard_normal((1000, 16)).astype(np.float32),
        rng.standard_normal((20, 16)).astype(np.float32),
    )
    streamed = ExactTopK(queries, 5)
    for start in range(0, 1000, 64):  # uneven last batch
        streamed.add(vectors[start : start + 64], np.arange(start, min(start + 64, 1000)))
    distances = ((queries[:, None] - vectors[None]) ** 2).sum(-1)
    assert np.array_equal(streamed.ids, np.argsort(distances, axis=1)[:, :5])


def test_index_files_and_cosine_versus_l2(tmp_path):
    vectors = clustered_vectors(300, 8) * 5  # raw vectors far from unit length
    paths = write_embeddings(str(tmp_path), vectors, rows_per_file=128)
    info = build_index(str(tmp_path))
    written = json.loads((tmp_path / "index" / "index.json").read_text())
    assert written == info and info["index_type"] == "flat" and info["metric"] == "cosine"
    assert {"reason", "build_seconds", "params", "search_params", "file_bytes"} <= set(info)
    ids = pq.read_table(tmp_path / "index" / "ids.parquet")
    assert ids.column("path").to_pylist() == paths and ids.column("id").to_pylist() == list(range(300))
    hit = Searcher(str(tmp_path)).search_vectors(vectors[7] * 3, 1)[0][0]  # cosine ignores the length
    assert hit.path == paths[7] and hit.score == pytest.approx(1.0, abs=1e-5)
    build_index(str(tmp_path), IndexConfig(metric="l2"))
    l2 = Searcher(str(tmp_path)).search_vectors(vectors[7] + 0.01, 2)[0]
    assert l2[0].path == paths[7] and l2[0].score == pytest.approx(0.01 * np.sqrt(8), rel=1e-2)  # L2 distance
    assert l2[1].score > l2[0].score


def test_index_round_trip_through_s3(s3, monkeypatch, capsys):
    options = s3.storage_options()
    vectors = clustered_vectors(2500, 24, seed=3)
    paths = write_embeddings("s3://test/index-rt/run", vectors, s3_storage(s3), rows_per_file=600)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    argv = ["--run", "s3://test/index-rt/run", "--storage.endpoint", s3.endpoint_url, "--index.index_type", "hnsw"]
    assert cli(["index", *argv]) == 0
    assert "hnsw index (HNSW32, cosine) of 2500 x 24-d vectors" in capsys.readouterr().out
    fs = fsspec.filesystem("s3", **options)
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls("test/index-rt/run/index")) == [
        "ids.parquet",
        "index.faiss",
        "index.json",
        "removed.parquet",
    ]
    loaded = load_index("s3://test/index-rt/run", s3_storage(s3))
    assert loaded.index.ntotal == 2500 and loaded.info["search_params"] == {"efSearch": 64}
    searcher = Searcher("s3://test/index-rt/run", s3_storage(s3))
    hits = searcher.search_path(paths[42], 5)
    assert hits[0].path == paths[42] and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert len({h.id for h in hits[1:]} & set(exact_neighbours(vectors, np.array([42]), 4)[0].tolist())) >= 3


def test_index_command_errors_are_one_line(tmp_path, capsys):
    def error(argv):
        assert cli(["index", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        return err

    assert "has no embeddings table" in error(["--run", str(tmp_path)])
    write_embeddings(str(tmp_path), clustered_vectors(1, 8))
    assert "holds 1 embedding(s); an index needs at least 2" in error(["--run", str(tmp_path)])
    assert "memory_budget_gb must be a positive number" in error(
        ["--run", str(tmp_path), "--index.memory_budget_gb", "0"]
    )
    write_embeddings(str(tmp_path), clustered_vectors(100, 8))
    assert "index_type flat needs about" in error(
        ["--run", str(tmp_path), "--index.index_type", "flat", "--index.memory_budget_gb", "1e-6"]
    )
    assert "has no embeddings table" in error(["--run", str(tmp_path / "missing")])
