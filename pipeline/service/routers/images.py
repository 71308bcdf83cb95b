"""`GET /api/image`: a JPEG thumbnail of an image of the run, and of nothing else; with `heatmap=true`, its per-patch
loss drawn over it (runs embedded with `--infer.patch_loss true`).

The path must be one of the index's id map, exactly as stored: the service reads only what the run itself read,
with the run's storage settings, so no path, URL or bucket a caller makes up is ever opened.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from pipeline.images import DecodeError
from pipeline.retrieval.vectors import has_patch_loss, patch_losses
from pipeline.service.config import API_PREFIX
from pipeline.service.dependencies import State
from pipeline.service.models import ErrorResponse
from pipeline.service.thumbnails import MAX_SIZE, MIN_SIZE, thumbnail_jpeg
from pipeline.storage import read_uri

router = APIRouter(prefix=API_PREFIX, tags=["images"])

CACHE_SECONDS = 3600  # a path's bytes change only with a new id, which the ETag carries


@router.get(
    "/image",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "the thumbnail"},
        404: {"model": ErrorResponse},
        409: {"model": ErrorResponse},
        415: {"model": ErrorResponse},
    },
)
async def image(
    request: Request,
    state: State,
    path: Annotated[str, Query(min_length=1, description="an indexed image's path, as stored")],
    size: Annotated[int, Query(ge=MIN_SIZE, le=MAX_SIZE, description="the thumbnail's longer side")] = 256,
    heatmap: Annotated[bool, Query(description="draw the image's per-patch loss over it")] = False,
) -> Response:
    position = state.position(path)
    if position is None:
        raise HTTPException(404, f"{path} is not an image of the run")
    embeddings = state.searcher.embeddings
    if heatmap and not has_patch_loss(embeddings):
        raise HTTPException(
            409, f"{state.run} kept no per-patch loss; embed it with --infer.patch_loss true for heatmaps"
        )
    etag = f'"{int(state.searcher.loaded.ids[position])}-{size}{"-heat" if heatmap else ""}"'  # new image, new id
    headers = {"ETag": etag, "Cache-Control": f"private, max-age={CACHE_SECONDS}"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)

    def work() -> bytes:
        try:
            data = read_uri(path, state.searcher.storage)
        except FileNotFoundError:
            raise HTTPException(404, f"{path} is in the run but no longer readable: no such file") from None
        losses = patch_losses(embeddings, [path]).get(path) if heatmap else None
        try:
            return thumbnail_jpeg(data, size, state.decode.max_pixels, losses)
        except DecodeError as err:
            raise HTTPException(415, f"{path}: {err}") from None

    return Response(await run_in_threadpool(work), media_type="image/jpeg", headers=headers)
