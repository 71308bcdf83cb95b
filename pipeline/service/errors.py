"""Every error as `{"error": "one line"}`: 4xx for the caller's mistakes with what was expected, 5xx only for faults,
whose details (and any traceback) go to the service's log, never into a response."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vitmae.errors import one_line

logger = logging.getLogger(__name__)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Errors the routes raise on purpose (their detail is written for the caller), and Starlette's own."""
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"no such route: {request.url.path}"
    elif exc.status_code == 405 and exc.detail == "Method Not Allowed":
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = one_line(str(exc.detail), 500)
    return error_response(exc.status_code, message, getattr(exc, "headers", None))


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A bad parameter or body: 422, naming the first field, what it must be and what it was."""
    errors = exc.errors()
    first = errors[0] if errors else {}
    where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
    message = f"{where}: {first.get('msg', 'invalid')}"
    if "input" in first and first.get("type") != "missing":
        message += f", got {_shown(first['input'])}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return error_response(422, one_line(message, 500))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A fault: logged with its traceback; the caller gets one line that says nothing of the internals."""
    logger.error(
        "%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, one_line(exc), exc_info=exc
    )
    return error_response(500, "internal error; the service's log has the details")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)
