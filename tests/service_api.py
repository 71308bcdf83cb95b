"""The service over a run, in FastAPI's TestClient, and what every error it answers must look like."""

from __future__ import annotations

from fastapi.testclient import TestClient

from pipeline.service.app import create_app
from pipeline.service.config import ServeConfig
from pipeline.service.state import LiveRun
from pipeline.storage import Storage


def serve(run, **settings) -> TestClient:
    config = ServeConfig(run=str(run), check_seconds=3600, **settings)
    return TestClient(create_app(config, LiveRun(config.run, Storage(), config.check_seconds)))


def uri(gallery, name: str) -> str:
    return f"file://{gallery / name}"


def assert_error(response, status: int, *words: str) -> str:
    """The response is `{"error": "one line"}` with `status`, saying each of `words`, and nothing of the internals."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and "\n" not in body["error"]
    assert "Traceback" not in body["error"] and 'File "' not in body["error"]
    for word in words:
        assert word in body["error"], body["error"]
    return body["error"]
