"""Anomaly rankings of a run: by kNN distance from the index (what `auto` picks), by reconstruction loss, or by both
(rank-averaged).

Rank 1 is the most anomalous; the top of the kNN ranking is exact (docs/design.md, "Anomalies"). `auto` is kNN
whether or not the run has a loss: on labelled anomalies of eight kinds it ranks best overall and loses no kind
badly, where the loss ranks blank, blurred and text images below normal ones (benchmarks/RESULTS.md, "Anomaly
ranking quality").
"""

# No postponed annotations here: the command line subclasses the settings below and reads its field types
# in the subclass's module (jobs.command).

import logging
import time
from dataclasses import dataclass, replace
from typing import Literal, get_args

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from pipeline import schema
from pipeline.layout import ANOMALIES_FILE
from pipeline.retrieval.exact import ExactSearch, farthest_possible, reconstruction_errors
from pipeline.retrieval.index_store import LoadedIndex, NoIndex, load_index, require_current, to_distances
from pipeline.retrieval.vectors import Batch, Embeddings, for_index, iter_batches, open_embeddings
from pipeline.storage import RunLocation, Storage, run_folder, write_parquet
from vitmae.errors import InvalidInput

logger = logging.getLogger(__name__)

RankBy = Literal["auto", "loss", "knn", "both"]
BY = get_args(RankBy)
AUTO = "knn"  # what `auto` ranks by, for every run (module docstring)
FIRST_RESCORE = 256  # images rescored in the first round, at least; each round doubles
WIDER = 8  # a candidate for the exact top is first searched again with this many times the index's efSearch or nprobe


@dataclass(frozen=True)
class AnomalyConfig(RunLocation):
    """One anomaly ranking of a run."""

    by: RankBy = "auto"
    """knn (mean cosine distance to the k nearest other images), loss (reconstruction), both (the two ranks
    averaged), or auto: knn, the best measured (benchmarks/RESULTS.md)"""
    k: int = 10
    """neighbours averaged for the kNN distance"""
    exact_top: int = 100
    """the top of the kNN ranking made exact, equal to brute force in order (0: the index's scores only)"""
    batch_rows: int = 8_192
    """rows read and searched at a time"""

    def __post_init__(self) -> None:
        if self.by not in BY:
            raise InvalidInput(f"by must be one of {', '.join(BY)}, got {self.by!r}")
        if self.k < 1:
            raise InvalidInput(f"k must be at least 1, got {self.k}")
        if self.exact_top < 0:
            raise InvalidInput(f"exact_top must be at least 0, got {self.exact_top}")
        if self.batch_rows < 1:
            raise InvalidInput(f"batch_rows must be at least 1, got {self.batch_rows}")


def rank_anomalies(config: AnomalyConfig, storage: Storage | None = None) -> pa.Table:
    """Scores every embedded image of the table's latest version, writes `run/anomalies.parquet`, and returns it
    (sorted by rank).

    The table's metadata hold `anomalies.by`, what it was ranked by (for `auto`, the choice made).

    Raises:
        FileNotFoundError: no embeddings; or no index when ranking by knn or both.
        ValueError: no loss in the run when ranking by loss or both; an index older than the embeddings.
    """
    storage = storage or Storage.from_config(config.storage)
    embeddings = open_embeddings(config.run, storage)
    by = resolve_by(config.by)
    table = score_anomalies(replace(config, by=by), embeddings, _index_for(config.run, by, storage))
    write_parquet(run_folder(config.run, storage), ANOMALIES_FILE, table)
    logger.info("ranked %d images by %s; wrote %s/%s", table.num_rows, by, config.run, ANOMALIES_FILE)
    return table


def resolve_by(by: str) -> str:
    """`auto` -> `AUTO`; anything else as it is."""
    return AUTO if by == "auto" else by


def score_anomalies(config: AnomalyConfig, embeddings: Embeddings, loaded: LoadedIndex | None) -> pa.Table:
    """The ranking of one version of the embeddings table (not written), with that version's index (None: none, for
    a ranking by loss). `config.by` must not be auto (see `resolve_by`).

    Raises:
        NoIndex: no index when ranking by knn or both. IndexBehind: an index of an older table version.
        InvalidInput: no loss in the run when ranking by loss or both.
    """
    by = config.by
    assert by != "auto", "resolve_by first"
    if loaded is None and by != "loss":
        raise NoIndex(f"{config.run} has no index; ranking by {by} needs one (vitmae index --run {config.run})")
    if loaded is not None:
        require_current(loaded, config.run, embeddings.version)
    columns = (schema.PATH, schema.LOSS) + ((schema.EMBEDDING,) if loaded else ())
    start = time.perf_counter()
    errors = reconstruction_errors(loaded, embeddings, config.batch_rows) if loaded else None
    paths, losses, ids, knn, bounds = [], [], [], [], []
    for batch in iter_batches(embeddings, config.batch_rows, columns):
        paths.append(batch.paths)
        losses.append(batch.table.column(schema.LOSS).to_numpy(zero_copy_only=False).astype(np.float32))
        ids.append(batch.ids)
        if loaded:
            distance, bound = knn_distances(loaded, batch, config.k, errors)
            knn.append(distance)
            bounds.append(bound)
    loss = np.concatenate(losses) if losses else np.empty(0, np.float32)
    if by != "knn" and np.isnan(loss).all():
        raise InvalidInput(
            f"{config.run} has no reconstruction loss (it was embedded with --infer.mask_ratio 0); "
            "rank with --by knn, or embed again with --infer.mask_ratio 0.75"
        )
    distance = np.concatenate(knn) if knn else np.full(len(loss), np.nan, np.float32)
    exact = np.zeros(len(loss), bool)
    scored = time.perf_counter()
    if loaded:
        search = ExactSearch(loaded, embeddings, config.batch_rows)
        distance, exact = exact_top(
            search, np.concatenate(ids), distance, np.concatenate(bounds), config.k, config.exact_top, errors
        )
    table = ranking(pa.concat_arrays(paths), loss, distance, by, exact)
    return table.replace_schema_metadata(
        {
            schema.ANOMALIES_BY: by,
            schema.ANOMALIES_K: str(config.k),
            schema.ANOMALIES_METRIC: loaded.metric if loaded else "",
            schema.ANOMALIES_TABLE_VERSION: str(embeddings.version),
            schema.ANOMALIES_EXACT_TOP: str(config.exact_top if loaded else 0),
            schema.ANOMALIES_KNN_EXACT: str(int(exact.sum())),
            schema.ANOMALIES_SCORING_SECONDS: f"{scored - start:.3f}",
            schema.ANOMALIES_RANKING_SECONDS: f"{time.perf_counter() - scored:.3f}",
        }
    )


def has_loss(dataset: pads.Dataset) -> bool:
    """Whether any embedding row of the run has a loss (the job writes all or none)."""
    return dataset.count_rows(filter=pc.field(schema.LOSS).is_valid()) > 0


def _index_for(run: str, by: str, storage: Storage) -> LoadedIndex | None:
    """The run's index: required for knn and both, used when present for loss (to fill knn_distance)."""
    try:
        return load_index(run, storage)
    except FileNotFoundError:
        if by == "loss":
            logger.info("%s has no index; knn_distance stays empty", run)
            return None
        raise


def knn_distances(
    loaded: LoadedIndex, batch: Batch, k: int, errors: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean distance of each row of `batch` to its k nearest other indexed images as the index finds them, and the
    most the exact mean can be. float32 [B] each (the bound is inf where the index found fewer than k others).

    errors: float32 [count] aligned with `loaded.ids`, the reconstruction error of every vector (None: all 0).
    """
    return knn_scores(loaded, for_index(batch.vectors, loaded.metric), batch.ids, k, errors)


def knn_scores(
    loaded: LoadedIndex, queries: np.ndarray, own: np.ndarray, k: int, errors: np.ndarray | None, effort: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """`knn_distances` of float32 [Q, D] queries as stored in the index, with ids `own` [Q], searched with `effort`."""
    k = min(k, loaded.count - 1)
    squared, ids = loaded.search(queries, k + 1, effort)
    others = first_others(ids, own, k)
    found_errors = np.zeros(squared.shape, np.float32)
    if errors is not None:
        found_errors = errors[np.clip(np.searchsorted(loaded.ids, ids), 0, len(errors) - 1)]
    reach = farthest_possible(queries, np.where(others, squared, 0.0), found_errors)
    bound = np.where(others.sum(axis=1) < k, np.inf, mean_over(to_distances(reach**2, loaded.metric), others))
    return mean_over(to_distances(squared, loaded.metric), others), bound.astype(np.float32)


def first_others(ids: np.ndarray, own: np.ndarray, k: int) -> np.ndarray:
    """bool [Q, n]: the first k found ids of each row that are neither the row's own id `own` [Q] nor missing (-1)."""
    others = (ids != own[:, None]) & (ids >= 0)
    return others & (np.cumsum(others, axis=1) <= k)


def mean_over(distances: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """float32 [Q]: the mean of each row's chosen distances ([Q, n], bool [Q, n])."""
    return ((np.where(chosen, distances, 0.0)).sum(axis=1) / np.maximum(chosen.sum(axis=1), 1)).astype(np.float32)


def exact_distances(search: ExactSearch, ids: np.ndarray, k: int) -> np.ndarray:
    """Mean distance of each of `ids` [n] to its k nearest other images, by brute force over every vector.
    float32 [n]."""
    k = min(k, search.loaded.count - 1)
    squared, found = search.search(search.vectors(ids), k + 1)
    return mean_over(to_distances(squared, search.loaded.metric), first_others(found, ids, k))


def exact_top(
    search: ExactSearch,
    ids: np.ndarray,
    distance: np.ndarray,
    bound: np.ndarray,
    k: int,
    top: int,
    errors: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rescores rows, in order of their upper `bound`, until no row left can enter the `top` largest exact distances;
    returns the distances (exact where scored by brute force, else approximate) and which are exact. float32 [N],
    bool [N]. errors: as for `knn_distances`.

    A round looks at the `chunk` rows of largest bound that could still enter the top. Those not yet searched again
    are searched through the index at WIDER times its effort: still an upper bound, and for most rows whose neighbours
    the first search missed a tight one, which drops them out of the way at a small part of a brute-force search's
    cost. Once all of them have been, they are scored by brute force and `chunk` doubles (the first takes `top` rows,
    at least FIRST_RESCORE; for IVF every round reads the table once or twice).
    """
    distance, bound = distance.copy(), bound.copy()
    if search.index_type == "flat":  # its search is brute force already
        return distance, np.ones(len(distance), bool)
    exact, widened = np.zeros(len(distance), bool), np.zeros(len(distance), bool)
    chunk, start = max(top, FIRST_RESCORE), time.perf_counter()
    while top:
        scores = distance[exact]
        floor = np.partition(scores, len(scores) - top)[len(scores) - top] if len(scores) >= top else -np.inf
        pending = np.flatnonzero(~exact & (bound >= floor))
        if not len(pending):
            break
        if len(pending) > chunk:
            pending = pending[np.argpartition(-bound[pending], chunk)[:chunk]]
        rows = pending[np.argsort(-bound[pending], kind="stable")]
        narrow = rows[~widened[rows]]
        if len(narrow):
            wide_distance, wide_bound = knn_scores(
                search.loaded, search.vectors(ids[narrow]), ids[narrow], k, errors, WIDER
            )
            better = wide_bound < bound[narrow]
            distance[narrow[better]], bound[narrow[better]] = wide_distance[better], wide_bound[better]
            widened[narrow] = True
        else:
            distance[rows] = exact_distances(search, ids[rows], k)
            exact[rows] = True
            chunk *= 2
    logger.info(
        "kNN top %d made exact: %d of %d images searched again at %dx the effort, %d scored by brute force, in %.2fs",
        top,
        widened.sum(),
        len(distance),
        WIDER,
        exact.sum(),
        time.perf_counter() - start,
    )
    return distance, exact


def descending_ranks(values: np.ndarray) -> np.ndarray:
    """float [N] -> float [N]: 1 for the largest, N for the smallest, NaN where the value is NaN; ties by row order."""
    ranks = np.full(len(values), np.nan)
    valid = np.flatnonzero(~np.isnan(values))
    order = valid[np.argsort(-values[valid], kind="stable")]
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


def ranking(
    paths: pa.Array, loss: np.ndarray, distance: np.ndarray, by: str, exact: np.ndarray | None = None
) -> pa.Table:
    """The anomalies table of N images from their float32 [N] loss and kNN distance (NaN: missing), sorted by rank.

    exact: bool [N], which kNN distances are exact (None: none).
    """
    loss_rank, knn_rank = descending_ranks(loss), descending_ranks(distance)
    mean_rank = (loss_rank + knn_rank) / 2
    if by == "loss":
        rank = loss_rank
    elif by == "knn":
        rank = knn_rank
    else:  # smaller mean rank first; among equal means, the smaller kNN rank
        rank = descending_ranks(-(mean_rank + np.nan_to_num(knn_rank, nan=0.0) / (2 * len(paths) + 2)))
    order = np.argsort(np.nan_to_num(rank, nan=np.inf), kind="stable")

    def ints(values: np.ndarray) -> pa.Array:
        return pa.array(np.nan_to_num(values[order]).astype(np.int32), pa.int32(), mask=np.isnan(values[order]))

    def floats(values: np.ndarray) -> pa.Array:
        return pa.array(values[order].astype(np.float32), pa.float32(), mask=np.isnan(values[order]))

    exact = np.zeros(len(paths), bool) if exact is None else exact
    return pa.table(
        {
            schema.RANK: ints(rank),
            schema.PATH: paths.take(pa.array(order)),
            schema.LOSS: floats(loss),
            schema.LOSS_RANK: ints(loss_rank),
            schema.KNN_DISTANCE: floats(distance),
            schema.KNN_EXACT: pa.array(exact[order], pa.bool_(), mask=np.isnan(distance[order])),
            schema.KNN_RANK: ints(knn_rank),
            schema.MEAN_RANK: floats(mean_rank),
        }
    )
