"""Anomaly rankings of a run: by reconstruction loss, by kNN distance from the index, or by both (rank-averaged).

The kNN score of an image is its mean distance to the k nearest *other* images (cosine distance 1 - cos for a
cosine index, L2 distance for an l2 one): an image unlike the rest of the set has far neighbours. The loss score is
the masked-reconstruction loss the embedding job wrote. Rank 1 is the most anomalous. `both` averages an image's
two ranks and ranks that average (ties: the kNN rank decides); `auto` is `both` for a run with a loss and `knn`
for one embedded without (mask ratio 0). The ranking is written to `run/anomalies.parquet` with every score and
rank, one row per embedded image, sorted by `rank`; its metadata say what it ranked by.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from pipeline import schema
from pipeline.layout import ANOMALIES_FILE
from pipeline.retrieval.index_store import LoadedIndex, load_index, require_current, to_distances
from pipeline.retrieval.vectors import Batch, Embeddings, for_index, iter_batches, open_embeddings
from pipeline.storage import Storage, run_folder, write_parquet

logger = logging.getLogger(__name__)

BY = ("auto", "loss", "knn", "both")
# Columns of anomalies.parquet, besides schema.PATH and schema.LOSS.
RANK = "rank"  # int32: position in the ranking asked for (1 = most anomalous); null when that score is missing
LOSS_RANK = "loss_rank"  # int32: rank by loss, largest first; null without a loss
KNN_DISTANCE = "knn_distance"  # float32: mean distance to the k nearest other images; null without an index
KNN_RANK = "knn_rank"  # int32: rank by knn_distance, largest first
MEAN_RANK = "mean_rank"  # float32: (loss_rank + knn_rank) / 2, what `both` ranks


@dataclass(frozen=True)
class AnomalyConfig:
    """One anomaly ranking."""

    run: str  # run folder, local or s3://
    by: str = "auto"  # auto | loss | knn | both: what `rank` orders by (auto: both with a loss, else knn)
    k: int = 10  # neighbours averaged for the kNN distance
    batch_rows: int = 8_192  # rows read and searched at a time

    def __post_init__(self) -> None:
        if self.by not in BY:
            raise ValueError(f"--by must be one of {', '.join(BY)}, got {self.by!r}")
        if self.k < 1:
            raise ValueError(f"--k must be at least 1, got {self.k}")


def rank_anomalies(config: AnomalyConfig, storage: Storage | None = None) -> pa.Table:
    """Scores every embedded image of the table's latest version, writes `run/anomalies.parquet`, and returns it
    (sorted by rank).

    The table's metadata hold `anomalies.by`, what it was ranked by (for `auto`, the choice made).

    Raises:
        FileNotFoundError: no embeddings; or no index when ranking by knn or both.
        ValueError: no loss in the run when ranking by loss or both; an index older than the embeddings.
    """
    storage = storage or Storage.from_environment()
    embeddings = open_embeddings(config.run, storage)
    by = resolve_by(config.by, embeddings)
    table = score_anomalies(replace(config, by=by), embeddings, _index_for(config.run, by, storage))
    write_parquet(run_folder(config.run, storage), ANOMALIES_FILE, table)
    logger.info("ranked %d images by %s; wrote %s/%s", table.num_rows, by, config.run, ANOMALIES_FILE)
    return table


def resolve_by(by: str, embeddings: Embeddings) -> str:
    """`auto` -> both for a run with a loss, knn for one without; anything else as it is."""
    if by != "auto":
        return by
    by = "both" if _has_loss(embeddings.dataset) else "knn"
    logger.info("ranking by %s: the run %s a reconstruction loss", by, "has" if by == "both" else "has no")
    return by


def score_anomalies(config: AnomalyConfig, embeddings: Embeddings, loaded: LoadedIndex | None) -> pa.Table:
    """The ranking of one version of the embeddings table (not written), with that version's index (None: none, for
    a ranking by loss). `config.by` must not be auto (see `resolve_by`).

    Raises:
        FileNotFoundError: no index when ranking by knn or both.
        ValueError: no loss in the run when ranking by loss or both; an index of another table version.
    """
    by = config.by
    assert by != "auto", "resolve_by first"
    if loaded is None and by != "loss":
        raise FileNotFoundError(f"{config.run} has no index; ranking by {by} needs one (vitmae index --run {config.run})")
    if loaded is not None:
        require_current(loaded, config.run, embeddings.version)
    columns = (schema.PATH, schema.LOSS) + ((schema.EMBEDDING,) if loaded else ())
    paths, losses, knn = [], [], []
    for batch in iter_batches(embeddings, config.batch_rows, columns):
        paths.append(batch.paths)
        losses.append(batch.table.column(schema.LOSS).to_numpy(zero_copy_only=False).astype(np.float32))
        if loaded:
            knn.append(knn_distances(loaded, batch, config.k))
    loss = np.concatenate(losses) if losses else np.empty(0, np.float32)
    if by != "knn" and np.isnan(loss).all():
        raise ValueError(
            f"{config.run} has no reconstruction loss (it was embedded with --mask-ratio 0); "
            "rank with --by knn, or embed again with --mask-ratio 0.75"
        )
    distance = np.concatenate(knn) if knn else np.full(len(loss), np.nan, np.float32)
    table = ranking(pa.concat_arrays(paths), loss, distance, by)
    meta = {"by": by, "k": str(config.k), "metric": loaded.metric if loaded else "", "table_version": str(embeddings.version)}
    return table.replace_schema_metadata({f"anomalies.{k}": v for k, v in meta.items()})


def _has_loss(dataset: pads.Dataset) -> bool:
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


def knn_distances(loaded: LoadedIndex, batch: Batch, k: int) -> np.ndarray:
    """Mean distance of each row of `batch` to its k nearest other indexed images. float32 [B]."""
    k = min(k, loaded.count - 1)
    squared, ids = loaded.search(for_index(batch.vectors, loaded.metric), k + 1)
    others = (ids != batch.ids[:, None]) & (ids >= 0)
    others &= np.cumsum(others, axis=1) <= k  # the first k that are not the image itself
    distances = to_distances(squared, loaded.metric)
    return ((distances * others).sum(axis=1) / np.maximum(others.sum(axis=1), 1)).astype(np.float32)


def descending_ranks(values: np.ndarray) -> np.ndarray:
    """float [N] -> float [N]: 1 for the largest, N for the smallest, NaN where the value is NaN; ties by row order."""
    ranks = np.full(len(values), np.nan)
    valid = np.flatnonzero(~np.isnan(values))
    order = valid[np.argsort(-values[valid], kind="stable")]
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


def ranking(paths: pa.Array, loss: np.ndarray, distance: np.ndarray, by: str) -> pa.Table:
    """The anomalies table of N images from their float32 [N] loss and kNN distance (NaN: missing), sorted by rank."""
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

    return pa.table({
        RANK: ints(rank), schema.PATH: paths.take(pa.array(order)), schema.LOSS: floats(loss), LOSS_RANK: ints(loss_rank),
        KNN_DISTANCE: floats(distance), KNN_RANK: ints(knn_rank), MEAN_RANK: floats(mean_rank),
    })
