"""`GET /metrics`: the service's Prometheus metrics, in the text format."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipeline.service.dependencies import Live, MetricsDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(live: Live, metrics: MetricsDep) -> Response:
    state = live.state
    metrics.images.set(state.searcher.count)
    metrics.table_version.set(state.table_version)
    metrics.reloads.set(live.reloads)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
