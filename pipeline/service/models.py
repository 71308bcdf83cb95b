"""The service's request and response bodies, as Pydantic models (they are also its OpenAPI schema)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ErrorResponse(BaseModel):
    """Every error, whatever its status."""

    error: str = Field(description="one readable line")


class IndexSummary(BaseModel):
    type: str = Field(description="flat, hnsw, ivfsq8 or ivfpq")
    metric: Literal["cosine", "l2"]
    dimension: int
    recall: float | None = Field(description="recall@k against exact search, measured at the last build")
    recall_k: int | None
    search_params: dict[str, int] = Field(description="nprobe or efSearch as tuned; empty for exact search")


class Health(BaseModel):
    status: Literal["ok"]
    run: str = Field(description="the run folder served")
    count: int = Field(description="images in the index")
    table_version: int = Field(description="the embeddings table's version that the index reflects")
    index: IndexSummary
    image_search: bool = Field(description="whether POST /api/search can embed images")
    image_search_error: str | None = Field(description="why it cannot, when it cannot")
    heatmaps: bool = Field(
        description="whether the run kept each image's per-patch loss, which GET /api/image?heatmap=true draws"
    )
    loaded_at: float = Field(description="when this version was loaded, seconds since the epoch")
    checked_at: float = Field(description="when the run was last checked for a new version")
    reloads: int = Field(description="versions loaded since the service started")
    pending: str | None = Field(description="why a newer version of the run is not served yet, while it is not")


class Hit(BaseModel):
    rank: int = Field(description="1 = nearest")
    path: str
    score: float = Field(description="cosine similarity (higher is nearer) or L2 distance (lower is nearer)")


class SearchResponse(BaseModel):
    results: list[Hit]
    metric: Literal["cosine", "l2"]
    table_version: int
    query: str | None = Field(default=None, description="the indexed path searched by, for a search by path")


class VectorQuery(BaseModel):
    vector: list[float] = Field(description="a raw embedding of the index's dimension, as the run stores them")


class AnomalyRow(BaseModel):
    rank: int | None = Field(description="position in the ranking asked for, 1 = most anomalous; null: no score")
    path: str
    loss: float | None = Field(description="masked-reconstruction loss; null without one")
    loss_rank: int | None
    knn_distance: float | None = Field(description="mean distance to the k nearest other images")
    knn_rank: int | None
    mean_rank: float | None = Field(description="(loss_rank + knn_rank) / 2, what `both` ranks")


class AnomaliesResponse(BaseModel):
    total: int = Field(description="images ranked")
    offset: int
    limit: int
    by: Literal["loss", "knn", "both"] = Field(description="what the ranking orders by (auto resolved)")
    k: int = Field(description="neighbours averaged for knn_distance")
    table_version: int
    results: list[AnomalyRow]


class DuplicateMember(BaseModel):
    path: str
    similarity: float | None = Field(description="to the group's representative")


class DuplicateGroup(BaseModel):
    group: int
    size: int
    representative: str
    members: list[DuplicateMember] = Field(description="the representative first, then by similarity")


class DuplicatesResponse(BaseModel):
    total: int = Field(description="groups")
    offset: int
    limit: int
    table_version: int | None = Field(description="the table version the groups were found in")
    current: bool = Field(description="whether that is the version served")
    results: list[DuplicateGroup]
