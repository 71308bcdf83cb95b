"""`GET /`: the web page. Its scripts and styles are files of this package, served under /static: no CDN."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["page"])

STATIC_PACKAGE = "pipeline.service"  # the page's files are its `static/` folder
# The page runs only its own files: no inline script, nothing from another origin, images from the API as blobs.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page() -> HTMLResponse:
    html = resources.files(STATIC_PACKAGE).joinpath("static/index.html").read_text(encoding="utf-8")
    return HTMLResponse(html, headers=SECURITY_HEADERS)
