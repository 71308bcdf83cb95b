"""Query images in request bodies: raw bytes or a multipart field `image`, at most `max_upload_mb`.

The limit holds before anything is read (Content-Length) and while reading (for bodies sent in chunks, or with a
Content-Length that lies), so an upload never costs more memory than the limit.
"""

from __future__ import annotations

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.service.config import MB

IMAGE_FIELD = "image"  # the multipart form field of a query image


class UploadTooLarge(HTTPException):
    def __init__(self, limit_bytes: int) -> None:
        super().__init__(413, f"the upload is larger than the limit of {limit_bytes / MB:g} MB (--max_upload_mb)")


class UploadLimit:
    """ASGI middleware: a request body that grows past `limit_bytes` raises UploadTooLarge in whatever reads it."""

    def __init__(self, app: ASGIApp, limit_bytes: int) -> None:
        self.app, self.limit_bytes = app, limit_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit_bytes:
                    raise UploadTooLarge(self.limit_bytes)
            return message

        await self.app(scope, limited, send)


async def read_image(request: Request, limit_bytes: int) -> bytes:
    """The query image of a POST: the multipart field `image`, or else the whole body.

    Raises:
        UploadTooLarge: over the limit. HTTPException 400: no image in the request.
    """
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit_bytes:
        raise UploadTooLarge(limit_bytes)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async with request.form(max_files=1, max_fields=10) as form:
            field = form.get(IMAGE_FIELD)
            if not isinstance(field, UploadFile):
                raise HTTPException(400, f"no image: the multipart form has no file field {IMAGE_FIELD!r}")
            data = await field.read()
    else:
        data = await request.body()
    if not data:
        raise HTTPException(
            400, f"no image: send the image's bytes as the body, or as the multipart field {IMAGE_FIELD!r}"
        )
    return data
