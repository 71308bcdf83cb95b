"""Column names, Arrow schemas and metadata keys of every file the jobs write, shared by the stages and the readers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

# Listing and row identity.
ID = "id"  # int64 id of the row in the embeddings table: unique, never reused; the FAISS id
PATH = "path"  # the input URI as listed, with scheme (s3://bucket/key, file:///abs/path)
SIZE = "size_bytes"  # object size at listing time
MTIME = "mtime"  # last-modified time at listing, seconds since the epoch (null when unknown)
ETAG = "etag"  # object-store ETag at listing ("" between stages, null in outputs, on local disks)
RUN = "run_id"  # the run that wrote the row

# Decoding.
PIXELS = "pixels"  # uint8 [H, W, 3] resized image (between stages only, never written)
WIDTH = "width"  # original image width in pixels
HEIGHT = "height"  # original image height in pixels
ERROR = "error"  # readable reason an input could not be embedded; "" between stages when it was
RETRYABLE = "retryable"  # bool: the error was the store being unreachable, so the next run tries again

# Model outputs.
EMBEDDING = "embedding"  # float32 [D] pooled encoder output, not normalised
LOSS = "loss"  # float32 masked-reconstruction loss averaged over the masks; null at mask ratio 0
# binary: each patch's loss, float16 [L] little-endian in patch order (row-major over the grid), NaN where no mask hid
# the patch; only in tables embedded with `patch_loss` (Delta Lake has no float16 type, so bytes: 2 L a row)
PATCH_LOSS = "patch_loss"
NODE = "node"  # the Ray node whose model actor embedded the row (between stages only, never written)

# What identifies an object's content: its ETag where the store gives one, else its size and modification time.
IDENTITY = (SIZE, MTIME, ETAG)

LISTING_SCHEMA = pa.schema([(PATH, pa.string()), (SIZE, pa.int64()), (MTIME, pa.float64()), (ETAG, pa.string())])
# The listing rows a run embeds, with the id each gets if it is embedded.
WORK_SCHEMA = pa.schema([(ID, pa.int64()), *LISTING_SCHEMA])
_META = [(SIZE, pa.int64()), (MTIME, pa.float64()), (ETAG, pa.string()), (RUN, pa.string())]
EMBEDDINGS_SCHEMA = pa.schema(
    [
        (ID, pa.int64()),
        (PATH, pa.string()),
        (EMBEDDING, pa.list_(pa.float32())),
        (LOSS, pa.float32()),
        (WIDTH, pa.int32()),
        (HEIGHT, pa.int32()),
        *_META,
    ]
)


def embeddings_schema(patch_loss: bool) -> pa.Schema:
    """The embeddings table's schema: `EMBEDDINGS_SCHEMA`, with the `PATCH_LOSS` column when the run keeps it."""
    return EMBEDDINGS_SCHEMA.append(pa.field(PATCH_LOSS, pa.binary())) if patch_loss else EMBEDDINGS_SCHEMA


def pack_patch_loss(values: np.ndarray) -> pa.Array:
    """float [N, L] per-patch losses -> binary [N], each row `PATCH_LOSS`'s float16 bytes."""
    data = np.ascontiguousarray(values, dtype="<f2")
    offsets = np.arange(len(data) + 1, dtype=np.int32) * data.shape[1] * 2
    return pa.Array.from_buffers(pa.binary(), len(data), [None, pa.py_buffer(offsets), pa.py_buffer(data.tobytes())])


def unpack_patch_loss(value: bytes) -> np.ndarray:
    """One row of `PATCH_LOSS` -> float32 [L] (NaN where no mask hid the patch)."""
    return np.frombuffer(value, dtype="<f2").astype(np.float32)


ERRORS_SCHEMA = pa.schema([(PATH, pa.string()), (ERROR, pa.string()), (RETRYABLE, pa.bool_()), *_META])


# The metadata of every Delta commit a run makes (pipeline.tables): the run, what the commit did, and its counts.
COMMIT_PREFIX = "vitmae."  # every key a run adds to a commit starts with it
COMMIT_RUN = f"{COMMIT_PREFIX}run"  # the run's id
COMMIT_KIND = f"{COMMIT_PREFIX}commit"  # one of the kinds below
COMMIT_TIME = f"{COMMIT_PREFIX}time"  # seconds since the epoch
COMMIT_TOKEN = f"{COMMIT_PREFIX}token"  # unique to a commit: a retried commit that went through is known by it
COMMIT_ROWS = f"{COMMIT_PREFIX}rows"  # add: the rows appended
COMMIT_FILES = f"{COMMIT_PREFIX}files"  # add: the data files committed
COMMIT_PATHS = f"{COMMIT_PREFIX}paths"  # remove: the paths whose rows were deleted
COMMIT_WORK = f"{COMMIT_PREFIX}work"  # describe: the rows the run set out to embed
# The kinds of commit.
CREATE_COMMIT, ADD_COMMIT, REMOVE_COMMIT = "create", "add", "remove"
DESCRIBE_COMMIT, COMPACT_COMMIT, VACUUM_COMMIT = "describe", "compact", "vacuum"

# anomalies.parquet (pipeline.retrieval.anomalies): PATH, LOSS and these, one row per embedded image, sorted by RANK.
RANK = "rank"  # int32: position in the ranking asked for (1 = most anomalous); null when that score is missing
LOSS_RANK = "loss_rank"  # int32: rank by loss, largest first; null without a loss
KNN_DISTANCE = "knn_distance"  # float32: mean distance to the k nearest other images; null without an index
KNN_EXACT = "knn_exact"  # bool: knn_distance is exact (brute force); false: approximate, below the exact top
KNN_RANK = "knn_rank"  # int32: rank by knn_distance, largest first
MEAN_RANK = "mean_rank"  # float32: (loss_rank + knn_rank) / 2, what `both` ranks
# Its schema metadata, every value a string.
ANOMALIES_BY = b"anomalies.by"  # what it was ranked by: loss, knn or both (auto resolved)
ANOMALIES_K = b"anomalies.k"  # neighbours averaged for knn_distance
ANOMALIES_METRIC = b"anomalies.metric"  # the index's metric ("" without an index)
ANOMALIES_TABLE_VERSION = b"anomalies.table_version"  # the embeddings table version ranked
ANOMALIES_EXACT_TOP = b"anomalies.exact_top"  # the top of the kNN ranking made exact
ANOMALIES_KNN_EXACT = b"anomalies.knn_exact"  # how many rows' knn_distance is exact
ANOMALIES_SCORING_SECONDS = b"anomalies.scoring_seconds"  # time spent scoring every image through the index
ANOMALIES_RANKING_SECONDS = b"anomalies.ranking_seconds"  # time spent rescoring the top exactly and ranking

# duplicates.parquet (pipeline.retrieval.duplicates): PATH, ID and these, one row per image in a group.
GROUP = "group"  # int32: 1 = the largest group (equal sizes: by the representative's path)
GROUP_SIZE = "group_size"  # int32: images in the group
REPRESENTATIVE = "representative"  # string: the path of the group's representative (largest image, file, first path)
SIMILARITY = "similarity"  # float32: exact cosine similarity to the representative (1 for the representative)
IDENTICAL = "identical"  # bool: a byte-identical copy of the representative (same ETag and size); false for it
# Its schema metadata, every value a string.
DUPLICATES_THRESHOLD = b"duplicates.threshold"  # the cosine similarity at or above which images are grouped
DUPLICATES_TABLE_VERSION = b"duplicates.table_version"  # the embeddings table version grouped
DUPLICATES_INDEX_TYPE = b"duplicates.index_type"  # the index that found the candidate pairs
DUPLICATES_IMAGES = b"duplicates.images"  # images searched
DUPLICATES_CANDIDATE_PAIRS = b"duplicates.candidate_pairs"  # pairs the range search reached
DUPLICATES_PAIRS = b"duplicates.pairs"  # pairs at or above the threshold on the raw embeddings
DUPLICATES_IDENTICAL_FILES = b"duplicates.identical_files"  # files with the ETag and size of an earlier one
DUPLICATES_REPRESENTATIVE = b"duplicates.representative"  # the rule that chose each group's representative
# leaks.parquet (`vitmae duplicates --against OTHER`): the columns above, the keys above (images: of --run; index
# type: of OTHER's index), and these.
SOURCE_RUN = "run"  # string: the run folder the image is in, --run or --against as given
DUPLICATES_AGAINST = b"duplicates.against"  # the other run's folder, whose index was searched
DUPLICATES_AGAINST_TABLE_VERSION = b"duplicates.against_table_version"  # the other run's embeddings table version
DUPLICATES_AGAINST_IMAGES = b"duplicates.against_images"  # images in the other run

# runs/ (pipeline.records): one row per finished run of the embedding job, and RUN.
STARTED = "started"  # UTC, ISO 8601
FINISHED = "finished"  # UTC, ISO 8601
EMBEDDINGS_VERSION = "embeddings_version"  # the embeddings table's version when the run ended
RECORD = "record"  # everything else, JSON
RUNS_SCHEMA = pa.schema(
    [
        (RUN, pa.string()),
        (STARTED, pa.string()),
        (FINISHED, pa.string()),
        (EMBEDDINGS_VERSION, pa.int64()),
        (RECORD, pa.string()),
    ]
)

# metrics.parquet of a pre-training run (pipeline.train.loop): one row per optimizer step.
STEP = "step"  # int64: optimizer steps so far, from 1
EPOCH = "epoch"  # int32: epoch of the step, from 1
# LOSS: float32, the batch's reconstruction loss, averaged over the workers
LR = "lr"  # float32: learning rate of the step
IMAGES = "images"  # int64: images the step trained on, over all workers
METRICS_SCHEMA = pa.schema(
    [(STEP, pa.int64()), (EPOCH, pa.int32()), (LOSS, pa.float32()), (LR, pa.float32()), (IMAGES, pa.int64())]
)


# Between stages, missing strings are "" rather than null: Ray types an all-null batch column as
# float, and batches of differing types cannot be concatenated.


def nan_to_none(value: Any) -> Any:
    """A float NaN (a missing score read back from Parquet or numpy) -> None, for JSON; anything else as it is."""
    return None if isinstance(value, float) and math.isnan(value) else value


def failed_rows(errors: np.ndarray) -> np.ndarray:
    """bool [N]: the rows whose `error` holds a reason."""
    return np.array([bool(e) for e in errors], dtype=bool)
