"""FastAPI dependencies: the state served (taken once per request), the settings, the metrics, and the token check.

All are `async def`: they only read attributes, and FastAPI would run a plain `def` on its thread pool, a thread hop
each per request.
"""

from __future__ import annotations

import secrets
from concurrent.futures import Executor
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pipeline.service.config import ServeConfig
from pipeline.service.metrics import Metrics
from pipeline.service.state import LiveRun, RunState

MAX_K = 1000  # the most neighbours one search returns
MAX_LIMIT = 500  # the most rows (or groups) one page returns
bearer = HTTPBearer(auto_error=False, description="the service's --token, when it was started with one")


async def get_config(request: Request) -> ServeConfig:
    return request.app.state.config


async def get_live(request: Request) -> LiveRun:
    return request.app.state.live


async def get_state(request: Request) -> RunState:
    """The run's state now; a request keeps this one to its end, whatever the watcher swaps in meanwhile."""
    return request.app.state.live.state


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_search_pool(request: Request) -> Executor:
    return request.app.state.search_pool


async def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """With --token: 401 unless the request carries `Authorization: Bearer <token>`."""
    token = request.app.state.config.secret
    if token is None:
        return
    given = credentials.credentials if credentials is not None else ""
    if not secrets.compare_digest(given.encode(), token.encode()):
        reason = "wrong token" if credentials is not None else "missing token"
        raise HTTPException(
            401, f"{reason}: send the header Authorization: Bearer <token>", headers={"WWW-Authenticate": "Bearer"}
        )


Config = Annotated[ServeConfig, Depends(get_config)]
Live = Annotated[LiveRun, Depends(get_live)]
State = Annotated[RunState, Depends(get_state)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
SearchPool = Annotated[Executor, Depends(get_search_pool)]
K = Annotated[int, Query(ge=1, le=MAX_K, description="neighbours to return")]
Offset = Annotated[int, Query(ge=0, description="rows (or groups) to skip")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="rows (or groups) to return")]
