"""Storage outages a long run meets: the object store down or hung for tens of seconds in the middle of a run is waited
out; one longer than the wait stops the run, and the next goes on; a table the store does not answer for is tried
until the wait is over."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import s3_storage
from pictures import photo
from runs import read_run
from s3server import S3Server

from pipeline.embed.run import EmbedConfig, run
from pipeline.retry import retrying
from pipeline.storage import StorageConfig
from pipeline.tables import dataset, open_table

OUTAGE_S = 20  # the shortest outage a run must wait out
IMAGES = 24


@pytest.fixture
def store(model_dir, tmp_path):
    """An S3 server of the test's own (it is killed), with `IMAGES` photographs and the model."""
    import s3fs

    server = S3Server().start()
    try:
        server.create_bucket("faults")
        fs = s3fs.S3FileSystem(**server.storage_options())
        for i in range(IMAGES):
            path = tmp_path / f"{i}.png"
            photo(i).save(path)
            fs.put(str(path), f"faults/photos/{i:02d}.png")
        fs.put(str(model_dir), "faults/model", recursive=True)
        yield server
    finally:
        server.stop()


def commits(server: S3Server) -> int:
    table = open_table("s3://faults/out/embeddings", s3_storage(server))
    return 0 if table is None else sum(h.get("vitmae.commit") == "add" for h in table.history())


def run_in_thread(config: EmbedConfig) -> tuple[threading.Thread, dict]:
    """run(config) in a thread; its record or its error lands in the dict."""
    result: dict = {}

    def embed() -> None:
        try:
            result["record"] = run(config)
        except Exception as err:  # the test reads it
            result["error"] = err

    job = threading.Thread(target=embed, daemon=True)
    job.start()
    return job, result


def wait_for_a_commit(store: S3Server, job: threading.Thread) -> None:
    deadline = time.time() + 120
    while commits(store) < 1:
        assert time.time() < deadline and job.is_alive(), "the run committed nothing"
        time.sleep(0.2)


def config_for(store: S3Server, **overrides) -> EmbedConfig:
    settings = dict(
        input="s3://faults/photos/",
        output="s3://faults/out",
        model="s3://faults/model",
        storage=StorageConfig(store.endpoint_url, overrides.pop("retry_seconds", 120.0)),
        num_actors=1,
        batch_size=2,
        commit_rows=4,
        commit_seconds=0,
    )
    return EmbedConfig(**{**settings, **overrides})


@pytest.mark.slow  # a 20 s outage in the middle of a run
@pytest.mark.parametrize("outage", ["killed", "frozen"])
def test_a_storage_outage_mid_run_costs_time_not_images(ray_cluster, store, monkeypatch, outage):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", store.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", store.secret_key)
    job, result = run_in_thread(config_for(store))
    wait_for_a_commit(store, job)
    if outage == "killed":
        store.kill()
        time.sleep(OUTAGE_S)
        store.restart()
    else:
        store.freeze()
        time.sleep(OUTAGE_S)
        store.thaw()
    job.join(timeout=300)
    assert "record" in result, result.get("error", "the run did not finish")
    embedded, errors, record = read_run("s3://faults/out", s3_storage(store))
    assert len(embedded) == IMAGES and not errors, errors
    assert record["counts"]["embedded"] == IMAGES and record["commits"] >= 2
    assert record["seconds"] > OUTAGE_S  # the outage fell inside the run, and was waited out


@pytest.mark.slow  # the store killed, then two runs
def test_an_outage_longer_than_the_wait_stops_the_run_and_the_next_goes_on(ray_cluster, store, monkeypatch):
    from jobs.errors import TRY_LATER, exit_code, report

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", store.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", store.secret_key)
    job, result = run_in_thread(config_for(store, retry_seconds=3))
    wait_for_a_commit(store, job)
    store.kill()
    job.join(timeout=300)
    assert "error" in result, "the run went on without its storage"
    message = report(result["error"], False, "vitmae embed")
    assert "the storage stayed unreachable for 3 s" in message and "internal error" not in message, message
    assert exit_code(result["error"]) == TRY_LATER
    store.restart()
    storage = s3_storage(store)
    committed = retrying(  # the server may take a moment to answer again
        lambda: dataset(
            open_table("s3://faults/out/embeddings", storage), "s3://faults/out/embeddings", storage
        ).count_rows(),
        storage,
        "counting the committed rows",
    )
    assert committed < IMAGES
    record = run(config_for(store))
    embedded, errors, _ = read_run("s3://faults/out", s3_storage(store))
    assert len(embedded) == IMAGES and not errors and record["counts"]["embedded"] == IMAGES - committed


def test_a_table_the_store_did_not_answer_for_is_waited_for(unreachable):
    """`open_table` says an unreachable store in one line, and `retrying` still waits it out (deltalake's own message
    for a refused connection says so only past its first line)."""
    from pipeline.retry import retrying
    from pipeline.storage_errors import StorageOutage
    from pipeline.tables import open_table

    tries = []

    def reach():
        tries.append(1)
        return open_table("s3://bucket/table", unreachable)

    with pytest.raises(StorageOutage, match="the storage stayed unreachable for 1 s"):
        retrying(reach, unreachable, "opening the table")
    assert len(tries) > 1
