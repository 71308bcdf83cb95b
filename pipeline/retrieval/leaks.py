"""The images of one run that near-duplicate images of another (cosine >= a threshold): test images leaked from a
training set.

    find_leaks(DuplicateConfig("s3://b/runs/test/", against="s3://b/runs/train/"))   # -> test/leaks.parquet

The other run's index (the larger set's) is range-searched by this run's vectors, as `duplicates` searches a run's own,
and every pair is checked on the raw embeddings in float64: no pair below the threshold is ever reported. Files with
the ETag and size of one of the other run's are leaks without any search. Each group is one image of the other run
(its representative) and the images of this run whose best match it is (same bytes first, then the highest cosine):
every leaked image is listed once, at its exact cosine to that match. The ids of the two tables overlap, so the other
run's ids are taken as -1 - id while grouping; the `run` column says which run each row's image (and id) is in.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schema
from pipeline.embed.checks import differing_settings, shown_setting
from pipeline.layout import EMBEDDINGS_DIR, LEAKS_FILE, output_uri
from pipeline.retrieval.duplicates import (
    DuplicateConfig,
    cosine_index,
    cosines,
    group_table,
    identical_files,
    image_rows,
    reached_pairs,
    search_radius,
    unit_vectors,
)
from pipeline.retrieval.index_store import LoadedIndex
from pipeline.retrieval.vectors import Embeddings, first_dimension, open_embeddings
from pipeline.storage import Storage, run_folder, write_parquet
from pipeline.tables import description, open_table
from vitmae.errors import InvalidInput

logger = logging.getLogger(__name__)

LEAK_RULE = "the image of the other run; each image of this run in the group of its best match (same bytes, cosine)"
# The settings an embeddings table records (pipeline.embed.checks.settings) that make its embeddings another space.
# Not the others: mask_ratio, loss_samples, seed and patch_loss change the loss only (an embedding is always of the
# whole image), and the dtype and decode mode move an embedding by a cosine of 1e-5 to 5e-5 (bf16 against float32 on
# CPUs, the fast decode against the exact one: benchmarks/RESULTS.md), far below any near-duplicate threshold; runs
# embedded on GPUs (bf16) and on CPUs without bf16 units (float32) compare.
EMBEDDING_SETTINGS = ("model_sha256", "processor", "pooling")


def find_leaks(config: DuplicateConfig, storage: Storage | None = None) -> pa.Table:
    """Lists the images of `config.run` that near-duplicate images of `config.against`, writes `run/leaks.parquet`,
    and returns it (module docstring): the columns of duplicates.parquet and `run`.

    Raises:
        FileNotFoundError: either run without embeddings, or the other run without an index. ValueError: no rows in
        either; the two embedded with other settings; the other's index older than its table, or an l2 one.
    """
    storage = storage or Storage.from_config(config.storage)
    start = time.perf_counter()
    test, train, loaded = opened_runs(config, storage)
    test_images, train_count = image_rows(test), train.count()
    identical = identical_across(test_images, train)
    radius = search_radius(loaded, train, config.threshold, config.batch_rows)
    found = reached_pairs(loaded, test, radius, config.batch_rows, np.unique(identical[:, 1]))
    candidates = np.unique(np.stack([other_key(found[:, 1]), found[:, 0]], axis=1), axis=0)
    needed = np.unique(np.concatenate([candidates.ravel(), identical.ravel()]))
    theirs = needed < 0  # sorted: the other run's keys first, as `cosines` wants the vectors
    parts = [(train, other_key(needed[theirs])), (test, needed[~theirs])]
    vectors = np.concatenate([unit_vectors(e, ids, config.batch_rows) for e, ids in parts if len(ids)] or [[]])
    similarity = cosines(vectors, needed, candidates)
    above = similarity >= config.threshold
    pairs, similarity = candidates[above], similarity[above]
    edges = best_matches(np.concatenate([identical, pairs]), np.concatenate([np.full(len(identical), 2.0), similarity]))
    train_images = image_rows(train, pc.field(schema.ID).isin(pa.array(other_key(np.unique(edges[:, 0])), pa.int64())))
    images = pa.concat_tables([with_keys(train_images), test_images]).sort_by(schema.ID)
    table = with_runs(group_table(images, edges, vectors, needed, representatives=edges[:, 0]), config)
    table = table.replace_schema_metadata(
        {
            schema.DUPLICATES_THRESHOLD: repr(config.threshold),
            schema.DUPLICATES_TABLE_VERSION: str(test.version),
            schema.DUPLICATES_AGAINST: config.against,
            schema.DUPLICATES_AGAINST_TABLE_VERSION: str(train.version),
            schema.DUPLICATES_INDEX_TYPE: loaded.info["index_type"],
            schema.DUPLICATES_IMAGES: str(test_images.num_rows),
            schema.DUPLICATES_AGAINST_IMAGES: str(train_count),
            schema.DUPLICATES_CANDIDATE_PAIRS: str(len(candidates)),
            schema.DUPLICATES_PAIRS: str(len(pairs)),
            schema.DUPLICATES_IDENTICAL_FILES: str(len(identical)),
            schema.DUPLICATES_REPRESENTATIVE: LEAK_RULE,
        }
    )
    write_parquet(run_folder(config.run, storage), LEAKS_FILE, table)
    logger.info(
        "%d of %d images of %s near-duplicate %d of %d images of %s at cosine >= %g: %d candidate pairs, %d checked "
        "pairs, %d identical files; %.1fs; wrote %s/%s",
        len(edges),
        test_images.num_rows,
        config.run,
        table.num_rows - len(edges),
        train_count,
        config.against,
        config.threshold,
        len(candidates),
        len(pairs),
        len(identical),
        time.perf_counter() - start,
        config.run,
        LEAKS_FILE,
    )
    return table


def opened_runs(config: DuplicateConfig, storage: Storage) -> tuple[Embeddings, Embeddings, LoadedIndex]:
    """(this run's embeddings, the other's, the other's index), once every check has passed: rows in both, the same
    embedding settings, the other's index current and cosine, one dimension."""
    assert config.against, "find_leaks compares two runs: give config.against"
    test, train = open_embeddings(config.run, storage), open_embeddings(config.against, storage)
    for run, embeddings in ((config.run, test), (config.against, train)):
        if embeddings.count() == 0:
            raise InvalidInput(
                f"{run} holds no embeddings (version {embeddings.version} of its table); nothing to compare"
            )
    require_same_settings(config.run, test, config.against, train, storage)
    loaded = cosine_index(config.against, storage, train)
    dimension = first_dimension(test)
    if dimension != loaded.dimension:
        raise InvalidInput(
            f"the embeddings of {config.run} have {dimension} dimensions and those of {config.against} "
            f"{loaded.dimension}; embed both with one model to compare them"
        )
    return test, train, loaded


def other_key(ids: np.ndarray) -> np.ndarray:
    """The other run's ids <-> their keys in the grouping, -1 - id (its own inverse): below every id of this run."""
    return -1 - np.asarray(ids, np.int64)


def with_keys(images: pa.Table) -> pa.Table:
    """The other run's image rows with their ids as keys (`other_key`)."""
    keys = pa.array(other_key(images.column(schema.ID).to_numpy()), pa.int64())
    return images.set_column(images.schema.get_field_index(schema.ID), schema.ID, keys)


def with_runs(table: pa.Table, config: DuplicateConfig) -> pa.Table:
    """A group table over keys -> the same with each row's own id and its run (`run`, after `id`)."""
    keys = table.column(schema.ID).to_numpy()
    theirs = keys < 0
    table = table.set_column(
        table.schema.get_field_index(schema.ID), schema.ID, pa.array(np.where(theirs, other_key(keys), keys))
    )
    runs = pa.array(np.where(theirs, config.against, config.run).astype(object), pa.string())
    return table.add_column(table.schema.get_field_index(schema.ID) + 1, schema.SOURCE_RUN, runs)


def identical_across(images: pa.Table, other: Embeddings) -> np.ndarray:
    """int64 [F, 2]: (key of the other run's file, id) for each image of `images` with the ETag and size of a file
    of `other` (the same one for every copy: identical_files' first)."""
    etags = pc.unique(images.column(schema.ETAG).drop_null())
    if not len(etags):
        return np.empty((0, 2), np.int64)
    theirs = other.dataset.to_table(
        columns=[schema.ID, schema.SIZE, schema.ETAG], filter=pc.field(schema.ETAG).isin(etags)
    )
    ours = images.select([schema.ID, schema.SIZE, schema.ETAG])
    pairs = identical_files(pa.concat_tables([with_keys(theirs), ours]))
    return pairs[(pairs[:, 0] < 0) & (pairs[:, 1] >= 0)]


def best_matches(pairs: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """int64 [T, 2]: of the (other run's key, id) `pairs` [P, 2], the one of each id with the highest score [P] (ties:
    the smallest key), sorted by id."""
    order = np.lexsort((pairs[:, 0], -scores, pairs[:, 1]))
    first = np.concatenate([[True], pairs[order][1:, 1] != pairs[order][:-1, 1]]) if len(pairs) else np.empty(0, bool)
    return pairs[order][first]


def require_same_settings(run: str, test: Embeddings, against: str, train: Embeddings, storage: Storage) -> None:
    """Refuses two runs whose tables record other embedding settings (model, processor, pooling), naming each
    difference."""
    recorded = [
        embedding_settings(output_uri(name, EMBEDDINGS_DIR), embeddings.version, storage)
        for name, embeddings in ((run, test), (against, train))
    ]
    differences = [
        f"{name} {shown_setting(value)} ({run}) vs {shown_setting(other)} ({against})"
        for name, (value, other) in differing_settings(*recorded).items()
    ]
    if differences:
        raise InvalidInput(
            f"{run} and {against} were embedded with other settings, so their embeddings do not compare: "
            f"{'; '.join(differences)}; embed one again with the other's model and settings (vitmae embed --output "
            "... --overwrite true)"
        )


def embedding_settings(uri: str, version: int, storage: Storage) -> dict[str, Any]:
    """The settings that the embeddings table at `uri` records at `version`, those that change embeddings only;
    {} where it records none."""
    recorded = description(open_table(uri, storage, version)).get("settings") or {}
    return {name: recorded[name] for name in EMBEDDING_SETTINGS if name in recorded}
