"""The service follows its run: a later embedding run commits a new table version, the index follows, and a live
service (uvicorn on loopback) switches to both without a restart and without failing a request in flight."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import numpy as np
import pyarrow as pa
import pytest
import uvicorn

from pipeline.embed.infer import InferConfig
from pipeline.embed.run import EmbedConfig, run
from pipeline.retrieval.index import IndexConfig
from pipeline.retrieval.index_update import update_index
from pipeline.service.app import create_app
from pipeline.service.config import ServeConfig
from pipeline.service.state import LiveRun, PathLookup
from pipeline.storage import Storage


@contextmanager
def live_server(config: ServeConfig, live: LiveRun) -> Iterator[str]:
    """The app on uvicorn in a thread, on a free loopback port; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(create_app(config, live), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_for(condition, seconds: float = 60.0, what: str = "the condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {seconds} s")


def embed(images, output, model_dir, index: bool = True) -> None:
    run(
        EmbedConfig(
            input=str(images),
            output=str(output),
            model=str(model_dir),
            infer=InferConfig(mask_ratio=0.75),
            batch_size=16,
            num_gpus=0,
            build_index=index,
        )
    )


@pytest.mark.slow  # runs embedded under a live service: ~30 s
def test_the_service_follows_the_run_without_failing_requests(ray_cluster, model_dir, gallery, tmp_path):
    images, output = tmp_path / "images", tmp_path / "run"
    images.mkdir()
    for name in [f"coffee-{i:02d}.png" for i in range(10)] + ["moon.png"]:
        shutil.copy(gallery / name, images / name)
    embed(images, output, model_dir)
    config = ServeConfig(run=str(output), check_seconds=0.2)
    live = LiveRun(config.run, Storage(), config.check_seconds)
    model = live.state.image_model
    with live_server(config, live) as base, httpx.Client(base_url=base, timeout=60) as client:
        before = client.get("/api/health").json()
        assert before["count"] == 11 and before["reloads"] == 0
        camera = f"file://{images / 'camera.png'}"
        assert client.get("/api/search", params={"path": camera}).status_code == 404

        failures, answered, stop = [], [0], threading.Event()

        def keep_searching() -> None:  # requests in flight through both switches
            with httpx.Client(base_url=base, timeout=60) as own:
                while not stop.is_set():
                    for response in (
                        own.get("/api/search", params={"path": f"file://{images / 'coffee-01.png'}", "k": 5}),
                        own.post("/api/search?k=3", content=(gallery / "coffee-07.png").read_bytes()),
                        own.get("/api/anomalies", params={"limit": 5}),
                    ):
                        answered[0] += 1
                        if response.status_code != 200:
                            failures.append(f"{response.request.url}: {response.status_code} {response.text}")

        searching = threading.Thread(target=keep_searching)
        searching.start()
        try:
            # A run that commits a new table version but leaves the index behind: the old version is still served.
            shutil.copy(gallery / "camera.png", images / "camera.png")
            shutil.copy(gallery / "page.png", images / "page.png")
            (images / "coffee-02.png").unlink()
            embed(images, output, model_dir, index=False)
            waiting = wait_for(lambda: client.get("/api/health").json()["pending"], what="the wait for the index")
            assert "waiting for its index" in waiting
            assert client.get("/api/health").json()["table_version"] == before["table_version"]
            # The index follows the table: the service switches to both.
            update_index(str(output), IndexConfig(), Storage())
            after = wait_for(
                lambda: (h := client.get("/api/health").json())["table_version"] != before["table_version"] and h,
                what="the switch to the new version",
            )
            time.sleep(1)  # requests on the new version too
        finally:
            stop.set()
            searching.join(timeout=120)
        assert not failures, failures[:3]
        assert answered[0] >= 6

        assert after["count"] == 12 and after["reloads"] == 1 and after["pending"] is None
        assert after["table_version"] > before["table_version"]
        assert live.state.image_model is model  # same model settings: not loaded again
        by_path = client.get("/api/search", params={"path": camera, "k": 3}).json()
        assert by_path["results"][0]["path"] == camera and by_path["table_version"] == after["table_version"]
        by_image = client.post("/api/search?k=1", content=(gallery / "page.png").read_bytes()).json()
        assert by_image["results"][0]["path"] == f"file://{images / 'page.png'}"
        gone = f"file://{images / 'coffee-02.png'}"
        assert client.get("/api/search", params={"path": gone}).status_code == 404
        assert client.get("/api/image", params={"path": gone}).status_code == 404
        anomalies = client.get("/api/anomalies", params={"limit": 500}).json()
        assert anomalies["total"] == 12 and anomalies["table_version"] == after["table_version"]
        assert gone not in {row["path"] for row in anomalies["results"]}

        # Images of the run that went or broke since: 404 and 415, one line each.
        (images / "coffee-05.png").unlink()
        (images / "coffee-06.png").write_bytes(b"no longer a picture")
        missing = client.get("/api/image", params={"path": f"file://{images / 'coffee-05.png'}"})
        assert missing.status_code == 404 and "no longer readable" in missing.json()["error"]
        broken = client.get("/api/image", params={"path": f"file://{images / 'coffee-06.png'}"})
        assert broken.status_code == 415 and "not an image" in broken.json()["error"]


def test_path_lookup_finds_every_path_and_nothing_else():
    rng = np.random.default_rng(0)
    paths = [f"s3://bucket/{rng.integers(1e9):09d}/{i}.jpg" for i in range(2000)]
    lookup = PathLookup(pa.array(paths))
    assert all(lookup.position(p) == i for i, p in enumerate(paths))
    assert (
        lookup.position("s3://bucket/") is None
        and lookup.position(paths[5] + "x") is None
        and lookup.position("") is None
    )
