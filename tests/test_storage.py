"""Storage settings: resolved from the flag and the AWS variables, and a secret that no log, error, repr or file
of a whole embed, index, search, anomalies and pre-training run on the S3 fixture ever shows."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import pytest

from jobs.cli import main as cli
from pipeline.embed.preprocess import PreprocessConfig
from pipeline.storage import Storage, read_uri, write_uri


def test_repr_hides_the_credentials_and_pickling_keeps_them():
    storage = Storage("http://127.0.0.1:9000", "AKEXAMPLE", "canary-secret-value", "canary-token-value")
    for text in (repr(storage), str(storage), repr(PreprocessConfig({}, storage=storage))):
        assert "canary" not in text and "AKEXAMPLE" not in text and "http://127.0.0.1:9000" in text
    again = pickle.loads(pickle.dumps(storage))  # Ray ships it to workers this way
    assert again == storage and again.options("s3://b/k")["secret"] == "canary-secret-value"


def test_environment_and_flag(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    options = Storage.from_environment().options("s3://b/k")  # the AWS SDK's own chain, with the clients' timeouts
    assert set(options) == {"config_kwargs"} and set(options["config_kwargs"]) == {"connect_timeout", "read_timeout"}
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://env:1")
    assert Storage.from_environment().endpoint == "http://env:1"
    assert Storage.from_environment("http://flag:2").endpoint == "http://flag:2"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    assert "key" not in Storage.from_environment().options("s3://b/k")  # a key without its secret is no credential


def test_one_file_written_and_read_back(tmp_path):
    write_uri(str(tmp_path / "a" / "b.bin"), b"payload", Storage())
    assert read_uri(str(tmp_path / "a" / "b.bin"), Storage()) == b"payload"
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.bin"]  # no temporary file left
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_uri(str(tmp_path / "missing"), Storage())


def everything_under(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


def test_the_secret_reaches_no_log_error_or_file(ray_cluster, s3, model_dir, photo_paths, tmp_path, monkeypatch, capsys, caplog):
    import ray
    import s3fs

    canary = s3.secret_key
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", canary)
    caplog.set_level(logging.DEBUG)
    fs = s3fs.S3FileSystem(**s3.storage_options())
    for p in photo_paths[:4]:
        fs.pipe(f"test/canary/photos/{p.name}", p.read_bytes())
    fs.pipe("test/canary/photos/broken.jpg", b"\xff\xd8\xff")
    fs.put(str(model_dir), "test/canary/model", recursive=True)
    endpoint = ["--storage.endpoint", s3.endpoint_url]
    run, photo = "s3://test/canary/run", f"s3://test/canary/photos/{photo_paths[0].name}"
    assert cli(["embed", "--input", "s3://test/canary/photos/", "--output", run, "--model", "s3://test/canary/model",
                           "--infer.mask_ratio", "0.75", *endpoint]) == 0
    assert cli(["index", "--run", run, *endpoint]) == 0
    assert cli(["search", "--run", run, "--image", photo, "--png", "s3://test/canary/search.png", *endpoint]) == 0
    assert cli(["anomalies", "--run", run, "--png", "s3://test/canary/anomalies.png", *endpoint]) == 0
    assert cli(["pretrain", "--input", "s3://test/canary/photos/", "--output", "s3://test/canary/pretrain", "--preset", "tiny",
                              "--image_size", "32", "--patch_size", "8", "--epochs", "1", "--batch_size", "2",
                              "--cpus_per_worker", "0.5", "--reconstructions", "1", *endpoint]) == 0
    # Mistakes and failures on the way: their messages too.
    assert cli(["search", "--run", run, "--path", "s3://test/canary/photos/none.jpg", *endpoint]) == 2
    assert cli(["embed", "--input", "s3://test/canary/nowhere/", "--output", "s3://test/canary/run2",
                           "--model", "s3://test/canary/model", *endpoint]) == 2
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", canary + "-wrong")
    assert cli(["index", "--run", run, *endpoint]) != 0
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", canary)

    captured = capsys.readouterr()
    assert canary not in captured.out + captured.err
    assert canary not in caplog.text and all(canary not in repr(r.args) for r in caplog.records)
    written = {key: fs.cat_file(key) for key in fs.find("test/canary/") if not key.startswith("test/canary/photos")}
    assert any("runs/_delta_log" in key for key in written) and any(key.endswith("metrics.json") for key in written)
    assert not [key for key, data in written.items() if canary.encode() in data]
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    assert (session / "logs").is_dir() and canary.encode() not in everything_under(session / "logs")
    results = Path(os.path.expanduser("~/ray_results"))  # Ray Train's own run records
    assert not results.exists() or canary.encode() not in everything_under(results)


@pytest.fixture
def unreachable() -> Storage:
    """S3 settings whose endpoint is a port nothing listens on, waiting out an outage for 1 s."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return Storage(f"http://127.0.0.1:{port}", "key", "secret", retry_seconds=1)


def test_a_table_the_store_did_not_answer_for_is_waited_for(unreachable):
    """`open_table` says an unreachable store in one line, and `retrying` still waits it out (deltalake's own message
    for a refused connection says so only past its first line)."""
    from pipeline.retry import StorageUnavailable, retrying
    from pipeline.tables import open_table

    tries = []

    def reach():
        tries.append(1)
        return open_table("s3://bucket/table", unreachable)

    with pytest.raises(StorageUnavailable, match="the storage stayed unreachable for 1 s"):
        retrying(reach, unreachable, "opening the table")
    assert len(tries) > 1


def test_a_file_the_store_did_not_answer_for_is_not_said_missing(unreachable):
    """pyarrow's own handler of fsspec filesystems says any failure to open a file as FileNotFoundError, which no
    retry waits out; a read task that opens the run's work file during an outage must wait instead."""
    from pipeline.retry import transient

    fs, path = unreachable.arrow_filesystem("s3://bucket/work.parquet")
    with pytest.raises(Exception) as caught:
        fs.open_input_file(path)
    assert not isinstance(caught.value, FileNotFoundError) and transient(caught.value), repr(caught.value)
