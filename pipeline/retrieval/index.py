"""The FAISS index of a run: a type chosen by count and memory budget, built streaming from Parquet, recall measured.

How the type is chosen, and why the index is L2 on unit vectors: docs/design.md, "The index".
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

import faiss
import numpy as np

from pipeline import schema
from pipeline.retrieval.exact import ExactTopK
from pipeline.retrieval.index_store import inner, save_index, set_search_params
from pipeline.retrieval.vectors import (
    METRICS,
    Batch,
    Metric,
    first_dimension,
    for_index,
    iter_batches,
    open_embeddings,
    write_id_map,
)
from pipeline.storage import Storage
from vitmae.errors import InvalidInput

logger = logging.getLogger(__name__)

__all__ = ["IndexConfig", "IndexSpec", "TooFewVectors", "build_index", "choose_index", "new_index", "recall_at_k"]

IndexType = Literal["auto", "flat", "hnsw", "ivfsq8", "ivfpq"]
INDEX_TYPES = get_args(IndexType)
GB = 1e9
EXACT_MAX = 50_000  # auto: below this many vectors, exact search
HNSW_MAX = 2_000_000  # auto: below this many (and when it fits), HNSW
HNSW_M = 32  # graph neighbours per vector (2·M on the bottom level)
HNSW_EF_CONSTRUCTION = 80  # candidate list while inserting
TRAIN_POINTS_PER_LIST = 39  # FAISS warns that k-means is unreliable below this many points per centroid
PQ_DIVISORS = (4, 8, 16, 32)  # ivfpq: m = d / divisor sub-quantizers, largest m that fits first
EF_SEARCH_LADDER = (64, 128, 256, 512)  # efSearch values tried, smallest first, until the recall target is met


class TooFewVectors(InvalidInput):
    """A run with fewer than two embeddings: nothing to index, which is no failure of the run."""


@dataclass(frozen=True)
class IndexConfig:
    """How a run's FAISS index is built (the rule of `auto`: the module's docstring)."""

    index_type: IndexType = "auto"
    """auto picks by count and memory_budget_gb: flat (exact) under 50,000 vectors, else hnsw, else ivfsq8, else
    ivfpq"""
    metric: Metric = "cosine"
    """cosine (unit-length copies in the index; Parquet keeps the raw vectors) or l2"""
    memory_budget_gb: float = 4.0
    """memory the index may take, in GB (1e9 bytes)"""
    batch_rows: int = 16_384
    """rows read from Parquet at a time"""
    train_rows: int = 100_000
    """most vectors in the training sample (IVF's k-means, SQ's and PQ's tables)"""
    recall_k: int = 10
    """k of the recall@k measured after building"""
    recall_queries: int = 1_000
    """queries drawn from the data to measure recall and tune the search"""
    recall_target: float = 0.95
    """nprobe or efSearch grow until recall@k on held-out queries reaches this"""
    seed: int = 0
    """fixes the training sample and the queries"""

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_TYPES:
            raise InvalidInput(f"index_type must be one of {', '.join(INDEX_TYPES)}, got {self.index_type!r}")
        if self.metric not in METRICS:
            raise InvalidInput(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if not self.memory_budget_gb > 0:
            raise InvalidInput(f"memory_budget_gb must be a positive number of GB, got {self.memory_budget_gb}")
        if not 0 < self.recall_target <= 1:
            raise InvalidInput(f"recall_target must be in (0, 1], got {self.recall_target}")
        for name in ("batch_rows", "train_rows", "recall_k", "recall_queries"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class IndexSpec:
    """What `choose_index` decided, and why."""

    index_type: str  # flat | hnsw | ivfsq8 | ivfpq
    factory: str  # the FAISS index_factory string, e.g. "IVF2560,SQ8"
    params: dict[str, int] = field(default_factory=dict)  # M, ef_construction / nlist, m, nbits
    train_rows: int = 0  # vectors in the training sample (0: no training)
    estimated_bytes: int = 0  # memory of the built index
    reason: str = ""  # one sentence, written to index.json


def _gb(n: float) -> str:
    return f"{n / GB:.2f} GB"


def _flat_bytes(count: int, dim: int) -> int:
    return count * 4 * dim


def _hnsw_bytes(count: int, dim: int) -> int:
    # Bottom level: 2·M int32 links per vector; upper levels add about 1/M of that; plus level and offset tables.
    return int(count * (4 * dim + 2 * HNSW_M * 4 * (1 + 1 / HNSW_M) + 12))


def _ivf_bytes(count: int, dim: int, nlist: int, code_bytes: int) -> int:
    # Codes and int64 ids in the lists, the centroids, and the quantizer's tables (SQ ranges or PQ codebooks).
    return count * (code_bytes + 8) + nlist * 4 * dim + 256 * 4 * dim


def choose_index(
    count: int, dim: int, budget_bytes: int, index_type: str = "auto", train_rows: int = 100_000
) -> IndexSpec:
    """The index for `count` vectors of dimension `dim` within `budget_bytes` (the rule: module docstring).

    A pure function. For an explicit `index_type` it only sizes the parameters and checks the budget.

    Raises:
        ValueError: no index of the asked type (for auto: of any type) fits the budget.
    """
    if count < 1 or dim < 1:
        raise ValueError(f"expected at least one vector of dimension >= 1, got {count} vectors of dimension {dim}")
    flat, hnsw, budget = _flat_bytes(count, dim), _hnsw_bytes(count, dim), _gb(budget_bytes)
    hnsw_params = {"M": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION}
    notes = [f"{count:,} {dim}-d vectors, budget {budget}"]
    if index_type == "auto":
        if count < EXACT_MAX and flat <= budget_bytes:
            return IndexSpec(
                "flat",
                "Flat",
                {},
                0,
                flat,
                f"{notes[0]}: fewer than {EXACT_MAX:,} and float32 vectors ({_gb(flat)}) fit, so exact search",
            )
        notes.append(
            f"not flat ({f'at least {EXACT_MAX:,} vectors' if count >= EXACT_MAX else f'{_gb(flat)} does not fit'})"
        )
        if count < HNSW_MAX and hnsw <= budget_bytes:
            return IndexSpec(
                "hnsw",
                f"HNSW{HNSW_M}",
                hnsw_params,
                0,
                hnsw,
                "; ".join(notes + [f"vectors plus graph ({_gb(hnsw)}) fit, so HNSW"]),
            )
        notes.append(
            f"not HNSW ({f'at least {HNSW_MAX:,} vectors' if count >= HNSW_MAX else f'{_gb(hnsw)} does not fit'})"
        )
        return _ivf_spec(count, dim, budget_bytes, train_rows, notes, ("ivfsq8", "ivfpq"))
    notes.insert(0, f"asked for {index_type}")
    if index_type == "flat":
        return _checked(IndexSpec("flat", "Flat", {}, 0, flat, "; ".join(notes)), budget_bytes)
    if index_type == "hnsw":
        return _checked(IndexSpec("hnsw", f"HNSW{HNSW_M}", hnsw_params, 0, hnsw, "; ".join(notes)), budget_bytes)
    return _ivf_spec(count, dim, budget_bytes, train_rows, notes, (index_type,))


def _ivf_spec(
    count: int, dim: int, budget: int, train_rows: int, notes: list[str], allowed: tuple[str, ...]
) -> IndexSpec:
    """IVF-SQ8 when allowed and it fits, else IVF-PQ with the largest m that fits."""
    sample = min(count, train_rows)
    nlist = max(1, min(round(4 * math.sqrt(count)), sample // TRAIN_POINTS_PER_LIST))
    lists = f"IVF with nlist {nlist} (4·sqrt(N), at most sample {sample:,} / {TRAIN_POINTS_PER_LIST})"
    sq8 = _ivf_bytes(count, dim, nlist, dim)
    if "ivfsq8" in allowed:
        spec = IndexSpec(
            "ivfsq8",
            f"IVF{nlist},SQ8",
            {"nlist": nlist},
            sample,
            sq8,
            "; ".join(notes + [f"{lists} and 8-bit scalar codes ({_gb(sq8)})"]),
        )
        if sq8 <= budget or "ivfpq" not in allowed:
            return _checked(spec, budget)
        notes = notes + [f"not IVF-SQ8 ({_gb(sq8)} does not fit)"]
    # 8-bit codes want 39·256 training points per sub-quantizer; a smaller sample gets fewer bits.
    nbits = max(4, min(8, int(math.log2(max(16, sample // TRAIN_POINTS_PER_LIST)))))
    ms = [dim // d for d in PQ_DIVISORS if dim // d >= 1 and dim % (dim // d) == 0] or [1]
    for m in ms:
        pq = _ivf_bytes(count, dim, nlist, math.ceil(m * nbits / 8))
        if pq <= budget:
            reason = f"{lists} and PQ m={m} ({dim // m} dimensions per {nbits}-bit code, {_gb(pq)})"
            return IndexSpec(
                "ivfpq",
                f"IVF{nlist},PQ{m}x{nbits}",
                {"nlist": nlist, "m": m, "nbits": nbits},
                sample,
                pq,
                "; ".join(notes + [reason]),
            )
    smallest = _ivf_bytes(count, dim, nlist, math.ceil(ms[-1] * nbits / 8))
    raise InvalidInput(
        f"{count:,} {dim}-d vectors need at least {_gb(smallest)} even as IVF-PQ with m={ms[-1]}, "
        f"over the memory_budget_gb of {_gb(budget)}"
    )


def _checked(spec: IndexSpec, budget: int) -> IndexSpec:
    if spec.estimated_bytes > budget:
        raise InvalidInput(
            f"index_type {spec.index_type} needs about {_gb(spec.estimated_bytes)}, over the memory_budget_gb of "
            f"{_gb(budget)}; raise the budget or use index_type auto"
        )
    return spec


def build_index(run: str, config: IndexConfig = IndexConfig(), storage: Storage | None = None) -> dict[str, Any]:
    """Builds, measures and saves the index of the latest version of `run`'s embeddings under `run/index/`; returns
    what index.json holds. storage: None reads the environment (`Storage.from_environment`).

    Raises:
        FileNotFoundError: the run has no embeddings.
        TooFewVectors: fewer than 2 embeddings.
        ValueError: no index fits the budget, or unreadable embeddings.
    """
    storage = storage or Storage.from_environment()
    start = time.perf_counter()
    embeddings = open_embeddings(run, storage)
    count = embeddings.count()
    if count < 2:
        raise TooFewVectors(f"{run} holds {count} embedding(s); an index needs at least 2")
    dim = first_dimension(embeddings)
    spec = choose_index(count, dim, int(config.memory_budget_gb * GB), config.index_type, config.train_rows)
    logger.info("building a %s index (%s): %s", spec.index_type, spec.factory, spec.reason)
    rng = np.random.default_rng(config.seed)
    k = min(config.recall_k, count - 1)
    query_rows = np.sort(rng.choice(count, size=min(config.recall_queries, count), replace=False))
    train_rows = np.sort(rng.choice(count, size=spec.train_rows, replace=False))
    sample, queries, query_ids = _sample(
        iter_batches(embeddings, config.batch_rows), config.metric, dim, train_rows, query_rows
    )
    index = new_index(spec, dim)
    if spec.train_rows:
        index.train(sample)
    del sample
    truth = ExactTopK(queries, k + 1)
    for batch in iter_batches(embeddings, config.batch_rows, columns=(schema.EMBEDDING,)):
        vectors = for_index(batch.vectors, config.metric)
        index.add_with_ids(vectors, batch.ids)
        truth.add(vectors, batch.ids)
    if index.ntotal != count:
        raise RuntimeError(f"counted {count} embeddings but added {index.ntotal}; did the run change while indexing?")
    search_params, recall, curve = _tune(index, spec.index_type, queries, query_ids, truth.ids, k, config.recall_target)
    info = {
        "format": 2,
        "index_type": spec.index_type,
        "factory": spec.factory,
        "params": spec.params,
        "search_params": search_params,
        "metric": config.metric,
        "dimension": dim,
        "count": count,
        "built_count": count,  # vectors at the last full build; updates add and remove since
        "table_version": embeddings.version,  # the embeddings table's version the index reflects
        "memory_budget_gb": config.memory_budget_gb,
        "estimated_bytes": spec.estimated_bytes,
        "train_rows": spec.train_rows,
        "reason": spec.reason,
        "recall": {
            "k": k,
            "queries": len(query_rows),
            "value": round(recall, 4),
            "target": config.recall_target,
            "target_met": recall >= config.recall_target,
            "curve": curve,
            "table_version": embeddings.version,
        },
        "config": asdict(config),
        "faiss_version": faiss.__version__,
        "updates": [],
    }
    info["build_seconds"] = round(time.perf_counter() - start, 3)
    with tempfile.TemporaryDirectory() as tmp:  # the id map is sorted by DuckDB from the table, not held here
        id_map = os.path.join(tmp, "ids.parquet")
        write_id_map(embeddings, id_map)
        save_index(run, storage, index, id_map, np.empty(0, np.int64), info)
    logger.info(
        "%s index of %d vectors built in %.1fs, recall@%d %.3f",
        spec.index_type,
        count,
        info["build_seconds"],
        k,
        recall,
    )
    return info


def new_index(spec: IndexSpec, dim: int) -> faiss.Index:
    """An empty index of `spec` that takes the table's ids: flat and HNSW wrapped in an id map, IVF with its own."""
    index = faiss.index_factory(
        dim, spec.factory if spec.index_type.startswith("ivf") else f"IDMap2,{spec.factory}", faiss.METRIC_L2
    )
    if spec.index_type == "hnsw":
        inner(index).hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    if spec.index_type == "ivfpq":
        index.do_polysemous_training = (
            False  # only serves Hamming filtering, which we do not use, and costs training time
        )
    return index


def _sample(
    batches: Any, metric: str, dim: int, train_rows: np.ndarray, query_rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First pass: the vectors at positions `train_rows` and `query_rows` (sorted) of the scan, as stored in the index
    (float32 [n, D] each), and the queries' ids (int64 [Q])."""
    sample = np.empty((len(train_rows), dim), np.float32)
    queries = np.empty((len(query_rows), dim), np.float32)
    query_ids = np.empty(len(query_rows), np.int64)
    batch: Batch
    for batch in batches:
        end = batch.start + len(batch.vectors)
        for wanted, out in ((train_rows, sample), (query_rows, queries)):
            lo, hi = np.searchsorted(wanted, [batch.start, end])
            if hi > lo:
                out[lo:hi] = for_index(batch.vectors[wanted[lo:hi] - batch.start], metric)
        lo, hi = np.searchsorted(query_rows, [batch.start, end])
        query_ids[lo:hi] = batch.ids[query_rows[lo:hi] - batch.start]
    return sample, queries, query_ids


def recall_at_k(found: np.ndarray, truth: np.ndarray, query_ids: np.ndarray, k: int) -> float:
    """Share of the exact k nearest that `found` holds, the query's own id left out of both.

    Args:
        found: int64 [Q, >= k + 1] ids from the index. truth: int64 [Q, >= k + 1] exact ids. query_ids: int64 [Q].
    """
    hits = 0
    for own, row, exact in zip(query_ids, found, truth):
        near = row[(row != own) & (row >= 0)][:k]
        true = exact[(exact != own) & (exact >= 0)][:k]
        hits += len(np.intersect1d(near, true))
    return hits / (len(query_ids) * k)


def _tune(
    index: faiss.Index,
    index_type: str,
    queries: np.ndarray,
    query_ids: np.ndarray,
    truth: np.ndarray,
    k: int,
    target: float,
) -> tuple[dict[str, int], float, list[list[float]]]:
    """The cheapest search setting whose recall@k reaches `target` (else the most accurate tried)."""
    if index_type == "flat":
        ladder: list[dict[str, int]] = [{}]
    elif index_type == "hnsw":
        ladder = [{"efSearch": ef} for ef in EF_SEARCH_LADDER]
    else:
        nlist = faiss.extract_index_ivf(index).nlist
        ladder = [{"nprobe": 2**i} for i in range(int(math.log2(nlist)) + 1)] + (
            [{"nprobe": nlist}] if nlist & (nlist - 1) else []
        )
    curve: list[list[float]] = []
    for params in ladder:
        set_search_params(index, params)
        _, found = index.search(queries, k + 1)
        recall = recall_at_k(found, truth, query_ids, k)
        curve.append([next(iter(params.values()), 0), round(recall, 4)])
        if recall >= target:
            return params, recall, curve
    logger.warning(
        "recall@%d %.3f stays under the target %.2f at the largest setting tried (%s)", k, recall, target, params
    )
    return params, recall, curve
