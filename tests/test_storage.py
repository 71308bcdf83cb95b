"""Storage settings: resolved from the flag and the AWS variables, and a secret that no log, error, repr or file
of a whole embed, index, search, anomalies and pre-training run on the S3 fixture ever shows; refused credentials and
permissions, missing buckets and an endpoint that does not answer, said in one line on every side of a run; local
paths made absolute."""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import pickle
import uuid
from pathlib import Path

import botocore.exceptions
import fsspec
import pytest
from conftest import clustered_vectors, write_embeddings
from s3fs.errors import translate_boto_error

import pipeline.embed.run
from jobs.cli import main as cli
from pipeline.embed.embedder import DecodingEmbedder, Embedder
from pipeline.embed.preprocess import PreprocessConfig
from pipeline.embed.query import QueryEmbedder
from pipeline.embed.run import EmbedConfig, run
from pipeline.embed.write import WriteConfig
from pipeline.layout import INFO_FILE
from pipeline.retrieval.anomalies import AnomalyConfig, rank_anomalies
from pipeline.retrieval.duplicates import DuplicateConfig, find_duplicates
from pipeline.retrieval.index import build_index
from pipeline.retrieval.index_update import update_index
from pipeline.retrieval.search import Searcher
from pipeline.schema import ERRORS_SCHEMA
from pipeline.storage import Storage, StorageConfig, absolute_uri, read_uri, run_folder, write_uri
from pipeline.storage_errors import (
    CREDENTIAL_SETTINGS,
    ENDPOINT_SETTING,
    PERMISSION_SETTING,
    AccessDenied,
    StorageAttemptUnreachable,
    storage_error,
)
from pipeline.tables import RunTable, open_table
from pipeline.train.evaluate import evaluate
from pipeline.train.loop import LoopConfig
from pipeline.train.reconstruct import ReconstructConfig, save_reconstructions
from vitmae.errors import NotFound
from vitmae.processor import MAE_PROCESSOR


def test_repr_hides_the_credentials_and_pickling_keeps_them():
    storage = Storage("http://127.0.0.1:9000", "AKEXAMPLE", "canary-secret-value", "canary-token-value")
    for text in (repr(storage), str(storage), repr(PreprocessConfig({}, storage=storage))):
        assert "canary" not in text and "AKEXAMPLE" not in text and "http://127.0.0.1:9000" in text
    again = pickle.loads(pickle.dumps(storage))  # Ray ships it to workers this way
    assert again == storage and again.options("s3://b/k")["secret"] == "canary-secret-value"


def test_environment_and_flag(monkeypatch):
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
    ):
        monkeypatch.delenv(name, raising=False)
    options = Storage.from_environment().options("s3://b/k")  # the AWS SDK's own chain, with the clients' timeouts
    assert set(options) == {"config_kwargs"} and set(options["config_kwargs"]) == {"connect_timeout", "read_timeout"}
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://env:1")
    assert Storage.from_environment().endpoint == "http://env:1"
    assert Storage.from_environment("http://flag:2").endpoint == "http://flag:2"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    assert "key" not in Storage.from_environment().options("s3://b/k")  # a key without its secret is no credential


def test_an_omitted_storage_is_the_environments_everywhere(s3, model_dir, photo_paths, monkeypatch):
    """Every public function, class and stage config that takes an optional storage, given none, reaches the store
    that the AWS_* variables name, with the settings `Storage.from_environment` makes of them."""
    for name in ("AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3.environment().items():
        monkeypatch.setenv(name, value)
    expected = Storage.from_environment()
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **s3.storage_options())
    root = f"s3://test/omitted-{uuid.uuid4().hex}"
    fs.put(str(model_dir), f"{root}/model", recursive=True)
    images = [f"{root}/photos/{p.name}" for p in photo_paths[:3]]
    for uri, p in zip(images, photo_paths):
        fs.pipe_file(uri, p.read_bytes())
    run_uri, model = f"{root}/run", f"{root}/model"
    write_embeddings(run_uri, clustered_vectors(40, 8), expected)
    used: list[Storage] = []  # the settings of every storage asked for options
    options, delta_options = Storage.options, Storage.delta_options
    monkeypatch.setattr(Storage, "options", lambda self, uri: used.append(self) or options(self, uri))
    monkeypatch.setattr(Storage, "delta_options", lambda self, uri: used.append(self) or delta_options(self, uri))

    def no_finished_run() -> None:
        with pytest.raises(NotFound, match="holds no finished run"):
            QueryEmbedder(run_uri)

    calls = {
        "build_index": lambda: build_index(run_uri),
        "update_index": lambda: update_index(run_uri),
        "Searcher": lambda: Searcher(run_uri).search_vectors(clustered_vectors(1, 8), k=2),
        "rank_anomalies": lambda: rank_anomalies(AnomalyConfig(run_uri, by="knn", k=2)),
        "find_duplicates": lambda: find_duplicates(DuplicateConfig(run_uri)),
        "QueryEmbedder": no_finished_run,
        "Embedder": lambda: Embedder(model),
        "DecodingEmbedder": lambda: DecodingEmbedder(model, PreprocessConfig(MAE_PROCESSOR)),
        "evaluate": lambda: evaluate(model, images, [0, 0, 1], loss_samples=1, k=1),
        "save_reconstructions": lambda: save_reconstructions(
            ReconstructConfig(model, tuple(images[:1]), f"{root}/r.png")
        ),
    }
    for name, call in calls.items():
        used.clear()
        call()
        assert used and all(storage == expected for storage in used), name
    assert fs.exists(f"{run_uri}/{INFO_FILE}") and fs.exists(f"{root}/r.png")
    assert PreprocessConfig(MAE_PROCESSOR).storage == expected and WriteConfig(run_uri, "run").storage == expected
    assert next(f for f in dataclasses.fields(LoopConfig) if f.name == "storage").default_factory() == expected


def test_one_file_written_and_read_back(tmp_path):
    write_uri(str(tmp_path / "a" / "b.bin"), b"payload", Storage())
    assert read_uri(str(tmp_path / "a" / "b.bin"), Storage()) == b"payload"
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.bin"]  # no temporary file left
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_uri(str(tmp_path / "missing"), Storage())


def everything_under(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow  # every command on S3: ~30 s
def test_the_secret_reaches_no_log_error_or_file(
    ray_cluster, s3, model_dir, photo_paths, tmp_path, monkeypatch, capsys, caplog
):
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
    assert (
        cli(
            [
                "embed",
                "--input",
                "s3://test/canary/photos/",
                "--output",
                run,
                "--model",
                "s3://test/canary/model",
                "--infer.mask_ratio",
                "0.75",
                *endpoint,
            ]
        )
        == 0
    )
    assert cli(["index", "--run", run, *endpoint]) == 0
    assert cli(["search", "--run", run, "--image", photo, "--png", "s3://test/canary/search.png", *endpoint]) == 0
    assert cli(["anomalies", "--run", run, "--png", "s3://test/canary/anomalies.png", *endpoint]) == 0
    assert (
        cli(
            [
                "pretrain",
                "--input",
                "s3://test/canary/photos/",
                "--output",
                "s3://test/canary/pretrain",
                "--preset",
                "tiny",
                "--image_size",
                "32",
                "--patch_size",
                "8",
                "--epochs",
                "1",
                "--batch_size",
                "2",
                "--cpus_per_worker",
                "0.5",
                "--reconstructions",
                "1",
                *endpoint,
            ]
        )
        == 0
    )
    # Mistakes and failures on the way: their messages too.
    assert cli(["search", "--run", run, "--path", "s3://test/canary/photos/none.jpg", *endpoint]) == 2
    assert (
        cli(
            [
                "embed",
                "--input",
                "s3://test/canary/nowhere/",
                "--output",
                "s3://test/canary/run2",
                "--model",
                "s3://test/canary/model",
                *endpoint,
            ]
        )
        == 2
    )
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", canary + "-wrong")
    assert cli(["index", "--run", run, *endpoint]) != 0
    # The store's refusals: a wrong secret, a session token the store does not know, a key that may not write.
    refused = [
        "embed",
        "--input",
        "s3://test/canary/photos/",
        "--output",
        "s3://test/canary/refused",
        "--model",
        "s3://test/canary/model",
        *endpoint,
    ]
    assert cli(refused) == 77
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", canary)
    token = f"canary-token-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    assert cli(refused) == 77
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    for name, value in s3.environment(read_only=True).items():
        monkeypatch.setenv(name, value)
    assert cli(refused) == 77
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", canary)

    captured = capsys.readouterr()
    assert captured.err.count("s3://test/canary/refused: the store refused") == 3, captured.err
    for secret in (canary, s3.reader_secret):
        assert secret not in captured.out + captured.err
        assert secret not in caplog.text and all(secret not in repr(r.args) for r in caplog.records)
    # botocore's own DEBUG records of a signed request show its headers, the session token's among them (the jobs log
    # at INFO); no other record and no message does.
    assert token not in captured.out + captured.err
    assert not [
        r
        for r in caplog.records
        if token in r.getMessage() and not (r.name.startswith("botocore") and r.levelno == logging.DEBUG)
    ]
    written = {key: fs.cat_file(key) for key in fs.find("test/canary/") if not key.startswith("test/canary/photos")}
    assert any("runs/_delta_log" in key for key in written) and any(key.endswith("metrics.json") for key in written)
    assert not [key for key, data in written.items() if canary.encode() in data]
    session = Path(ray._private.worker._global_node.get_session_dir_path())
    assert (session / "logs").is_dir() and canary.encode() not in everything_under(session / "logs")
    results = Path(os.path.expanduser("~/ray_results"))  # Ray Train's own run records
    assert not results.exists() or canary.encode() not in everything_under(results)


@pytest.mark.slow  # connection retries to a port nothing listens on: 7 to 14 s
def test_a_file_the_store_did_not_answer_for_is_not_said_missing(unreachable):
    """pyarrow's own handler of fsspec filesystems says any failure to open a file as FileNotFoundError, which no
    retry waits out; a read task that opens the run's work file during an outage must wait instead."""
    from pipeline.storage_errors import transient

    fs, path = unreachable.arrow_filesystem("s3://bucket/work.parquet")
    with pytest.raises(Exception) as caught:
        fs.open_input_file(path)
    assert not isinstance(caught.value, FileNotFoundError) and transient(caught.value), repr(caught.value)


# What the store says, as each library raises it, for the cases the S3 fixture cannot make.
ARROW = "\n          \x1b[31m↳\x1b[0m "  # between the levels of an object_store text


def client_error(code: str, status: int = 403, operation: str = "ListObjectsV2") -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": "the server's words"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


def object_store_error(status: str, code: str | None, first: str = "Kernel error -> Generic S3 error") -> OSError:
    """deltalake's OSError for an S3 answer, in the form its object_store gave the fixture's answers."""
    answer = (
        f'{ARROW}<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>m</Message></Error>\n'
        if code
        else ""
    )
    return OSError(
        f"{first}{ARROW}Error performing GET http://127.0.0.1:9000/bucket/out/_delta_log/_last_checkpoint in "
        f"1.2ms - Server returned non-2xx status code{ARROW}{status}{answer}"
    )


def head_forbidden() -> PermissionError:
    """s3fs's PermissionError for a 403 answer to a HEAD request, which has no body and so no S3 error code."""
    try:
        raise client_error("403", operation="HeadObject")
    except botocore.exceptions.ClientError as err:
        return translate_boto_error(err, set_cause=False)


EXPIRED = "the store refused the credentials (ExpiredToken: the session token has expired)"
CANARY_STORAGE = Storage("http://127.0.0.1:9000", "AKCANARY", "canary-secret", "canary-token")


CREDENTIALS, PERMISSION, ENDPOINT = (
    f"; check {CREDENTIAL_SETTINGS}",
    f"; check {PERMISSION_SETTING}",
    f"; check the URI and {ENDPOINT_SETTING}",
)


@pytest.mark.parametrize(
    "raised, kind, expected, setting",
    [
        (client_error("ExpiredToken", 400), AccessDenied, EXPIRED, CREDENTIALS),  # botocore
        (
            translate_boto_error(client_error("ExpiredToken", 400)),
            AccessDenied,
            EXPIRED,
            CREDENTIALS,
        ),  # s3fs, from botocore's
        (object_store_error("400 Bad Request", "ExpiredToken"), AccessDenied, EXPIRED, CREDENTIALS),  # deltalake
        (
            translate_boto_error(client_error("InvalidToken", 400)),
            AccessDenied,
            "(InvalidToken: the session token is malformed",
            CREDENTIALS,
        ),
        (
            client_error("TokenRefreshRequired", 400),
            AccessDenied,
            "(TokenRefreshRequired: the session token must be refreshed)",
            CREDENTIALS,
        ),
        (
            object_store_error("403 Forbidden", "InvalidAccessKeyId"),
            AccessDenied,
            "(InvalidAccessKeyId: no such access key)",
            CREDENTIALS,
        ),
        (
            botocore.exceptions.NoCredentialsError(),
            AccessDenied,
            "(NoCredentials: no credentials were found)",
            CREDENTIALS,
        ),
        (
            object_store_error(
                "401 Unauthorized", None, "The operation lacked valid authentication credentials for path out"
            ),
            AccessDenied,
            "the store refused the credentials (401 Unauthorized)",
            CREDENTIALS,
        ),
        (
            translate_boto_error(client_error("AccessDenied")),
            AccessDenied,
            "the store refused the permission to read (AccessDenied)",
            PERMISSION,
        ),
        (head_forbidden(), AccessDenied, "the store refused to read it (403 Forbidden)", f", and {PERMISSION_SETTING}"),
        (
            object_store_error("404 Not Found", "NoSuchBucket"),
            NotFound,
            "no such bucket 'bucket' at http://127.0.0.1:9000",
            ENDPOINT,
        ),
        (
            botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:9000/bucket"),
            StorageAttemptUnreachable,
            'cannot reach the storage at http://127.0.0.1:9000 (Could not connect to the endpoint URL: "http://127.0.0.1:9000/bucket")',
            f"; check {ENDPOINT_SETTING}",
        ),
        (
            OSError(
                f"Generic S3 error{ARROW}error sending request{ARROW}tcp connect error{ARROW}"
                "Connection refused (os error 111)\n"
            ),
            StorageAttemptUnreachable,
            "at http://127.0.0.1:9000 (Connection refused (os error 111))",
            f"; check {ENDPOINT_SETTING}",
        ),
    ],
)
def test_what_the_store_says_becomes_one_line_naming_the_uri_and_the_setting(raised, kind, expected, setting):
    err = storage_error(raised, "s3://bucket/out", CANARY_STORAGE, "read")
    assert type(err) is kind and str(err).startswith("s3://bucket/out: ") and expected in str(err), str(err)
    assert str(err).endswith(setting) and len(str(err).splitlines()) == 1, str(err)
    assert "canary" not in str(err) and "AKCANARY" not in str(err)


def test_other_failures_stay_as_they_are(tmp_path):
    for err in (
        FileNotFoundError(errno.ENOENT, "bucket/out/missing.jpg"),
        ValueError("a timeout of -1 is no timeout"),
        NotFound("--model s3://bucket/m has no config.json"),
        translate_boto_error(client_error("NoSuchKey", 404)),
    ):
        assert storage_error(err, "s3://bucket/out", CANARY_STORAGE) is err
    local = storage_error(
        PermissionError(errno.EACCES, "Permission denied", str(tmp_path)), str(tmp_path), Storage(), "write"
    )
    assert isinstance(local, AccessDenied) and str(local).startswith(f"{tmp_path}: permission denied to write")


@pytest.fixture
def no_ray(monkeypatch):
    """Fails a run that gets as far as starting Ray: the refusals must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("the run got as far as starting Ray")

    monkeypatch.setattr(pipeline.embed.run, "_ray_for", refuse)


@pytest.fixture(scope="module")
def sides(s3, model_dir, photo_paths, tmp_path_factory) -> dict[str, tuple[str, str]]:
    """The input and the model of a run, each as a local path and as an s3:// URI on the fixture."""
    fs = fsspec.filesystem("s3", skip_instance_cache=True, **s3.storage_options())
    photos = tmp_path_factory.mktemp("refusals")
    for p in photo_paths[:2]:
        (photos / p.name).write_bytes(p.read_bytes())
        fs.pipe_file(f"test/refusals/photos/{p.name}", p.read_bytes())
    fs.put(str(model_dir), "test/refusals/model", recursive=True)
    return {"input": (str(photos), "s3://test/refusals/photos/"), "model": (str(model_dir), "s3://test/refusals/model")}


def failed_run(
    s3, monkeypatch, secret_suffix: str = "", read_only: bool = False, endpoint: str | None = None, **uris: str
) -> BaseException:
    """What a run with the fixture's admin (or reader) key raises; `secret_suffix` makes its secret wrong."""
    key, secret = s3.credentials(read_only)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret + secret_suffix)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    with pytest.raises(Exception) as caught:
        run(EmbedConfig(**uris, storage=StorageConfig(endpoint or s3.endpoint_url), num_gpus=0))
    return caught.value


def written(uri: str, s3) -> bool:
    """Whether anything is at `uri` (on the fixture, as its admin sees it)."""
    if not uri.startswith("s3://"):
        return os.path.exists(uri)
    return fsspec.filesystem("s3", skip_instance_cache=True, **s3.storage_options()).exists(uri)


def uris_with(side: str, on_s3: str, sides, tmp_path) -> dict[str, str]:
    """Local input, model and output but `side`, which is `on_s3`."""
    return {"input": sides["input"][0], "model": sides["model"][0], "output": str(tmp_path / "out"), side: on_s3}


@pytest.mark.parametrize("side", ["input", "output", "model"])
def test_a_wrong_secret_is_said_on_every_side(side, s3, sides, no_ray, tmp_path, monkeypatch):
    uri = {**{name: found[1] for name, found in sides.items()}, "output": f"s3://test/refusals/{uuid.uuid4().hex}/out"}[
        side
    ]
    uris = uris_with(side, uri, sides, tmp_path)
    err = failed_run(s3, monkeypatch, "-wrong", **uris)
    assert isinstance(err, AccessDenied), repr(err)
    assert (
        str(err)
        == f"{uri}: the store refused the credentials (SignatureDoesNotMatch: the secret key does not match the "
        f"access key); check {CREDENTIAL_SETTINGS}"
    )
    assert not written(uris["output"], s3)


def test_a_read_only_key_is_refused_the_output_before_ray_starts(s3, sides, no_ray, monkeypatch):
    output = f"s3://test/refusals/{uuid.uuid4().hex}/out"
    err = failed_run(s3, monkeypatch, read_only=True, input=sides["input"][0], model=sides["model"][1], output=output)
    assert isinstance(err, AccessDenied), repr(err)
    assert str(err) == f"{output}: the store refused the permission to write (AccessDenied); check {PERMISSION_SETTING}"
    assert not written(output, s3)


@pytest.mark.parametrize("side", ["input", "output", "model"])
def test_a_missing_bucket_is_said_on_every_side(side, s3, sides, no_ray, tmp_path, monkeypatch):
    uri = f"s3://no-such-{side}/{side}"
    err = failed_run(s3, monkeypatch, **uris_with(side, uri, sides, tmp_path))
    assert isinstance(err, NotFound), repr(err)
    assert (
        str(err) == f"{uri}: no such bucket 'no-such-{side}' at {s3.endpoint_url}; check the URI and {ENDPOINT_SETTING}"
    )
    assert not written(f"s3://no-such-{side}", s3) and not written(str(tmp_path / "out"), s3)


def test_an_endpoint_that_does_not_answer_is_an_outage_naming_it(s3, sides, unreachable, no_ray, tmp_path, monkeypatch):
    output = "s3://test/refusals/unreachable/out"
    err = failed_run(s3, monkeypatch, endpoint=unreachable.endpoint, **uris_with("output", output, sides, tmp_path))
    assert isinstance(err, StorageAttemptUnreachable), repr(err)
    assert str(err).startswith(f"{output}: cannot reach the storage at {unreachable.endpoint} (Could not connect")
    assert str(err).endswith(f"; check {ENDPOINT_SETTING}")


def test_tables_and_run_folders_say_the_same(s3):
    """What `open_table`, `RunTable.open_or_create` (deltalake's texts) and `run_folder` (s3fs) raise."""
    key, secret = s3.credentials()
    wrong, reader = (
        Storage(s3.endpoint_url, key, secret + "-wrong"),
        Storage(s3.endpoint_url, *s3.credentials(read_only=True)),
    )
    table = f"s3://test/refusals/{uuid.uuid4().hex}/errors"
    with pytest.raises(AccessDenied, match=r"refused the credentials \(SignatureDoesNotMatch"):
        open_table(table, wrong)
    with pytest.raises(AccessDenied, match=r"refused the credentials \(SignatureDoesNotMatch"):
        run_folder(table, wrong)
    with pytest.raises(NotFound, match="no such bucket 'no-such-table'"):
        open_table("s3://no-such-table/errors", reader)
    with pytest.raises(NotFound, match="no such run folder"):
        run_folder(table, reader)
    with pytest.raises(AccessDenied, match=r"refused the permission to write \(AccessDenied\)"):
        RunTable.open_or_create(table, reader, ERRORS_SCHEMA, "run")
    assert not written(table, s3)


def test_s3_options_carry_the_session_token_of_temporary_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token")
    storage = Storage.from_environment("http://127.0.0.1:8333")
    options = storage.options("s3://bucket/photos/")
    assert options["client_kwargs"] == {"endpoint_url": "http://127.0.0.1:8333"}
    assert (options["key"], options["secret"], options["token"]) == ("key", "secret", "token")
    assert options["config_kwargs"]["read_timeout"] > 0  # a hung server is an outage, not a read that never returns
    assert storage.options("/local/photos") == {}
    assert "secret" not in repr(storage) and "token" not in repr(storage) and "key" not in repr(storage).split("(")[1]


def test_local_paths_become_absolute_and_uris_and_hub_ids_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "mae").mkdir(parents=True)
    assert absolute_uri("runs/today") == str(tmp_path / "runs" / "today")  # not there yet: an output
    assert absolute_uri("models/mae", may_be_hub_id=True) == str(tmp_path / "models" / "mae")
    assert absolute_uri("facebook/vit-mae-base", may_be_hub_id=True) == "facebook/vit-mae-base"
    assert absolute_uri("../models/mae", may_be_hub_id=True) == str(tmp_path.parent / "models" / "mae")  # no hub id
    assert absolute_uri("s3://bucket/runs/today") == "s3://bucket/runs/today"
