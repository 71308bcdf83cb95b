"""Leaks between runs (`vitmae duplicates --against`): the images of one run that near-duplicate another's, equal to
brute force over every cross pair, with their counterparts; real photographs recompressed and resized in a second
run; the JSON shape; and the refusals: other embedding settings, the run itself, no index, other dimensions."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import DISTINCT, clustered_vectors, jpeg, write_embeddings
from deltalake import DeltaTable
from PIL import Image
from test_duplicates import THRESHOLD, at_cosine

from jobs.cli import main as cli
from pipeline.render import Layout
from pipeline.retrieval.duplicates import DuplicateConfig
from pipeline.retrieval.index import IndexConfig, build_index
from pipeline.retrieval.leaks import find_leaks

SETTINGS = {"model_sha256": "ab12", "processor": {"size": {"height": 224, "width": 224}}, "pooling": "mean"}


def planted_runs(train: str, test: str) -> tuple[np.ndarray, np.ndarray]:
    """TRAIN: 3,000 clustered vectors; TEST: 400 from other clusters (no natural pair near the threshold) with planted
    copies of TRAIN rows: well above the threshold, a hair above and below it, an exact copy, two copies of one row,
    a copy of a row that TRAIN holds twice, and files with a TRAIN file's ETag (one of the same size). Both tables
    number their rows from 0. Returns (TRAIN, TEST) vectors."""
    rng = np.random.default_rng(0)
    theirs = clustered_vectors(3000, 32, clusters=30, noise=1.0, seed=0)
    ours = clustered_vectors(400, 32, clusters=10, noise=1.0, seed=1)
    theirs[31] = at_cosine(rng, theirs[30], 0.99)  # TRAIN's own near-duplicate
    for row, (source, cosine) in enumerate(
        [(10, 0.99), (11, 0.97), (12, THRESHOLD + 2e-6), (13, THRESHOLD - 2e-6), (20, 0.98), (20, 0.985), (30, 0.997)]
    ):
        ours[row] = at_cosine(rng, theirs[source], cosine, length=3.0)
    ours[7] = theirs[14]  # recompressed to the same numbers
    etags, sizes = [None] * 3000, [1000] * 3000
    etags[40], etags[41] = "etag-a", "etag-b"
    test_etags, test_sizes = [None] * 400, [1000] * 400
    test_etags[8], test_etags[9], test_sizes[9] = "etag-a", "etag-b", 999  # the same bytes; another file
    write_embeddings(train, theirs, paths=[f"s3://train/{i:05d}.jpg" for i in range(3000)], etags=etags, sizes=sizes)
    test_paths = [f"s3://test/{i:05d}.jpg" for i in range(400)]
    write_embeddings(test, ours, paths=test_paths, etags=test_etags, sizes=test_sizes)
    return theirs, ours


def brute_force_leaks(train: np.ndarray, test: np.ndarray, threshold: float) -> dict[int, tuple[int, float]]:
    """{TEST row: (its most similar TRAIN row, their cosine)} for every TEST row at cosine >= threshold to one."""
    unit = [v.astype(np.float64) / np.linalg.norm(v.astype(np.float64), axis=1, keepdims=True) for v in (train, test)]
    similarity = unit[1] @ unit[0].T
    best = similarity.argmax(axis=1)
    leaked = np.flatnonzero(similarity.max(axis=1) >= threshold)
    return {int(row): (int(best[row]), float(similarity[row, best[row]])) for row in leaked}


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivfsq8"])
def test_leaks_equal_brute_force_over_every_cross_pair(index_type, tmp_path):
    train, test = str(tmp_path / "train"), str(tmp_path / "test")
    theirs, ours = planted_runs(train, test)
    build_index(train, IndexConfig(index_type=index_type))  # TEST needs no index
    table = find_leaks(DuplicateConfig(test, threshold=THRESHOLD, against=train))
    expected = brute_force_leaks(theirs, ours, THRESHOLD)
    assert {0, 1, 2, 4, 5, 6, 7} <= set(expected) and 3 not in expected  # the plants, and the hair's breadth
    rows = table.to_pylist()
    leaked = {r["id"]: r for r in rows if r["run"] == test}
    assert set(leaked) == set(expected) | {8}  # and the same bytes, whatever their vectors say; not 9
    for row, (source, cosine) in expected.items():
        assert leaked[row]["representative"] == f"s3://train/{source:05d}.jpg", row
        assert leaked[row]["path"] == f"s3://test/{row:05d}.jpg"
        assert leaked[row]["similarity"] >= THRESHOLD and abs(leaked[row]["similarity"] - cosine) < 1e-6
    assert leaked[6]["representative"] == "s3://train/00030.jpg"  # not its TRAIN twin 31
    assert leaked[7]["similarity"] == 1.0 and not leaked[7]["identical"]
    assert leaked[8]["identical"] and leaked[8]["representative"] == "s3://train/00040.jpg"
    representatives = [r for r in rows if r["run"] == train]
    assert all(r["path"] == r["representative"] and r["similarity"] == 1.0 for r in representatives)
    assert {r["id"] for r in representatives} == {source for source, _ in expected.values()} | {40}
    sizes = {r["group"]: r["group_size"] for r in rows}
    assert sizes[leaked[4]["group"]] == 3 and leaked[4]["group"] == leaked[5]["group"] == 1  # TRAIN row 20, twice
    meta = table.schema.metadata
    assert meta[b"duplicates.against"] == train.encode() and meta[b"duplicates.images"] == b"400"
    assert meta[b"duplicates.against_images"] == b"3000" and meta[b"duplicates.identical_files"] == b"1"
    assert meta[b"duplicates.table_version"] == b"0" and meta[b"duplicates.against_table_version"] == b"2"
    assert pq.read_table(f"{test}/leaks.parquet").equals(table)
    assert not (tmp_path / "test" / "duplicates.parquet").exists()


def test_json_output_names_each_members_run(tmp_path, capsys):
    train, test = str(tmp_path / "train"), str(tmp_path / "test")
    planted_runs(train, test)
    build_index(train)
    assert cli(["duplicates", "--run", test, "--against", train, "--json", "true", "--top", "2"]) == 0
    groups = json.loads(capsys.readouterr().out)
    assert [g["group"] for g in groups] == [1, 2] and groups[0]["size"] == 3
    for group in groups:
        assert set(group) == {"group", "size", "representative", "members"}
        first, *others = group["members"]
        assert set(first) == {"path", "similarity", "identical", "run"}
        assert first == {"path": group["representative"], "similarity": 1.0, "identical": False, "run": train}
        assert others and all(m["run"] == test and m["similarity"] >= THRESHOLD for m in others)
    assert cli(["duplicates", "--run", test, "--against", train]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"8 of 400 images of {test} near-duplicate 7 images of {train} at cosine >= 0.95")


def describe(run: str, **settings) -> None:
    """Gives the embeddings table of `run` the description an embedding run writes, with `settings`."""
    DeltaTable(f"{run}/embeddings").alter.set_table_description(json.dumps({"format": 1, "settings": settings}))


def test_refusals_are_one_line_and_exit_status_2_and_no_index_75(tmp_path, capsys):
    def error(argv: list[str]) -> str:
        assert cli(["duplicates", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        return err

    train, test = str(tmp_path / "train"), str(tmp_path / "test")
    planted_runs(train, test)
    assert "--against names the run itself" in error(["--run", test, "--against", test + "/"])
    assert "missing has no embeddings table" in error(["--run", test, "--against", str(tmp_path / "missing")])
    assert cli(["duplicates", "--run", test, "--against", train]) == 75
    assert f"{train} has no index (index/index.json is missing)" in capsys.readouterr().err
    describe(train, **SETTINGS)  # a commit: before the index, which must reflect the table's last version
    build_index(train)
    describe(test, **{**SETTINGS, "pooling": "cls", "mask_ratio": 0.75})  # the loss's settings do not matter
    assert error(["--run", test, "--against", train]).endswith(
        f"{test} and {train} were embedded with other settings, so their embeddings do not compare: "
        f"pooling 'cls' ({test}) vs 'mean' ({train}); embed one again with the other's model and settings "
        "(vitmae embed --output ... --overwrite true)"
    )
    describe(test, **{**SETTINGS, "model_sha256": "cd34", "processor": {"size": {"height": 32, "width": 32}}})
    assert (
        "model_sha256 'cd34' (TEST) vs 'ab12' (TRAIN); processor.size.height 32 (TEST) vs 224 (TRAIN); "
        "processor.size.width 32 (TEST) vs 224 (TRAIN);"
    ).replace("TEST", test).replace("TRAIN", train) in error(["--run", test, "--against", train])
    describe(test, **SETTINGS, mask_ratio=0.75, seed=3)
    assert cli(["duplicates", "--run", test, "--against", train]) == 0
    capsys.readouterr()
    write_embeddings(test, clustered_vectors(50, 8))
    describe(test, **SETTINGS)
    assert "the embeddings of" in error(["--run", test, "--against", train])  # 8 dimensions against 32


@pytest.mark.slow  # two embedding runs: 18 to 35 s here
def test_recompressed_and_resized_photographs_leak_into_a_second_run(
    ray_cluster, model_dir, photo_paths, tmp_path, capsys
):
    """TRAIN: eight photographs the model tells apart; TEST: a JPEG at quality 60 of one, another resized to 90 %,
    a third byte for byte, and three pictures of none of them."""
    from pipeline.embed.run import EmbedConfig, run

    data = photo_paths[0].parent
    folders = {name: tmp_path / name for name in ("train-images", "test-images")}
    for folder in folders.values():
        folder.mkdir()
    for name in DISTINCT:
        shutil.copy(data / name, folders["train-images"] / name)
    test_images = folders["test-images"]
    (test_images / "astronaut-q60.jpg").write_bytes(jpeg(Image.open(data / "astronaut.png").convert("RGB"), 60))
    chelsea = Image.open(data / "chelsea.png").convert("RGB")
    chelsea.resize((chelsea.width * 9 // 10, chelsea.height * 9 // 10), Image.Resampling.BICUBIC).save(
        test_images / "chelsea-resized.png"
    )
    shutil.copy(data / "rocket.jpg", test_images / "rocket-copy.jpg")
    for name in ("coins.png", "ihc.png", "hubble_deep_field.jpg"):  # unlike any of TRAIN
        shutil.copy(data / name, test_images / name)
    runs = {name: tmp_path / name for name in ("train", "test")}
    for name, images in (("train", folders["train-images"]), ("test", test_images)):
        run(EmbedConfig(input=str(images), output=str(runs[name]), model=str(model_dir), batch_size=16, num_gpus=0))
    png = tmp_path / "leaks.png"
    argv = ["duplicates", "--run", str(runs["test"]), "--against", str(runs["train"]), "--json", "true"]
    assert cli([*argv, "--png", str(png)]) == 0
    groups = json.loads(capsys.readouterr().out)
    matched = {}
    for group in groups:
        first, *others = group["members"]
        assert first["run"] == str(runs["train"]) and all(m["run"] == str(runs["test"]) for m in others)
        assert all(m["similarity"] >= 0.95 for m in others)
        matched.update({m["path"].rsplit("/", 1)[-1]: first["path"].rsplit("/", 1)[-1] for m in others})
    assert matched == {
        "astronaut-q60.jpg": "astronaut.png",
        "chelsea-resized.png": "chelsea.png",
        "rocket-copy.jpg": "rocket.jpg",
    }
    assert Image.open(png).size == Layout(columns=2, lines=2).size(3 * 2)  # a row per group: TRAIN's, then TEST's
    table = pq.read_table(runs["test"] / "leaks.parquet")
    assert table.num_rows == 6 and table.schema.metadata[b"duplicates.images"] == b"6"
