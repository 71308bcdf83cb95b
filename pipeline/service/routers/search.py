"""Search: by an image sent in the request (raw body or multipart field `image`), by an indexed image's path, or by
a raw vector. Searches run on a pool of one thread per core, image queries on the model's one thread, so that
queued requests hold no thread and the event loop never waits for a search."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request

from pipeline.retrieval.search import Hit as SearchHit
from pipeline.service.config import API_PREFIX
from pipeline.service.dependencies import Config, K, MetricsDep, SearchPool, State
from pipeline.service.models import ErrorResponse, Hit, SearchResponse, VectorQuery
from pipeline.service.state import RunState
from pipeline.service.uploads import IMAGE_FIELD, read_image

router = APIRouter(prefix=API_PREFIX, tags=["search"])

IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "description": (
            f"the query image: its bytes as the body, or a multipart form with the file field `{IMAGE_FIELD}`"
        ),
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [IMAGE_FIELD],
                    "properties": {IMAGE_FIELD: {"type": "string", "format": "binary"}},
                }
            },
        },
    }
}


def _response(state: RunState, hits: list[SearchHit], query: str | None = None) -> SearchResponse:
    return SearchResponse(
        results=[Hit(rank=h.rank, path=h.path, score=h.score) for h in hits],
        metric=state.searcher.loaded.metric,
        table_version=state.table_version,
        query=query,
    )


async def _timed(
    metrics: MetricsDep, kind: str, pool: Executor, work: Callable[[], list[SearchHit]]
) -> list[SearchHit]:
    """Runs `work` on `pool` (the searches' threads, or the model's one) and times it, queueing included."""
    started = time.perf_counter()
    hits = await asyncio.wrap_future(pool.submit(work))
    metrics.search.labels(kind).observe(time.perf_counter() - started)
    return hits


@router.post(
    "/search",
    response_model=SearchResponse,
    openapi_extra=IMAGE_BODY,
    responses={400: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
)
async def search_by_image(
    request: Request, state: State, config: Config, metrics: MetricsDep, k: K = 10
) -> SearchResponse:
    """The k nearest of an image that need not be in the run, embedded with the run's model, processor and pooling."""
    data = await read_image(request, config.max_upload_bytes)
    if state.image_model is None:
        raise HTTPException(503, f"search by image is unavailable: {state.image_error}")

    def work() -> list[SearchHit]:
        try:
            return state.search_image(data, k)
        except ValueError as err:  # the bytes are no decodable image, or a decompression bomb
            raise HTTPException(400, str(err)) from None

    return _response(state, await _timed(metrics, "image", state.image_model.worker, work))


@router.get("/search", response_model=SearchResponse, responses={404: {"model": ErrorResponse}})
async def search_by_path(
    state: State,
    metrics: MetricsDep,
    pool: SearchPool,
    k: K = 10,
    path: str = Query(min_length=1, description="an indexed image's path, as stored"),
) -> SearchResponse:
    """The k nearest of an image of the run, by its path (it comes first)."""
    position = state.resolve(path)
    if position is None:
        raise HTTPException(404, f"{path} is not in the run ({state.searcher.count} images)")
    found = state.searcher.loaded.paths[position].as_py()
    return _response(state, await _timed(metrics, "path", pool, lambda: state.search_position(position, k)), found)


@router.post("/search/vector", response_model=SearchResponse, responses={400: {"model": ErrorResponse}})
async def search_by_vector(
    query: VectorQuery, state: State, metrics: MetricsDep, pool: SearchPool, k: K = 10
) -> SearchResponse:
    """The k nearest of a raw embedding (as the run stores them; a cosine index normalises it)."""
    vector = np.asarray(query.vector, dtype=np.float32)
    dimension = state.searcher.loaded.dimension
    if vector.shape != (dimension,):
        raise HTTPException(400, f"expected a vector of {dimension} numbers, got {len(query.vector)}")
    if not np.isfinite(vector).all() or (state.searcher.loaded.metric == "cosine" and not vector.any()):
        raise HTTPException(400, "expected finite numbers, not all zero")
    return _response(state, await _timed(metrics, "vector", pool, lambda: state.searcher.search_vectors(vector, k)[0]))
