"""Groups of near-duplicate images in a run: connected components of the pairs at cosine similarity >= a threshold.

    find_duplicates(DuplicateConfig("s3://bucket/runs/photos/", threshold=0.95))   # -> run/duplicates.parquet

No pair below the threshold is ever reported (docs/design.md, "Near-duplicates"). The same pairs between two runs
(`against`, the images of one run that near-duplicate another's): pipeline.retrieval.leaks, with the helpers here.
"""

# No postponed annotations here: the command line subclasses the settings below and reads its field types
# in the subclass's module (jobs.command).

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schema
from pipeline.layout import DUPLICATES_FILE
from pipeline.retrieval.exact import HOLDS_VECTORS, ROUNDING
from pipeline.retrieval.index_store import LoadedIndex, load_index, require_current
from pipeline.retrieval.vectors import Embeddings, for_index, iter_batches, open_embeddings, vectors_of_ids
from pipeline.storage import RunLocation, Storage, absolute_uri, run_folder, write_parquet
from vitmae.errors import InvalidInput

logger = logging.getLogger(__name__)

REPRESENTATIVE_RULE = "the largest image (width x height), then the largest file, then the first path"


@dataclass(frozen=True)
class DuplicateConfig(RunLocation):
    """One search for near-duplicates in a run (its index must be a cosine one)."""

    threshold: float = 0.95
    """cosine similarity at or above which two images are near-duplicates, in (0, 1]"""
    batch_rows: int = 8_192
    """rows read and searched at a time"""
    against: str = ""
    """another run's folder (e.g. the training set's): list the images of --run that near-duplicate its images,
    searched with its index, into RUN/leaks.parquet (empty: group --run's own near-duplicates)"""

    def __post_init__(self) -> None:
        if not (isinstance(self.threshold, (int, float)) and 0 < self.threshold <= 1):
            raise InvalidInput(f"threshold must be a cosine similarity in (0, 1], got {self.threshold}")
        if self.batch_rows < 1:
            raise InvalidInput(f"batch_rows must be at least 1, got {self.batch_rows}")
        if self.against and absolute_uri(self.against).rstrip("/") == absolute_uri(self.run).rstrip("/"):
            raise InvalidInput(
                f"--against names the run itself ({self.against}); give another run's folder, or leave it out to "
                "group the run's own near-duplicates"
            )


def find_duplicates(config: DuplicateConfig, storage: Storage | None = None) -> pa.Table:
    """Groups the run's near-duplicates, writes `run/duplicates.parquet`, and returns it (module docstring).

    Raises:
        FileNotFoundError: no embeddings, or no index. ValueError: no rows; an index older than the table, or an l2
        one; `config.against` set (pipeline.retrieval.leaks.find_leaks reads two runs).
    """
    if config.against:
        raise InvalidInput(f"find_duplicates groups one run; find_leaks compares {config.run} with {config.against}")
    storage = storage or Storage.from_config(config.storage)
    start = time.perf_counter()
    embeddings = open_embeddings(config.run, storage)
    images = image_rows(embeddings)
    if images.num_rows == 0:
        raise InvalidInput(
            f"{config.run} holds no embeddings (version {embeddings.version} of its table); nothing to group"
        )
    loaded = cosine_index(config.run, storage, embeddings)
    identical = identical_files(images)
    candidates = candidate_pairs(loaded, embeddings, config, np.unique(identical[:, 1]))
    needed = np.unique(np.concatenate([candidates.ravel(), identical.ravel()]))
    vectors = unit_vectors(embeddings, needed, config.batch_rows)
    pairs = candidates[cosines(vectors, needed, candidates) >= config.threshold]
    table = group_table(images, np.concatenate([pairs, identical]), vectors, needed)
    table = table.replace_schema_metadata(
        {
            schema.DUPLICATES_THRESHOLD: repr(config.threshold),
            schema.DUPLICATES_TABLE_VERSION: str(embeddings.version),
            schema.DUPLICATES_INDEX_TYPE: loaded.info["index_type"],
            schema.DUPLICATES_IMAGES: str(images.num_rows),
            schema.DUPLICATES_CANDIDATE_PAIRS: str(len(candidates)),
            schema.DUPLICATES_PAIRS: str(len(pairs)),
            schema.DUPLICATES_IDENTICAL_FILES: str(len(identical)),
            schema.DUPLICATES_REPRESENTATIVE: REPRESENTATIVE_RULE,
        }
    )
    write_parquet(run_folder(config.run, storage), DUPLICATES_FILE, table)
    groups = len(pc.unique(table.column(schema.GROUP))) if table.num_rows else 0
    logger.info(
        "%d groups of near-duplicates (%d images) at cosine >= %g among %d images: %d candidate pairs, %d checked "
        "pairs, %d identical files; %.1fs; wrote %s/%s",
        groups,
        table.num_rows,
        config.threshold,
        images.num_rows,
        len(candidates),
        len(pairs),
        len(identical),
        time.perf_counter() - start,
        config.run,
        DUPLICATES_FILE,
    )
    return table


def image_rows(embeddings: Embeddings, filter: pc.Expression | None = None) -> pa.Table:
    """What a duplicates table says of each image (id, path, width, height, size, etag) of the rows of `filter`,
    sorted by id."""
    columns = [schema.ID, schema.PATH, schema.WIDTH, schema.HEIGHT, schema.SIZE, schema.ETAG]
    return embeddings.dataset.to_table(columns=columns, filter=filter).sort_by(schema.ID)


def cosine_index(run: str, storage: Storage, embeddings: Embeddings) -> LoadedIndex:
    """The run's index, refused unless it reflects `embeddings` and holds cosine distances."""
    loaded = load_index(run, storage)
    require_current(loaded, run, embeddings.version)
    if loaded.metric != "cosine":
        raise InvalidInput(
            f"the index of {run} holds l2 distances; near-duplicates are found by cosine similarity: "
            f"rebuild it with: vitmae index --run {run} --index.metric cosine --rebuild true"
        )
    return loaded


def identical_files(images: pa.Table) -> np.ndarray:
    """int64 [F, 2]: (first id, other id) for every file with the ETag and size of an earlier one (ids ascending)."""
    etag = images.column(schema.ETAG)
    known = images.filter(pc.and_(pc.is_valid(etag), pc.not_equal(etag, "")))
    if known.num_rows < 2:
        return np.empty((0, 2), np.int64)
    known = known.sort_by([(schema.ETAG, "ascending"), (schema.SIZE, "ascending"), (schema.ID, "ascending")])
    ids = known.column(schema.ID).to_numpy().astype(np.int64)
    etags = known.column(schema.ETAG).to_numpy(zero_copy_only=False)
    sizes = known.column(schema.SIZE).to_numpy(zero_copy_only=False)
    starts = np.concatenate([[True], (etags[1:] != etags[:-1]) | (sizes[1:] != sizes[:-1])])
    first = ids[np.flatnonzero(starts)[np.cumsum(starts) - 1]]
    return np.stack([first[~starts], ids[~starts]], axis=1)


def search_radius(loaded: LoadedIndex, embeddings: Embeddings, threshold: float, batch_rows: int) -> float:
    """The squared L2 radius that reaches every pair at cosine >= threshold: 2 (1 - threshold) between unit vectors,
    plus float32 rounding, plus (IVF) the largest reconstruction error of the codes of the first batch of
    `embeddings`, the table the index was built from."""
    margin = 0.0
    if loaded.info["index_type"] not in HOLDS_VECTORS:
        batch = next(iter_batches(embeddings, batch_rows))
        vectors = for_index(batch.vectors, "cosine")
        margin = float(np.linalg.norm(vectors - loaded.index.sa_decode(loaded.index.sa_encode(vectors)), axis=1).max())
    return (math.sqrt(2 * (1 - threshold)) + margin) ** 2 + 4 * ROUNDING  # |x| + |y| = 2 for unit vectors


def candidate_pairs(
    loaded: LoadedIndex, embeddings: Embeddings, config: DuplicateConfig, skip: np.ndarray
) -> np.ndarray:
    """int64 [P, 2]: the unique pairs (a < b) of ids that the range search reaches, `skip` [S] (sorted) not
    searched for."""
    radius = search_radius(loaded, embeddings, config.threshold, config.batch_rows)
    found = reached_pairs(loaded, embeddings, radius, config.batch_rows, skip, self_pairs=False)
    return np.unique(np.sort(found, axis=1), axis=0)


def reached_pairs(
    loaded: LoadedIndex,
    queries: Embeddings,
    radius: float,
    batch_rows: int,
    skip: np.ndarray,
    self_pairs: bool = True,
) -> np.ndarray:
    """int64 [P, 2]: (query id, indexed id) of every pair that a range search of `loaded` at `radius` (squared L2)
    reaches from the rows of `queries` (a table of the index's run, or another run's), `skip` [S] (sorted ids) not
    searched for; without `self_pairs`, no pair of an id with itself."""
    found: list[np.ndarray] = []
    for batch in iter_batches(queries, batch_rows, (schema.EMBEDDING,)):
        keep = ~np.isin(batch.ids, skip, assume_unique=True)
        if not keep.any():
            continue
        lims, _, ids = loaded.range_search(for_index(batch.vectors[keep], "cosine"), radius)
        owners = np.repeat(batch.ids[keep], np.diff(lims))
        reached = (ids >= 0) & (self_pairs | (ids != owners))
        found.append(np.stack([owners[reached], ids[reached]], axis=1))
    return np.concatenate(found).astype(np.int64) if found else np.empty((0, 2), np.int64)


def unit_vectors(embeddings: Embeddings, ids: np.ndarray, batch_rows: int) -> np.ndarray:
    """float64 [len(ids), D]: the raw embeddings of `ids` (int64, unique) scaled to unit length, in their order."""
    if not len(ids):
        return np.empty((0, 0))
    return unit_rows(vectors_of_ids(embeddings, ids, batch_rows).astype(np.float64))


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """float64 [n, D] scaled to unit length (rows of zeros stay zeros)."""
    lengths = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(lengths > 0, lengths, 1.0)


def cosines(vectors: np.ndarray, ids: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """float64 [P]: the cosine similarity of each pair of ids, from unit float64 `vectors` [n, D] of the sorted `ids`.
    Equal vectors give exactly 1, which float64 rounding of a dot product could miss."""
    if not len(pairs):
        return np.empty(0)
    a, b = vectors[np.searchsorted(ids, pairs[:, 0])], vectors[np.searchsorted(ids, pairs[:, 1])]
    return np.where((a == b).all(axis=1), 1.0, np.einsum("ij,ij->i", a, b))


def connected_components(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int64 [E, 2] edges between ids -> (nodes int64 [n] sorted, component int64 [n]: the smallest node index of each
    node's component). Union-find in numpy: roots hook under the smaller root of each edge, then paths compress."""
    nodes, inverse = np.unique(pairs, return_inverse=True)
    a, b = inverse.reshape(-1, 2).T
    parent = np.arange(len(nodes))
    while True:
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        if not differ.any():
            return nodes, parent
        np.minimum.at(parent, np.maximum(ra, rb)[differ], np.minimum(ra, rb)[differ])
        while not np.array_equal(parent[parent], parent):
            parent = parent[parent]


def group_table(
    images: pa.Table,
    edges: np.ndarray,
    vectors: np.ndarray,
    needed: np.ndarray,
    representatives: np.ndarray | None = None,
) -> pa.Table:
    """The duplicates table from the checked `edges` [E, 2] (ids), with `images` (id, path, width, height, size, etag;
    sorted by id) for every row and unit float64 `vectors` of the sorted `needed` ids.

    representatives: the ids a group's representative is taken from where the group holds one (None: any id); the
    rule below then chooses among them.
    """
    if not len(edges):
        return empty_table()
    nodes, component = connected_components(edges)
    other = ~np.isin(nodes, representatives) if representatives is not None else np.zeros(len(nodes), bool)
    rows = images.take(pa.array(np.searchsorted(images.column(schema.ID).to_numpy(), nodes)))
    paths = np.array(rows.column(schema.PATH).to_pylist(), dtype=object)
    area = (
        pc.multiply(rows.column(schema.WIDTH).cast(pa.int64()), rows.column(schema.HEIGHT).cast(pa.int64()))
        .fill_null(0)
        .to_numpy()
    )
    size = rows.column(schema.SIZE).fill_null(0).to_numpy()
    # Representative first within each component: one of `representatives`, largest area, largest file, first path.
    order = np.lexsort((np.argsort(np.argsort(paths, kind="stable")), -size, -area, other, component))
    first = np.concatenate([[True], component[order][1:] != component[order][:-1]])
    representative = np.empty(len(nodes), np.int64)  # node index of each node's representative
    representative[order] = order[np.flatnonzero(first)[np.cumsum(first) - 1]]
    similarity = cosines(vectors, needed, np.stack([nodes, nodes[representative]], axis=1)).astype(np.float32)
    etag = np.array(rows.column(schema.ETAG).fill_null("").to_pylist(), dtype=object)
    identical_to = (etag != "") & (etag == etag[representative]) & (size == size[representative])
    identical_to &= representative != np.arange(len(nodes))
    sizes = np.bincount(component, minlength=len(nodes))[component]
    # Groups numbered by size (largest first), then by the representative's path.
    reps = np.unique(representative)
    rank_of = np.empty(len(nodes), np.int64)
    rank_of[reps[np.lexsort((np.argsort(np.argsort(paths[reps], kind="stable")), -sizes[reps]))]] = np.arange(
        1, len(reps) + 1
    )
    group = rank_of[representative]
    final = np.lexsort(
        (np.argsort(np.argsort(paths, kind="stable")), -similarity, representative != np.arange(len(nodes)), group)
    )
    return pa.table(
        {
            schema.GROUP: pa.array(group[final], pa.int32()),
            schema.GROUP_SIZE: pa.array(sizes[final], pa.int32()),
            schema.PATH: pa.array(paths[final], pa.string()),
            schema.ID: pa.array(nodes[final], pa.int64()),
            schema.REPRESENTATIVE: pa.array(paths[representative][final], pa.string()),
            schema.SIMILARITY: pa.array(similarity[final], pa.float32()),
            schema.IDENTICAL: pa.array(identical_to[final], pa.bool_()),
        }
    )


def empty_table() -> pa.Table:
    return pa.table(
        {
            schema.GROUP: pa.array([], pa.int32()),
            schema.GROUP_SIZE: pa.array([], pa.int32()),
            schema.PATH: pa.array([], pa.string()),
            schema.ID: pa.array([], pa.int64()),
            schema.REPRESENTATIVE: pa.array([], pa.string()),
            schema.SIMILARITY: pa.array([], pa.float32()),
            schema.IDENTICAL: pa.array([], pa.bool_()),
        }
    )


def groups_of(table: pa.Table, top: int | None = None) -> list[dict[str, Any]]:
    """The first `top` groups of a duplicates table in its order (all for None), as `group_of` gives them, with
    similarities rounded to 6 decimals."""
    groups = table.column(schema.GROUP).to_pylist()
    starts = [i for i in range(len(groups)) if i == 0 or groups[i] != groups[i - 1]] + [len(groups)]
    return [group_of(table.slice(lo, hi - lo).to_pydict(), digits=6) for lo, hi in list(zip(starts, starts[1:]))[:top]]


def group_of(members: dict[str, list[Any]], digits: int | None = None) -> dict[str, Any]:
    """One group's rows of a duplicates table, as columns with the representative first -> {"group", "size",
    "representative", "members": [{"path", "similarity", "identical"}, ...]}; each member also names its "run" where
    the table says (leaks.parquet).

    Args:
        members: the group's columns, each a list of its rows' values.
        digits: similarities rounded to this many decimals (None: as stored); NaN becomes None.
    """
    paths = members[schema.PATH]
    identical = members.get(schema.IDENTICAL) or [None] * len(paths)  # None: a file written before the column
    similarity = [schema.nan_to_none(s) for s in members[schema.SIMILARITY]]
    if digits is not None:
        similarity = [s if s is None else round(s, digits) for s in similarity]
    listed = [{"path": p, "similarity": s, "identical": i} for p, s, i in zip(paths, similarity, identical)]
    for member, run in zip(listed, members.get(schema.SOURCE_RUN) or []):
        member["run"] = run
    return {
        "group": members[schema.GROUP][0],
        "size": members[schema.GROUP_SIZE][0],
        "representative": members[schema.REPRESENTATIVE][0],
        "members": listed,
    }
