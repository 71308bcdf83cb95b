"""`GET /api/duplicates`: pages of the run's near-duplicate groups (from `vitmae duplicates`), largest first."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from starlette.concurrency import run_in_threadpool

from pipeline.service.config import API_PREFIX
from pipeline.service.dependencies import Limit, Live, Offset
from pipeline.service.models import DuplicateGroup, DuplicatesResponse, ErrorResponse
from pipeline.service.rankings import Page

router = APIRouter(prefix=API_PREFIX, tags=["duplicates"])


@router.get("/duplicates", response_model=DuplicatesResponse, responses={404: {"model": ErrorResponse}})
async def duplicates(live: Live, offset: Offset = 0, limit: Limit = 50) -> DuplicatesResponse:
    """Groups [offset, offset + limit), each with its representative first; 404 until the run has duplicates.parquet."""

    def work() -> Page:
        try:
            return live.duplicates.page(offset, limit)
        except FileNotFoundError as err:
            raise HTTPException(404, str(err)) from None

    page = await run_in_threadpool(work)
    version = page.meta["table_version"]
    return DuplicatesResponse(
        total=page.total,
        offset=offset,
        limit=limit,
        table_version=version,
        current=version == live.state.table_version,
        results=[DuplicateGroup(**row) for row in page.rows],
    )
