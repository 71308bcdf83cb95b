"""The application factory: `create_app(config, live)` wires the routers, the token check, the upload limit, the
error shape, the metrics and the page's static files around one `LiveRun`; `serve(config)` runs it on uvicorn.

    live = LiveRun(config.run, Storage.from_config(config.storage), config.check_seconds)
    app = create_app(config, live)      # for uvicorn, or FastAPI's TestClient
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import uvicorn
from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from pipeline.service.config import ServeConfig
from pipeline.service.dependencies import require_token
from pipeline.service.errors import install_error_handlers
from pipeline.service.metrics import Metrics, MetricsMiddleware
from pipeline.service.routers import anomalies, duplicates, health, images, metrics, page, search
from pipeline.service.routers.page import STATIC_PACKAGE
from pipeline.service.state import LiveRun
from pipeline.service.uploads import UploadLimit
from pipeline.storage import Storage

logger = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def create_app(config: ServeConfig, live: LiveRun) -> FastAPI:
    """The service over `live`, whose watcher runs while the app does (between its start-up and shut-down)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One search thread per core: more would only take turns at the GIL with the event loop.
        app.state.search_pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="search")
        live.start()
        try:
            yield
        finally:
            live.stop()
            app.state.search_pool.shutdown(wait=False, cancel_futures=True)

    # No /docs: Swagger UI loads its scripts from a CDN. The schema is at /openapi.json for clients to generate from.
    app = FastAPI(
        title="vitmae serve",
        summary="Similarity search, anomalies and near duplicates of one run.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.config, app.state.live, app.state.metrics = config, live, Metrics()
    install_error_handlers(app)
    protected = [Depends(require_token)]
    for router in (health.router, search.router, anomalies.router, duplicates.router, images.router):
        app.include_router(router, dependencies=protected)
    app.include_router(metrics.router, dependencies=protected)
    app.include_router(page.router)
    app.mount("/static", StaticFiles(packages=[(STATIC_PACKAGE, "static")]), name="static")
    app.add_middleware(UploadLimit, limit_bytes=config.max_upload_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)  # outermost: it sees every status
    return app


def serve(config: ServeConfig) -> None:
    """Loads the run and serves it until interrupted.

    Raises:
        FileNotFoundError: no run, table or index. ValueError: an index older than the table.
    """
    live = LiveRun(config.run, Storage.from_config(config.storage), config.check_seconds, config.load_model)
    state = live.state
    logger.info(
        "serving %s: %d images at table version %d (%s index)%s",
        config.run,
        state.searcher.count,
        state.table_version,
        state.info["index_type"],
        "" if state.image_model else f"; no search by image: {state.image_error}",
    )
    if config.host not in LOOPBACK and config.token is None:
        logger.warning(
            "listening on %s without --token: anyone who reaches it can search the run and see its images", config.host
        )
    uvicorn.run(
        create_app(config, live), host=config.host, port=config.port, access_log=config.access_log, log_level="info"
    )
