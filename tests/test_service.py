"""The service's API on a small real run (the embedding job over real photographs): health, search, thumbnails, every
error as one JSON line, the token, what /api/image refuses to read, the metrics, and the page's files (the anomaly and
duplicate pages: test_rankings.py)."""

from __future__ import annotations

import io
import struct
import zlib
from importlib import resources

import numpy as np
import pytest
from conftest import GALLERY_IMAGES as IMAGES
from conftest import clustered_vectors, s3_storage, write_embeddings
from deltalake import DeltaTable
from fastapi.testclient import TestClient
from PIL import Image
from service_api import assert_error, serve, uri

from pipeline.retrieval.index import IndexConfig, build_index
from pipeline.retrieval.search import Searcher
from pipeline.service.app import create_app
from pipeline.service.config import ServeConfig
from pipeline.service.state import LiveRun
from pipeline.storage import write_uri

TOKEN = "s3cret-token-for-tests"


def test_health_says_what_is_served(client, gallery_run):
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["run"] == str(gallery_run) and health["count"] == IMAGES
    assert health["table_version"] == DeltaTable(str(gallery_run / "embeddings")).version()
    assert health["index"] == {
        "type": "flat",
        "metric": "cosine",
        "dimension": 64,
        "recall": 1.0,
        "recall_k": 10,
        "search_params": {},
    }
    assert health["image_search"] is True and health["image_search_error"] is None and health["pending"] is None
    assert health["heatmaps"] is True  # the gallery run keeps each patch's loss


def test_search_by_image_as_body_and_as_multipart(client, gallery):
    data = (gallery / "coffee-03.png").read_bytes()
    raw = client.post("/api/search?k=5", content=data, headers={"Content-Type": "image/png"})
    assert raw.status_code == 200, raw.text
    body = raw.json()
    assert [h["rank"] for h in body["results"]] == [1, 2, 3, 4, 5] and body["metric"] == "cosine"
    assert body["results"][0]["path"] == uri(gallery, "coffee-03.png") and body["results"][0]["score"] == pytest.approx(
        1, abs=1e-4
    )
    assert all(h["path"].rsplit("/", 1)[-1].startswith("coffee-") for h in body["results"])
    form = client.post("/api/search", params={"k": 5}, files={"image": ("q.png", data, "image/png")})
    assert form.status_code == 200 and form.json()["results"] == body["results"]


def test_search_by_path_and_by_vector(client, gallery, gallery_run):
    by_path = client.get("/api/search", params={"path": uri(gallery, "moon.png"), "k": 4}).json()
    assert by_path["query"] == uri(gallery, "moon.png") and by_path["results"][0]["path"] == uri(gallery, "moon.png")
    assert by_path["results"][0]["score"] == pytest.approx(1, abs=1e-5)
    local = client.get(
        "/api/search", params={"path": str(gallery / "moon.png"), "k": 4}
    ).json()  # a local path works too
    assert local["results"] == by_path["results"]
    vector = Searcher(str(gallery_run)).vector_of_path(uri(gallery, "moon.png"))
    by_vector = client.post("/api/search/vector?k=4", json={"vector": vector.tolist()}).json()
    assert [h["path"] for h in by_vector["results"]] == [h["path"] for h in by_path["results"]]
    np.testing.assert_allclose(
        [h["score"] for h in by_vector["results"]], [h["score"] for h in by_path["results"]], atol=1e-5
    )
    assert (
        len(client.get("/api/search", params={"path": uri(gallery, "moon.png"), "k": 1000}).json()["results"]) == IMAGES
    )


def bomb_png(width: int = 40_000, height: int = 40_000) -> bytes:
    """A PNG header that promises 1.6 gigapixels (and holds no pixels): refused before anything is decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def test_search_errors_are_one_line_with_a_4xx_status(client):
    assert_error(client.post("/api/search", content=b"certainly not an image"), 400, "not an image")
    assert_error(client.post("/api/search", content=bomb_png()), 400, "decompression bomb")
    assert_error(client.post("/api/search", content=b""), 400, "no image")
    assert_error(client.post("/api/search", files={"other": ("q.png", b"x", "image/png")}), 400, "image")
    assert_error(client.post("/api/search", content=b"\0" * ((1 << 20) + 1)), 413, "1 MB", "--max_upload_mb")

    def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(40):
            yield b"\0" * 65536

    assert_error(client.post("/api/search", content=chunks()), 413, "1 MB")
    assert_error(client.get("/api/search", params={"path": "file:///nowhere/x.png"}), 404, "not in the run")
    assert_error(client.get("/api/search"), 422, "path")
    assert_error(client.get("/api/search", params={"path": "x", "k": 0}), 422, "k:", "greater than or equal to 1")
    assert_error(client.get("/api/search", params={"path": "x", "k": 1001}), 422, "k:")
    assert_error(client.get("/api/search", params={"path": "x", "k": "ten"}), 422, "k:", "'ten'")
    assert_error(client.post("/api/search/vector", json={"vector": [1.0, 2.0]}), 400, "64 numbers, got 2")
    assert_error(client.post("/api/search/vector", json={"vector": [0.0] * 64}), 400, "not all zero")
    assert_error(client.post("/api/search/vector", json={"vectors": []}), 422, "vector")
    assert_error(client.get("/api/nothing"), 404, "no such route: /api/nothing")
    assert_error(client.delete("/api/search"), 405, "DELETE")


def test_thumbnails_of_the_run_and_of_nothing_else(client, gallery, tmp_path):
    response = client.get("/api/image", params={"path": uri(gallery, "coffee-03.png")})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    thumb = Image.open(io.BytesIO(response.content))
    assert thumb.format == "JPEG" and thumb.size == (160, 120)  # never enlarged
    small = Image.open(
        io.BytesIO(client.get("/api/image", params={"path": uri(gallery, "camera.png"), "size": 64}).content)
    )
    assert max(small.size) == 64
    etag = response.headers["etag"]
    cached = client.get("/api/image", params={"path": uri(gallery, "coffee-03.png")}, headers={"If-None-Match": etag})
    assert cached.status_code == 304 and not cached.content
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    for path in (
        "../",
        "../../etc/passwd",
        "/etc/passwd",
        "file:///etc/passwd",
        f"file://{outside}",
        str(outside),
        f"file://{gallery}/../{gallery.name}/coffee-03.png",
        f"file://{gallery}/coffee-03.png/../moon.png",
        str(gallery / "coffee-03.png"),
        "s3://another-bucket/coffee-03.png",
        "http://127.0.0.1:9/x.png",
        f"{uri(gallery, 'coffee-03.png')}\0",
    ):
        assert_error(client.get("/api/image", params={"path": path}), 404, "not an image of the run")
    heat = client.get("/api/image", params={"path": uri(gallery, "coffee-03.png"), "heatmap": "true"})
    assert heat.status_code == 200 and heat.headers["etag"] != etag
    tinted = np.asarray(Image.open(io.BytesIO(heat.content)).convert("RGB"), float)
    assert tinted.shape == (120, 160, 3) and np.abs(tinted - np.asarray(thumb.convert("RGB"), float)).mean() > 10
    assert_error(client.get("/api/image", params={"path": uri(gallery, "moon.png"), "size": 4096}), 422, "size:")
    assert_error(client.get("/api/image"), 422, "path:")


def test_a_run_on_s3_is_read_with_its_storage_settings(s3, gallery):
    storage = s3_storage(s3)
    run, images = "s3://test/serve/run", [f"s3://test/serve/photos/coffee-{i:02d}.png" for i in range(6)]
    for i, path in enumerate(images):
        write_uri(path, (gallery / f"coffee-{i:02d}.png").read_bytes(), storage)
    write_uri("s3://test/serve/secret.png", (gallery / "moon.png").read_bytes(), storage)
    write_embeddings(run, clustered_vectors(len(images), 16), storage, paths=images)
    build_index(run, IndexConfig(), storage)
    config = ServeConfig(run=run, check_seconds=3600, load_model=False)
    with TestClient(create_app(config, LiveRun(run, storage, config.check_seconds, with_model=False))) as client:
        responses = [
            client.get("/api/health"),
            client.get("/api/image", params={"path": images[2], "size": 64}),
            client.get("/api/search", params={"path": images[4], "k": 3}),
        ]
        assert [r.status_code for r in responses] == [200, 200, 200]
        assert Image.open(io.BytesIO(responses[1].content)).size == (64, 48)
        assert responses[2].json()["results"][0]["path"] == images[4]
        assert responses[0].json()["heatmaps"] is False
        responses.append(client.get("/api/image", params={"path": images[2], "heatmap": "true"}))
        assert_error(responses[-1], 409, "kept no per-patch loss; embed it with --infer.patch_loss true")
        for path in (
            "s3://test/serve/secret.png",
            "s3://test/serve/run/index/index.json",
            "s3://other/serve/photos/coffee-02.png",
            "test/serve/photos/coffee-02.png",
        ):
            responses.append(client.get("/api/image", params={"path": path}))
            assert_error(responses[-1], 404, "not an image of the run")
        responses.append(client.post("/api/search", content=(gallery / "moon.png").read_bytes()))
        assert_error(responses[-1], 503, "search by image is unavailable")
    for response in responses:  # the run's credentials never reach a caller
        assert s3.secret_key.encode() not in response.content and s3.access_key.encode() not in response.content


def test_the_token_guards_every_api_route_and_the_metrics(gallery_run, gallery):
    with serve(gallery_run, token=TOKEN) as client:
        for method, url in (
            ("GET", "/api/health"),
            ("GET", f"/api/search?path={uri(gallery, 'moon.png')}"),
            ("POST", "/api/search"),
            ("GET", "/api/anomalies"),
            ("GET", "/api/duplicates"),
            ("GET", f"/api/image?path={uri(gallery, 'moon.png')}"),
            ("GET", "/metrics"),
        ):
            missing = client.request(method, url)
            assert_error(missing, 401, "missing token", "Authorization: Bearer")
            assert missing.headers["www-authenticate"] == "Bearer"
            wrong = client.request(method, url, headers={"Authorization": "Bearer guess"})
            assert TOKEN not in assert_error(wrong, 401, "wrong token")
            assert_error(client.request(method, url, headers={"Authorization": f"Basic {TOKEN}"}), 401)
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/api/health", headers=good).status_code == 200
        assert client.get("/metrics", headers=good).status_code == 200
        assert client.get("/").status_code == 200 and client.get("/static/app.js").status_code == 200  # the page asks
    assert TOKEN not in repr(ServeConfig(run="x", token=TOKEN))


def test_metrics_count_routes_statuses_and_search_latency(client, gallery):
    client.get("/api/search", params={"path": uri(gallery, "moon.png")})
    client.get("/api/search", params={"path": "file:///not/there.png"})
    client.get("/api/image", params={"path": "/etc/passwd"})
    text = client.get("/metrics").text
    assert 'vitmae_http_requests_total{method="GET",route="/api/search",status="200"}' in text
    assert 'vitmae_http_requests_total{method="GET",route="/api/search",status="404"}' in text
    assert 'vitmae_http_requests_total{method="GET",route="/api/image",status="404"}' in text
    assert "passwd" not in text and "there.png" not in text  # templates, never raw paths
    assert 'vitmae_http_request_seconds_bucket{le="0.1",method="GET",route="/api/search"}' in text
    assert 'vitmae_search_seconds_count{kind="path"}' in text
    assert f"vitmae_index_images {float(IMAGES)}" in text


def test_the_page_and_its_files_are_served_from_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("client.js", "app.js", "app.css", "favicon.svg"):
        assert f"/static/{name}" in page.text
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and len(response.content) > 100
    static = resources.files("pipeline.service").joinpath("static")
    for asset in static.iterdir():  # nothing is fetched from elsewhere: no CDN, no web fonts
        text = asset.read_text(encoding="utf-8").replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, asset.name
    assert client.get("/openapi.json").json()["paths"]["/api/search"]["post"]["requestBody"]["content"]
    assert_error(client.get("/static/nothing.js"), 404)


def test_the_command_refuses_a_folder_without_a_run(tmp_path, capsys):
    from jobs.cli import main as cli

    assert cli(["serve", "--run", str(tmp_path / "nothing")]) == 2
    assert "no embeddings table" in capsys.readouterr().err
    assert cli(["serve", "--run", str(tmp_path), "--max_upload_mb", "0"]) == 2
    assert "max_upload_mb must be above 0" in capsys.readouterr().err
