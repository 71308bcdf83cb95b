"""Near-duplicates: groups equal to brute force over every pair, pairs at the threshold, identical files, real
photographs re-encoded, resized and cropped, the command's output and sheet, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import clustered_vectors, write_embeddings
from deltalake import write_deltalake
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from jobs.cli import main as cli
from pipeline import schema
from pipeline.render import Layout
from pipeline.retrieval.duplicates import DuplicateConfig, find_duplicates, groups_of
from pipeline.retrieval.index import IndexConfig, build_index

THRESHOLD = 0.95


def at_cosine(rng: np.random.Generator, vector: np.ndarray, cosine: float, length: float = 1.0) -> np.ndarray:
    """A vector at exactly `cosine` to `vector` (before float32 rounding), of L2 length `length`."""
    u = vector / np.linalg.norm(vector)
    w = rng.standard_normal(len(u))
    w -= (w @ u) * u
    w /= np.linalg.norm(w)
    return (length * (cosine * u + np.sqrt(1 - cosine**2) * w)).astype(np.float32)


def planted_set(seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """3,000 vectors in 30 loose clusters (no natural pair near 0.95) with planted near-duplicates: pairs and triples
    well above the threshold, pairs a hair above and below it, and raw lengths that differ (cosine ignores them)."""
    rng = np.random.default_rng(seed)
    vectors = clustered_vectors(3000, 32, clusters=30, noise=1.0, seed=seed)
    widths = [100] * len(vectors)
    for row, cosine in [
        (10, 0.99),
        (11, 0.97),
        (12, THRESHOLD + 2e-6),
        (13, THRESHOLD - 2e-6),
        (14, THRESHOLD + 5e-4),
        (15, THRESHOLD - 5e-4),
    ]:
        vectors[2000 + row] = at_cosine(rng, vectors[row], cosine, length=3.0)
    for row in (20, 21):  # triples: two copies of one image
        vectors[2100 + row] = at_cosine(rng, vectors[row], 0.985)
        vectors[2200 + row] = at_cosine(rng, vectors[row], 0.985)
        widths[2200 + row] = 200  # the largest image of its group: its representative
    return vectors, widths


def brute_force_groups(vectors: np.ndarray, threshold: float) -> tuple[set[frozenset[int]], int]:
    """Connected components (of two or more) of every pair at cosine >= threshold, by numpy and scipy; and the
    number of those pairs."""
    unit = vectors.astype(np.float64) / np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -1)
    a, b = np.nonzero(similarity >= threshold)
    _, label = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(len(vectors),) * 2), directed=False)
    groups: dict[int, set[int]] = {}
    for row, component in enumerate(label):
        groups.setdefault(component, set()).add(row)
    return {frozenset(g) for g in groups.values() if len(g) > 1}, len(a) // 2


def reported_groups(table) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for group, row in zip(table.column("group").to_pylist(), table.column("id").to_pylist()):
        groups.setdefault(group, set()).add(row)
    return {frozenset(g) for g in groups.values()}


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivfsq8"])
def test_groups_equal_brute_force_over_every_pair(index_type, tmp_path):
    vectors, widths = planted_set()
    paths = write_embeddings(str(tmp_path), vectors, widths=widths)
    build_index(str(tmp_path), IndexConfig(index_type=index_type))
    table = find_duplicates(DuplicateConfig(str(tmp_path), threshold=THRESHOLD))
    expected, pairs = brute_force_groups(vectors, THRESHOLD)
    assert {frozenset({2012, 12}), frozenset({2013, 13})} & expected == {frozenset({2012, 12})}  # the hair's breadth
    assert reported_groups(table) == expected
    rows = table.to_pydict()
    unit = vectors.astype(np.float64) / np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
    representative = [paths.index(p) for p in rows["representative"]]
    np.testing.assert_allclose(
        rows["similarity"], np.einsum("ij,ij->i", unit[rows["id"]], unit[representative]), atol=1e-6
    )
    groups = groups_of(table)
    assert [g["size"] for g in groups] == sorted((g["size"] for g in groups), reverse=True)
    triple = next(g for g in groups if paths[21] in {m["path"] for m in g["members"]})
    assert triple["representative"] == paths[2221] and triple["members"][0]["path"] == paths[2221]  # the widest
    others = [m["similarity"] for m in triple["members"][1:]]
    assert others == sorted(others, reverse=True) and triple["members"][0]["similarity"] == 1.0
    meta = table.schema.metadata
    assert (
        meta[b"duplicates.table_version"] == b"2" and meta[b"duplicates.threshold"] == b"0.95"
    )  # three commits of 1,000 rows
    assert int(meta[b"duplicates.candidate_pairs"]) >= int(meta[b"duplicates.pairs"]) == pairs


def test_identical_files_are_grouped_without_search(tmp_path):
    """Two files with one ETag and size are the same bytes whatever their vectors say (planted here as unrelated
    vectors, which no search would pair); one ETag with another size is another file."""
    vectors = clustered_vectors(500, 16, clusters=10, noise=1.0)
    vectors[301] = at_cosine(np.random.default_rng(1), vectors[300], 0.99)  # and a near-duplicate of the first
    etags = [None] * 500
    sizes = [1000] * 500
    etags[300], etags[400], etags[450] = "etag-a", "etag-a", "etag-a"
    sizes[450] = 999
    paths = write_embeddings(str(tmp_path), vectors, etags=etags, sizes=sizes)
    build_index(str(tmp_path))
    table = find_duplicates(DuplicateConfig(str(tmp_path)))
    assert reported_groups(table) == {frozenset({300, 301, 400})}
    rows = {row["path"]: row for row in table.to_pylist()}
    assert rows[paths[400]]["identical"] and not rows[paths[301]]["identical"] and not rows[paths[300]]["identical"]
    assert rows[paths[300]]["representative"] == paths[300]  # sizes and widths equal: the first path
    assert table.schema.metadata[b"duplicates.identical_files"] == b"1"


@pytest.mark.slow  # copies_run, a run of its own: ~20 s set-up
def test_copies_of_real_photographs_are_grouped_with_their_originals(copies_run, tmp_path, capsys):
    png = tmp_path / "duplicates.png"
    assert cli(["duplicates", "--run", str(copies_run), "--json", "true", "--png", str(png)]) == 0
    groups = json.loads(capsys.readouterr().out)
    named = {frozenset(m["path"].rsplit("/", 1)[-1] for m in g["members"]): g for g in groups}
    assert set(named) == {
        frozenset({"camera.png", "camera-q60.jpg", "camera-cropped.png"}),
        frozenset({"astronaut.png", "astronaut-q60.jpg"}),
        frozenset({"chelsea.png", "chelsea-resized.png"}),
        frozenset({"motorcycle_left.png", "motorcycle_left-cropped.png"}),
        frozenset({"rocket.jpg", "rocket_copy.jpg"}),
    }  # and coffee, moon and horse in none
    assert [g["size"] for g in groups] == [3, 2, 2, 2, 2]
    for members, group in named.items():  # the original: the largest image, else the largest file, else the first path
        original = min(members, key=lambda name: (name.count("-") + name.count("_copy"), name))
        assert group["representative"].endswith("/" + original), group
        assert all(m["similarity"] >= 0.95 for m in group["members"])
    table = pq.read_table(copies_run / "duplicates.parquet")
    version = json.loads((copies_run / "index" / "index.json").read_text())["table_version"]
    assert table.num_rows == 11 and table.schema.metadata[b"duplicates.table_version"] == str(version).encode()
    assert Image.open(png).size == Layout(columns=3, lines=2).size(5 * 3)  # a row per group, three columns
    assert cli(["duplicates", "--run", str(copies_run), "--threshold", "1"]) == 0  # the byte-for-byte copy only
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("1 group of near-duplicates (2 images) at cosine >= 1 among 14 images")
    assert out[2].endswith("/rocket.jpg") and out[3].endswith("/rocket_copy.jpg")


def test_bad_input_is_one_line_and_exit_status_2_and_no_index_yet_75(tmp_path, capsys):
    def error(argv: list[str]) -> str:
        assert cli(["duplicates", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        return err

    assert "has no embeddings table" in error(["--run", str(tmp_path)])
    assert "missing has no embeddings table" in error(["--run", str(tmp_path / "missing")])
    write_embeddings(str(tmp_path), clustered_vectors(50, 8))
    assert cli(["duplicates", "--run", str(tmp_path)]) == 75  # the run building it may not be done
    assert "has no index (index/index.json is missing); build it with: vitmae index" in capsys.readouterr().err
    for threshold in ("0", "1.5", "-0.1"):
        assert f"threshold must be a cosine similarity in (0, 1], got {float(threshold)}" in error(
            ["--run", str(tmp_path), "--threshold", threshold]
        )
    assert "Parser key \"threshold\": Expected a <class 'float'>. Got value: nan" in error(
        ["--run", str(tmp_path), "--threshold", "nan"]
    )
    build_index(str(tmp_path), IndexConfig(metric="l2"))
    assert "holds l2 distances; near-duplicates are found by cosine similarity" in error(["--run", str(tmp_path)])
    build_index(str(tmp_path))
    write_deltalake(str(tmp_path / "embeddings"), schema.EMBEDDINGS_SCHEMA.empty_table(), mode="overwrite")  # no rows
    assert "holds no embeddings" in error(["--run", str(tmp_path)])


def test_a_stale_index_is_refused(tmp_path):
    write_embeddings(str(tmp_path), clustered_vectors(50, 8))
    build_index(str(tmp_path))
    write_embeddings(str(tmp_path), clustered_vectors(60, 8))
    with pytest.raises(
        ValueError, match="reflects version 0 of its embeddings table, which is now at version 1; update it"
    ):
        find_duplicates(DuplicateConfig(str(tmp_path)))
