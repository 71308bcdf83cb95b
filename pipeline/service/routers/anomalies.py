"""`GET /api/anomalies`: pages of the run's anomaly ranking, by kNN distance (auto), loss or both."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException
from starlette.concurrency import run_in_threadpool

from pipeline.service.config import API_PREFIX
from pipeline.service.dependencies import Limit, Offset, State
from pipeline.service.models import AnomaliesResponse, AnomalyRow, ErrorResponse
from pipeline.service.rankings import Page, RankingUnavailable

router = APIRouter(prefix=API_PREFIX, tags=["anomalies"])


@router.get("/anomalies", response_model=AnomaliesResponse, responses={400: {"model": ErrorResponse}})
async def anomalies(
    state: State, by: Literal["auto", "loss", "knn", "both"] = "auto", offset: Offset = 0, limit: Limit = 50
) -> AnomaliesResponse:
    """Rows [offset, offset + limit) of the ranking, most anomalous first. The first request of a new table version
    may rank the run (and write its anomalies.parquet) when the file is missing or older than the table."""

    def work() -> Page:
        try:
            return state.anomalies.page(by, offset, limit)
        except RankingUnavailable as err:
            raise HTTPException(400, str(err)) from None

    page = await run_in_threadpool(work)
    return AnomaliesResponse(
        total=page.total,
        offset=offset,
        limit=limit,
        by=page.meta["by"],
        k=page.meta["k"],
        table_version=page.meta["table_version"],
        results=[AnomalyRow(**row) for row in page.rows],
    )
