"""The same command every night: each run updates the output's Delta tables with only what changed, and the index
follows the table. Real Ray, real S3. And the model actors a run asks for on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import s3_storage
from pictures import fill, photo
from runs import ROOT, read_run, run_args

import pipeline.embed.resources
from jobs.cli import main as cli
from pipeline.embed.infer import InferConfig
from pipeline.embed.run import EmbedConfig
from pipeline.records import finished_runs
from pipeline.storage import Storage
from pipeline.tables import dataset, open_table


@pytest.mark.slow  # three runs: ~13 s
def test_a_second_run_embeds_only_what_changed(ray_cluster, model_dir, tmp_path, capsys):
    images, output = tmp_path / "images", tmp_path / "out"
    fill(images, range(6))
    (images / "bad.png").write_bytes(b"not a picture")
    assert cli(["embed", *run_args(images, output, model_dir)]) == 0
    first, errors, record = read_run(output)
    assert (len(first), list(errors)) == (6, [f"file://{images / 'bad.png'}"])
    assert record["counts"]["new"] == 7 and capsys.readouterr().out.startswith("listed 7: 7 new")

    # Unchanged files get other bytes of the same size and mtime: read again, they would no longer decode.
    for i in (0, 1):
        path = images / f"img-{i:03d}.png"
        stat = path.stat()
        path.write_bytes(b"\0" * stat.st_size)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    fill(images, range(6, 8))  # new
    photo(50).save(images / "img-002.png")  # changed
    (images / "img-003.png").unlink()  # gone
    photo(51).save(images / "bad.png")  # the bad file fixed: changed, so tried again
    assert cli(["embed", *run_args(images, output, model_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("listed 8: 2 new, 2 changed, 4 unchanged, 1 gone, 0 failed before"), out
    second, errors, record = read_run(output)
    listed = {f"file://{p}" for p in images.iterdir()}
    assert set(second) == listed and not errors
    for i in (0, 1, 4, 5):  # kept, with their ids and embeddings: never read again
        path = f"file://{images / f'img-{i:03d}.png'}"
        assert second[path]["id"] == first[path]["id"] and second[path]["embedding"] == first[path]["embedding"]
    old_ids = {r["id"] for r in first.values()}
    replaced = second[f"file://{images / 'img-002.png'}"]
    assert (
        replaced["id"] > max(old_ids)
        and replaced["embedding"] != first[f"file://{images / 'img-002.png'}"]["embedding"]
    )
    assert replaced["run_id"] == record["run_id"] != first[f"file://{images / 'img-004.png'}"]["run_id"]
    assert (record["counts"]["embedded"], record["counts"]["failed"]) == (4, 0)
    assert record["index"]["count"] == 8 and record["index"]["table_version"] == record["versions"]["embeddings"]
    assert record["index"]["updates"][-1]["added"] == 4 and record["index"]["updates"][-1]["removed"] == 2

    # Search after the update finds the new image and never the gone one.
    assert (
        cli(["search", "--run", str(output), "--path", str(images / "img-007.png"), "--k", "8", "--json", "true"]) == 0
    )
    hits = capsys.readouterr().out
    assert f"{images / 'img-007.png'}" in hits and "img-003.png" not in hits

    # Nothing changed: done without Ray's start-up, the model or even torch (in a process of its own, as every
    # night), the tables untouched.
    versions = record["versions"]
    code = (
        "import sys; from jobs.command import main; from jobs.embed import COMMAND; main(COMMAND, sys.argv[1:]); "
        "print('torch loaded:', 'torch' in sys.modules)"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, *run_args(images, output, model_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.perf_counter() - started < 15
    assert done.stdout.startswith("listed 8: 0 new, 0 changed, 8 unchanged, 0 gone"), done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("torch loaded: False"), done.stdout
    third = finished_runs(str(output), Storage())[0]
    assert (
        third["versions"] == versions
        and "start_ray_seconds" not in third["timings"]
        and third["counts"]["unchanged"] == 8
    )
    assert cli(["history", "--run", str(output)]) == 0
    history = capsys.readouterr().out.splitlines()
    assert len(history) == 4 and history[1].split()[1] == third["run_id"]  # a header, then the three runs, newest first


def test_errors_are_tried_again_when_asked_and_missing_rows_kept_when_asked(ray_cluster, model_dir, tmp_path, capsys):
    images, output = tmp_path / "images", tmp_path / "out"
    fill(images, range(3))
    (images / "bad.png").write_bytes(b"not a picture")
    assert cli(["embed", *run_args(images, output, model_dir)]) == 0
    _, errors, first = read_run(output)
    bad = f"file://{images / 'bad.png'}"
    (images / "img-000.png").unlink()
    assert cli(["embed", *run_args(images, output, model_dir, "--retry_errors", "true", "--keep_missing", "true")]) == 0
    embedded, errors_again, second = read_run(output)
    assert errors_again[bad]["run_id"] == second["run_id"] != errors[bad]["run_id"]  # tried again, failed again
    assert f"file://{images / 'img-000.png'}" in embedded  # kept though gone
    assert second["counts"]["retried"] == 1 and second["counts"]["embedded"] == 0


def test_reading_the_folder_as_plain_parquet_is_wrong_after_an_update(ray_cluster, model_dir, tmp_path):
    """Why the README says to read the tables with a Delta reader: replaced rows stay in their old files for a week."""
    import pyarrow.dataset as pads

    images, output = tmp_path / "images", tmp_path / "out"
    fill(images, range(3))
    assert cli(["embed", *run_args(images, output, model_dir)]) == 0
    photo(60).save(images / "img-001.png")
    assert cli(["embed", *run_args(images, output, model_dir)]) == 0
    files = [str(p) for p in (output / "embeddings").glob("*.parquet")]
    assert pads.dataset(files, format="parquet").count_rows() > 3
    table = open_table(str(output / "embeddings"), Storage())
    assert dataset(table, str(output / "embeddings"), Storage()).count_rows() == 3


@pytest.mark.slow  # two runs on S3: ~13 s
def test_updates_on_s3_from_an_input_list(ray_cluster, s3, model_dir, tmp_path, monkeypatch, capsys):
    import s3fs

    fs = s3fs.S3FileSystem(**s3.storage_options())
    for i in range(4):
        path = tmp_path / f"{i}.png"
        photo(i).save(path)
        fs.put(str(path), f"test/update/photos/{i}.png")
    fs.put(str(model_dir), "test/update/model", recursive=True)
    fs.pipe("test/update/list.txt", "\n".join(f"s3://test/update/photos/{i}.png" for i in range(4)).encode())
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)
    args = [
        "--input_list",
        "s3://test/update/list.txt",
        "--output",
        "s3://test/update/out",
        "--model",
        "s3://test/update/model",
        "--storage.endpoint",
        s3.endpoint_url,
        "--num_actors",
        "1",
    ]
    assert cli(["embed", *args]) == 0
    first, _, _ = read_run("s3://test/update/out", s3_storage(s3))
    photo(70).save(tmp_path / "new.png")
    fs.put(str(tmp_path / "new.png"), "test/update/photos/1.png")  # changed: a new ETag
    fs.pipe(
        "test/update/list.txt", "\n".join(f"s3://test/update/photos/{i}.png" for i in (0, 1, 2)).encode()
    )  # 3 is gone
    capsys.readouterr()
    assert cli(["embed", *args]) == 0
    assert capsys.readouterr().out.startswith("listed 3: 0 new, 1 changed, 2 unchanged, 1 gone")
    second, _, record = read_run("s3://test/update/out", s3_storage(s3))
    assert sorted(second) == [f"s3://test/update/photos/{i}.png" for i in range(3)]
    assert second["s3://test/update/photos/0.png"]["id"] == first["s3://test/update/photos/0.png"]["id"]
    assert second["s3://test/update/photos/1.png"]["etag"] != first["s3://test/update/photos/1.png"]["etag"]
    assert record["index"]["count"] == 3


@pytest.mark.parametrize(
    ("resources", "flags", "parameters", "expected"),
    [
        ({"CPU": 2, "memory": 16e9}, {}, 86_000_000, (2, 1)),  # ViT-B on this kind of machine: one actor a core
        ({"CPU": 96, "memory": 100e9}, {}, 632_000_000, (8, 12)),  # ViT-H on a big node: memory caps the actors
        (
            {"CPU": 96, "memory": 100e9},
            {"infer": InferConfig(dtype="bfloat16")},
            632_000_000,
            (13, 7),
        ),  # half the bytes, more fit
        ({"CPU": 2, "memory": 1e9}, {}, 86_000_000, (1, 2)),  # nothing fits: still one actor, on every core
        ({"CPU": 8, "memory": 64e9}, {"cpu_threads": 2}, 86_000_000, (4, 2)),
        ({"CPU": 8, "memory": 64e9}, {"num_actors": 1}, 86_000_000, (1, 8)),
        ({"CPU": 8, "memory": 64e9}, {"num_actors": 3, "cpu_threads": 1}, 86_000_000, (3, 1)),
    ],
)
def test_cpu_actors_default_to_one_a_core_as_memory_allows(monkeypatch, resources, flags, parameters, expected):
    monkeypatch.setattr(pipeline.embed.resources.ray, "cluster_resources", lambda: resources)
    config = EmbedConfig(input="in", output="out", model="m", **flags)
    assert pipeline.embed.resources.cpu_actors(config, parameters) == expected
