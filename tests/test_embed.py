"""The embedding job end to end on a real local Ray: outputs, bad inputs, parity, masks, S3, job submission."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from conftest import s3_storage, use_hub
from PIL import Image
from runs import read_run, submit_job

import pipeline.embed.run
import vitmae
from jobs import embed as embed_job
from jobs.cli import main as cli
from jobs.command import parse
from pipeline.embed.embedder import Embedder
from pipeline.embed.infer import InferConfig, cpu_has_bf16
from pipeline.embed.listing import iter_listing
from pipeline.embed.run import EmbedConfig, run
from pipeline.layout import ANOMALIES_FILE, DUPLICATES_FILE, RUN_FILES
from pipeline.retrieval.anomalies import AnomalyConfig, rank_anomalies
from pipeline.retrieval.duplicates import DuplicateConfig, find_duplicates
from pipeline.storage import Storage, StorageConfig
from pipeline.tables import description, open_table
from vitmae.errors import NotFound
from vitmae.processor import MAE_PROCESSOR

BAD = {  # file name -> expected start of its error
    "empty.jpg": "empty file",
    "random.png": "not an image file",
    "text.jpg": "not an image file",
    "truncated.jpg": "cannot decode JPEG image: image file is truncated",
    "truncated.png": "cannot decode PNG image: vipspng: libpng read error",  # decoded by libvips
    "bomb.png": "image too large",
}


@pytest.fixture(scope="session")
def scored_run(ray_cluster, images, model_dir, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("run") / "scored"
    run(
        EmbedConfig(
            input=str(images),
            output=str(output),
            model=str(model_dir),
            infer=InferConfig(mask_ratio=0.75, dtype="float32"),  # the parity bounds are float32's
            batch_size=8,
            num_gpus=0,
        )
    )
    return output


@pytest.mark.slow  # scored_run: a run over every odd and bad input, ~60 s
def test_every_listed_input_ends_once_in_embeddings_or_errors(scored_run, images):
    embedded, failed, manifest = read_run(scored_run)
    listed = {f"file://{p}" for p in images.iterdir() if p.suffix != ".txt"}
    assert set(embedded) | set(failed) == listed and not set(embedded) & set(failed)
    counts = manifest["counts"]
    assert (counts["listed"], counts["new"], counts["embedded"], counts["failed"]) == (
        len(listed),
        len(listed),
        len(embedded),
        len(BAD),
    )
    for name, reason in BAD.items():
        assert failed[f"file://{images / name}"]["error"].startswith(reason)
    huge = embedded[f"file://{images / 'huge.jpg'}"]
    assert (huge["width"], huge["height"]) == (10_000, 8_000)
    assert all(len(r["embedding"]) == 64 and r["loss"] > 0 for r in embedded.values())
    assert (
        manifest["infer"]["mask_ratio"] == 0.75
        and manifest["settings"]["model_sha256"]
        and manifest["package_versions"]["ray"]
    )
    assert manifest["index"]["count"] == len(embedded) and (scored_run / "index" / "index.json").exists()
    assert set(manifest["timings"]) == {"start_ray_seconds", "embed_seconds", "maintenance_seconds", "index_seconds"}
    assert sorted(r["id"] for r in embedded.values()) == sorted(set(r["id"] for r in embedded.values()))
    # The fixture cluster's 2 CPUs: one single-threaded actor each, 8 images a batch where none was given.
    resources = manifest["resources"]
    assert (resources["actors"], resources["cpu_threads"], resources["batch_size"]) == (2, 1, 8)
    # Those batches of 8 went into data files of 64 rows or more (FILE_ROWS): fewer than 64 rows, one file a table.
    for table in ("embeddings", "errors"):
        assert len(list((scored_run / table).glob(f"part-{manifest['run_id']}-*.parquet"))) == 1, table


@pytest.mark.slow  # scored_run
def test_outputs_read_back_as_delta_tables_in_pandas_duckdb_and_ray(ray_cluster, scored_run):
    import duckdb
    import ray
    from deltalake import DeltaTable

    embeddings = DeltaTable(str(scored_run / "embeddings")).to_pyarrow_dataset()  # as the README says to read them
    frame = embeddings.to_table().to_pandas()
    assert frame["embedding"].map(len).eq(64).all() and frame["id"].is_unique
    assert duckdb.sql("select count(*) from embeddings").fetchall()[0][0] == len(frame)
    errors = DeltaTable(str(scored_run / "errors")).to_pyarrow_dataset()  # noqa: F841 (DuckDB reads it by name)
    assert duckdb.sql("select count(*) from errors where error is not null").fetchall()[0][0] == len(BAD)
    assert ray.data.read_delta(str(scored_run / "embeddings")).count() == len(frame)


def reference_embeddings(model_dir: Path, paths: list[Path], pooling: str) -> np.ndarray:
    """What a transformers user gets: ViTImageProcessor PIL path + ViTMAEModel with mask ratio 0."""
    processor = transformers.ViTImageProcessorPil(**MAE_PROCESSOR)
    model = transformers.ViTMAEModel.from_pretrained(model_dir, mask_ratio=0.0).eval()
    pixels = processor([Image.open(p).convert("RGB") for p in paths], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model(pixels)
    tokens = out.last_hidden_state
    if pooling == "cls":
        return tokens[:, 0].numpy()
    return tokens[:, 1:].mean(dim=1).numpy()  # the mean ignores transformers' token shuffle


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.slow  # scored_run
def test_mean_embeddings_match_transformers_on_photographs(scored_run, model_dir, photo_paths, images):
    embedded, _, _ = read_run(scored_run)
    ours = np.stack([embedded[f"file://{images / p.name}"]["embedding"] for p in photo_paths])
    similarity = cosines(ours, reference_embeddings(model_dir, photo_paths, "mean"))
    assert similarity.min() >= 0.999, similarity  # the bound users are promised, JPEG draft scaling included
    # retina.jpg (1411 px) decodes at a quarter of its DCT scale: 0.999997. The others are too small for that, so their
    # pixels are PIL's own and only float rounding differs (a bilinear resize would still pass 0.999, at 0.9998).
    full_scale = [i for i, p in enumerate(photo_paths) if p.name != "retina.jpg"]
    assert similarity[full_scale].min() >= 0.999_999, similarity


@pytest.mark.slow  # ~11 s
def test_cls_embeddings_match_and_the_gpu_request_falls_back_to_the_cpu(ray_cluster, model_dir, photo_paths, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in photo_paths:
        (folder / p.name).write_bytes(p.read_bytes())
    output = tmp_path / "cls"
    manifest = run(
        EmbedConfig(
            input=str(folder),
            output=str(output),
            model=str(model_dir),
            infer=InferConfig(pooling="cls", dtype="float32"),
            num_gpus=1,
        )
    )
    assert manifest["resources"]["gpus"] == 1, manifest
    assert manifest["counts"]["embedded"] == len(photo_paths), read_run(output)[1]
    embedded, _, _ = read_run(output)
    assert all(r["loss"] is None for r in embedded.values())
    ours = np.stack([embedded[f"file://{folder / p.name}"]["embedding"] for p in photo_paths])
    assert cosines(ours, reference_embeddings(model_dir, photo_paths, "cls")).min() >= 0.999


@pytest.mark.slow  # scored_run and two more runs
def test_loss_is_identical_across_runs_and_the_same_across_batch_sizes(scored_run, images, model_dir, tmp_path):
    again = tmp_path / "again"
    run(
        EmbedConfig(
            input=str(images),
            output=str(again),
            model=str(model_dir),
            infer=InferConfig(mask_ratio=0.75, dtype="float32"),  # the parity bounds are float32's
            batch_size=3,
            num_gpus=0,
        )
    )
    same = tmp_path / "same"
    run(
        EmbedConfig(
            input=str(images),
            output=str(same),
            model=str(model_dir),
            infer=InferConfig(mask_ratio=0.75, dtype="float32"),  # the parity bounds are float32's
            batch_size=8,
            num_gpus=0,
        )
    )
    first, _, _ = read_run(scored_run)
    second, _, _ = read_run(again)
    assert first.keys() == second.keys()
    for path in first:  # other batches: the GEMMs block differently, so equal up to float rounding
        assert second[path]["loss"] == pytest.approx(first[path]["loss"], rel=1e-5)
    assert {p: r["loss"] for p, r in read_run(same)[0].items()} == {p: r["loss"] for p, r in first.items()}


@pytest.mark.slow  # three runs
def test_auto_dtype_keeps_the_tables_and_picks_bf16_for_a_new_one_on_cpus_that_have_it(
    ray_cluster, model_dir, two_photos, photo_paths, tmp_path
):
    """A float32 table stays float32 under auto (a nightly run is not refused), and a new table on this machine gets
    bf16 where its CPU multiplies bf16 natively, with embeddings at a cosine of 0.9999 to float32's."""
    kept, fresh = tmp_path / "kept", tmp_path / "fresh"
    common = dict(input=str(two_photos), model=str(model_dir), num_gpus=0)
    run(EmbedConfig(output=str(kept), infer=InferConfig(dtype="float32"), **common))
    (two_photos / photo_paths[2].name).write_bytes(photo_paths[2].read_bytes())
    assert run(EmbedConfig(output=str(kept), **common))["counts"]["embedded"] == 1
    run(EmbedConfig(output=str(fresh), **common))
    dtypes = [description(open_table(str(out / "embeddings"), Storage()))["settings"]["dtype"] for out in (kept, fresh)]
    assert dtypes == ["float32", "bfloat16" if cpu_has_bf16() else "float32"]
    float32, auto = read_run(kept)[0], read_run(fresh)[0]
    assert float32.keys() == auto.keys() and len(auto) == 3
    got = np.stack([auto[p]["embedding"] for p in sorted(auto)])
    assert cosines(got, np.stack([float32[p]["embedding"] for p in sorted(auto)])).min() >= 0.9999


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow  # three runs
def test_other_settings_are_refused_before_work_and_overwrite_starts_anew(
    ray_cluster, model_dir, two_photos, tmp_path, capsys
):
    output = tmp_path / "run"
    args = ["embed", "--input", str(two_photos), "--output", str(output), "--model", str(model_dir)]
    assert cli([*args, "--infer.mask_ratio", "0.75"]) == 0
    before = snapshot(output)
    assert (
        cli(
            [
                *args,
                "--infer.mask_ratio",
                "0.5",
                "--infer.seed",
                "3",
                "--infer.pooling",
                "cls",
                "--decode.mode",
                "exact",
                "--infer.patch_loss",
                "true",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        f"output {output} was embedded with other settings: " in err
        and "give --overwrite true to start new tables" in err
    )
    for difference in (
        "pooling 'mean' (the table) vs 'cls' (this run)",
        "mask_ratio 0.75 (the table) vs 0.5 (this run)",
        "seed 0 (the table) vs 3 (this run)",
        "decode 'fast' (the table) vs 'exact' (this run)",
        "patch_loss False (the table) vs True (this run)",
    ):
        assert difference in err, err
    broken = tmp_path / "broken"  # weights that do not fit the config: refused before the earlier run is removed
    (broken).mkdir()
    for name in ("model.safetensors", "preprocessor_config.json"):
        (broken / name).write_bytes((model_dir / name).read_bytes())
    config = json.loads((model_dir / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "intermediate_size": config["intermediate_size"] * 2}))
    assert cli([*args[:5], "--model", str(broken), "--overwrite", "true"]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not fit ViTMAEModel: shape mismatch" in err and len(err.splitlines()) == 1, err
    assert snapshot(output) == before
    assert cli([*args, "--overwrite", "true", "--infer.mask_ratio", "0"]) == 0
    embedded, failed, manifest = read_run(output)
    assert manifest["infer"]["mask_ratio"] == 0 and len(embedded) == 2 and not failed
    assert all(r["loss"] is None for r in embedded.values())  # no row of the first run is left
    assert open_table(str(output / "embeddings"), Storage()).version() == 2  # a new table: created, described, data


def test_more_gpus_than_the_cluster_has_fail_before_work(ray_cluster, model_dir, two_photos, tmp_path, capsys):
    args = [
        "embed",
        "--input",
        str(two_photos),
        "--output",
        str(tmp_path / "out"),
        "--model",
        str(model_dir),
        "--num_gpus",
        "3",
    ]
    assert cli(args) == 2
    assert "num_gpus 3 asks for more GPUs than the Ray cluster's 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_relative_paths_mean_the_drivers_folder(ray_cluster, model_dir, two_photos, tmp_path, monkeypatch):
    """Ray's workers run in another folder than the driver: a relative --output must still land here."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").symlink_to(model_dir)
    run(EmbedConfig(input="photos", output="out", model="model", num_gpus=0))
    embedded, _, manifest = read_run(tmp_path / "out")
    assert len(embedded) == 2 and manifest["model"] == str(tmp_path / "model")


def test_a_mistyped_model_is_the_same_line_in_every_command(images, tmp_path, monkeypatch, capsys):
    """embed, pretrain's --init, reconstruct, and the model actors (which search by image uses) resolve a model name
    by one rule: no local folder and no hub gives one line that says both."""
    use_hub(monkeypatch, tmp_path / "hub-cache")
    monkeypatch.chdir(tmp_path)
    name = "models/vit-mae-bse"
    expected = (
        f"checkpoint folder not found: no local folder {tmp_path / name}, "
        f"and the Hugging Face hub could not give {name} ("
    )
    commands = [
        ["embed", "--input", str(images), "--output", "out", "--model", name],
        ["pretrain", "--input", str(images), "--output", "out", "--init", name],
        ["reconstruct", "--model", name, "--images", "[x.png]", "--png", "x.png"],
    ]
    for command in commands:
        assert cli(command) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"vitmae {command[0]}: error: {expected}") and len(err.splitlines()) == 1, err
    with pytest.raises(NotFound, match=f"^{re.escape(expected)}"):
        Embedder(name)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "mistake, expected",
    [
        (lambda d, m: ["--input", str(d / "nowhere")], "no such folder, prefix or file"),
        (lambda d, m: ["--input", str(d)], "no files found there"),
        (
            lambda d, m: ["--input", str(m), "--extensions", "[xyz]"],
            "none of its 3 files has one of the extensions xyz",
        ),
        (lambda d, m: ["--model", str(d)], "has no config.json"),
        (lambda d, m: ["--infer.mask_ratio", "1.5"], "mask_ratio must be in [0, 1)"),
        (lambda d, m: ["--infer.dtype", "float8"], "unknown dtype 'float8'"),
        (lambda d, m: ["--cpu_threads", "0"], "cpu_threads must be at least 1, got 0"),
        (lambda d, m: ["--num_gpus", "-1"], "num_gpus must be at least 0, got -1"),
        (lambda d, m: ["--output", str(m / "config.json")], "config.json is a file; give a folder or prefix"),
        (lambda d, m: ["--infer.pooling", "max"], 'Parser key "infer.pooling"'),
        (lambda d, m: ["--batch_size", "many"], 'Parser key "batch_size"'),
        (lambda d, m: ["--no_such_flag", "1"], "unrecognized arguments: --no_such_flag 1 (see vitmae embed --help)"),
    ],
)
def test_user_mistakes_are_one_line_errors(mistake, expected, images, model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "example-key")  # credentials, so that S3 requests go as far as the endpoint
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example-secret")
    defaults = {"--input": str(images), "--output": str(tmp_path / "out"), "--model": str(model_dir)}
    given = mistake(tmp_path, model_dir)
    for flag, value in zip(given[::2], given[1::2]):
        defaults[flag] = value
    assert cli(["embed", *[x for kv in defaults.items() for x in kv]]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.slow  # waits the outage out
def test_an_endpoint_that_does_not_answer_is_an_outage_before_work(images, model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "example-key")  # credentials, so that S3 requests go as far as the endpoint
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example-secret")
    argv = [
        "embed",
        "--input",
        "s3://bucket/photos/",
        "--output",
        str(tmp_path / "out"),
        "--model",
        str(model_dir),
        "--storage.endpoint",
        "http://127.0.0.1:9",
    ]
    assert cli(argv) == 75  # an outage or a wrong endpoint: the message says which setting to check
    err = capsys.readouterr().err.strip()
    assert (
        "s3://bucket/photos/: cannot reach the storage at http://127.0.0.1:9 (" in err and len(err.splitlines()) == 1
    ), err
    assert not (tmp_path / "out").exists()


def test_s3_mistakes_are_one_line_errors_before_work(s3, model_dir, tmp_path, monkeypatch, capsys):
    import s3fs

    s3fs.S3FileSystem(**s3.storage_options()).put(str(model_dir), "test/mistakes/model", recursive=True)
    args = [
        "--output",
        "s3://test/mistakes/out",
        "--model",
        "s3://test/mistakes/model",
        "--storage.endpoint",
        s3.endpoint_url,
    ]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    for secret, source, expected, status in [
        (
            s3.secret_key + "x",
            "s3://test/mistakes/photos/",
            "s3://test/mistakes/out: the store refused the credentials",
            77,
        ),
        (
            s3.secret_key,
            "s3://no-such-bucket/photos/",
            "s3://no-such-bucket/photos/: no such bucket 'no-such-bucket'",
            2,
        ),
    ]:
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        started = time.time()
        assert cli(["embed", "--input", source, *args]) == status
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert time.time() - started < 60  # no outage to wait out before the work starts
    assert not s3fs.S3FileSystem(**s3.storage_options()).exists("test/mistakes/out")


def test_model_processor_mismatch_and_missing_processor_fail_before_work(model_dir, images, tmp_path, capsys):
    broken = tmp_path / "model"
    vitmae.ViTMAEModel.from_pretrained(model_dir).save_pretrained(broken)
    assert cli(["embed", "--input", str(images), "--output", str(tmp_path / "o"), "--model", str(broken)]) == 2
    assert "has no preprocessor_config.json" in capsys.readouterr().err
    vitmae.ViTImageProcessor(size=96).save_pretrained(broken)
    assert cli(["embed", "--input", str(images), "--output", str(tmp_path / "o"), "--model", str(broken)]) == 2
    assert (
        "the processor resizes to {'height': 96, 'width': 96} but the model expects 224x224" in capsys.readouterr().err
    )
    vitmae.ViTImageProcessor(size=224, do_resize=False).save_pretrained(broken)
    assert cli(["embed", "--input", str(images), "--output", str(tmp_path / "o"), "--model", str(broken)]) == 2
    assert "the processor resizes to nothing (do_resize is false)" in capsys.readouterr().err
    vitmae.ViTImageProcessor(size=224).save_pretrained(broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    assert cli(["embed", "--input", str(images), "--output", str(tmp_path / "o"), "--model", str(broken)]) == 2
    assert "cannot read " in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing is created before the checks pass


@pytest.mark.slow
def test_s3_input_model_and_output(ray_cluster, s3, model_dir, photo_paths, monkeypatch):
    import s3fs

    fs = s3fs.S3FileSystem(**s3.storage_options())
    names = [p.name for p in photo_paths[:2]] + ["odd [1].jpg"]  # a key with glob characters is read as named
    for name, p in zip(names, photo_paths):
        fs.pipe(f"test/embed/photos/{name}", p.read_bytes())
    fs.pipe("test/embed/photos/broken.jpg", b"\xff\xd8\xff")
    fs.pipe("test/embed/photos/deleted.jpg", photo_paths[0].read_bytes())
    fs.put(str(model_dir), "test/embed/model", recursive=True)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_key)

    def list_then_delete(*args):
        yield from iter_listing(*args)
        fs.rm("test/embed/photos/deleted.jpg")  # gone between the listing and the read

    monkeypatch.setattr(pipeline.embed.run, "iter_listing", list_then_delete)
    manifest = run(
        EmbedConfig(
            input="s3://test/embed/photos/",
            output="s3://test/embed/run",
            model="s3://test/embed/model",
            infer=InferConfig(mask_ratio=0.75),
            storage=StorageConfig(s3.endpoint_url),
            num_gpus=0,
        )
    )
    assert (manifest["counts"]["listed"], manifest["counts"]["embedded"], manifest["counts"]["failed"]) == (5, 3, 2)
    embedded, errors, _ = read_run("s3://test/embed/run", s3_storage(s3))
    assert sorted(embedded) == sorted(f"s3://test/embed/photos/{name}" for name in names)
    assert all(r["etag"] for r in embedded.values())
    assert errors["s3://test/embed/photos/deleted.jpg"]["error"] == "object not found (deleted or moved after listing)"
    assert fs.exists("test/embed/run/runs/_delta_log")


@pytest.mark.slow  # a job through the head's job agent
def test_job_submission_to_a_local_head(ray_cluster, model_dir, two_photos, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(ray_cluster)
    job = submit_job(
        client,
        f"{sys.executable} -m jobs.embed --input {two_photos} --output {tmp_path / 'out'} "
        f"--model {model_dir} --num_gpus 0",
        {"PYTHONPATH": str(Path(__file__).parents[1])},
    )
    deadline = time.time() + 240
    while (
        client.get_job_status(job) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
        and time.time() < deadline
    ):
        time.sleep(2)
    logs = client.get_job_logs(job)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs[-3000:]
    assert "embedded 2, failed 0" in logs
    assert read_run(tmp_path / "out")[2]["counts"]["embedded"] == 2


@pytest.mark.slow  # a Ray of its own
def test_without_a_ray_address_the_job_starts_its_own_local_ray(model_dir, two_photos, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.embed",
            "--input",
            str(two_photos),
            "--output",
            str(tmp_path / "out"),
            "--model",
            str(model_dir),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).parents[1],
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "embedded 2, failed 0" in done.stdout
    manifest = read_run(tmp_path / "out")[2]
    assert (
        manifest["counts"]["embedded"] == 2
        and manifest["resources"]["dashboard"] is False
        and manifest["resources"]["cpu_threads"] >= 1
    )


def test_decode_mode_reaches_the_cpu_stage():
    """decode.mode is a setting of the run (so of its record and of what its queries use); fast by default."""
    flags = ["--input", "in", "--output", "out", "--model", "m"]
    exact, default = (parse(embed_job.COMMAND, flags + extra)[0] for extra in (["--decode.mode", "exact"], []))
    assert (exact.decode.mode, default.decode.mode) == ("exact", "fast")


def test_compile_reaches_the_model_actors():
    """infer.compile is a setting of the run (so of its record) that every model actor's config carries."""
    flags = ["--input", "in", "--output", "out", "--model", "m"]
    on, off = (parse(embed_job.COMMAND, flags + extra)[0] for extra in (["--infer.compile", "true"], []))
    assert on.infer.compile and not off.infer.compile


@pytest.mark.slow  # two runs
def test_overwrite_removes_everything_an_earlier_run_wrote(ray_cluster, model_dir, two_photos, tmp_path):
    """Every name under a run folder is in `layout.RUN_FILES`, so --overwrite leaves no ranking of a run that is
    gone."""
    output = tmp_path / "run"
    args = [
        "embed",
        "--input",
        str(two_photos),
        "--output",
        str(output),
        "--model",
        str(model_dir),
        "--infer.mask_ratio",
        "0.75",
    ]
    assert cli(args) == 0
    rank_anomalies(AnomalyConfig(str(output)), Storage())
    find_duplicates(DuplicateConfig(str(output)), Storage())
    written = {p.name for p in output.iterdir()}
    assert {ANOMALIES_FILE, DUPLICATES_FILE} <= written <= {name.split("/")[0] for name in RUN_FILES}
    (two_photos / "third.png").write_bytes((two_photos / sorted(os.listdir(two_photos))[0]).read_bytes())
    assert cli([*args, "--overwrite", "true"]) == 0
    assert not (output / ANOMALIES_FILE).exists() and not (output / DUPLICATES_FILE).exists()
    assert read_run(output)[2]["counts"]["embedded"] == 3


@pytest.mark.slow  # two runs
def test_a_failed_index_fails_the_run_and_keeps_the_embeddings(ray_cluster, model_dir, two_photos, tmp_path, capsys):
    output = tmp_path / "run"
    args = ["embed", "--input", str(two_photos), "--output", str(output), "--model", str(model_dir)]
    assert cli([*args, "--index.index_type", "flat", "--index.memory_budget_gb", "1e-9"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    err = err.splitlines()[-1]  # Ray Data's progress lines come before
    assert err.startswith("vitmae embed: error: the tables are updated, but the index could not be"), err
    assert "index_type flat needs about" in err and f"vitmae index --run {output}" in err
    embedded, _, manifest = read_run(output)
    assert len(embedded) == 2 and "over the memory_budget_gb" in manifest["index"]["error"]
    assert not (output / "index").exists()
    one = tmp_path / "one"
    one.mkdir()
    (one / "a.png").write_bytes(next(two_photos.iterdir()).read_bytes())
    assert cli(["embed", "--input", str(one), "--output", str(tmp_path / "single"), "--model", str(model_dir)]) == 0
    assert read_run(tmp_path / "single")[2]["index"] is None  # too few: a warning


def test_a_bug_is_one_line_with_its_traceback_behind_debug(monkeypatch, capsys):
    def bug(config):
        raise RuntimeError("boom\nsecond line of the message")

    monkeypatch.setattr(embed_job, "run", bug)
    args = ["embed", "--input", "in", "--output", "out", "--model", "m"]
    assert cli(args) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "vitmae embed: error: internal error, RuntimeError: boom "
        "(run again with --debug (or VITMAE_DEBUG=1) for the traceback)"
    )
    assert cli([*args, "--debug"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "second line of the message" in err
    monkeypatch.setenv("VITMAE_DEBUG", "1")
    assert cli(args) == 1 and "Traceback" in capsys.readouterr().err


def test_four_masks_by_default_when_the_loss_is_scored():
    config, _ = parse(
        embed_job.COMMAND, ["--input", "i", "--output", "o", "--model", "m", "--infer.mask_ratio", "0.75"]
    )
    assert config.infer.loss_samples == 4 == InferConfig().loss_samples
