"""`GET /api/health`: what is served: the run, its table version, the index and whether images can be searched."""

from __future__ import annotations

from fastapi import APIRouter

from pipeline.retrieval.vectors import has_patch_loss
from pipeline.service.config import API_PREFIX
from pipeline.service.dependencies import Live
from pipeline.service.models import Health, IndexSummary

router = APIRouter(prefix=API_PREFIX, tags=["health"])


@router.get("/health", response_model=Health)
def health(live: Live) -> Health:
    state = live.state
    info = state.info
    recall = info.get("recall") or {}
    return Health(
        status="ok",
        run=state.run,
        count=state.searcher.count,
        table_version=state.table_version,
        index=IndexSummary(
            type=info["index_type"],
            metric=info["metric"],
            dimension=int(info["dimension"]),
            recall=recall.get("value"),
            recall_k=recall.get("k"),
            search_params=info.get("search_params") or {},
        ),
        image_search=state.image_model is not None,
        image_search_error=state.image_error,
        heatmaps=has_patch_loss(state.searcher.embeddings),
        loaded_at=state.loaded_at,
        checked_at=live.checked_at,
        reloads=live.reloads,
        pending=live.last_error,
    )
