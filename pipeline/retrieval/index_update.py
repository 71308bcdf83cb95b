"""The index follows the embeddings table: after a run, its new ids are added and its removed ids taken out, or it is
rebuilt (docs/design.md, "The index after a run").
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import asdict
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schema
from pipeline.retrieval.index import GB, IndexConfig, TooFewVectors, build_index, choose_index
from pipeline.retrieval.index_store import LoadedIndex, load_index, save_index
from pipeline.retrieval.vectors import (
    Embeddings,
    all_ids,
    first_dimension,
    for_index,
    iter_batches,
    open_embeddings,
    write_id_map,
)
from pipeline.storage import Storage

logger = logging.getLogger(__name__)

# An HNSW index is rebuilt once this share of its graph is removed ids (benchmarks/RESULTS.md, "The index follows the
# table").
HNSW_REBUILD_REMOVED = 0.2


def update_index(run: str, config: IndexConfig = IndexConfig(), storage: Storage | None = None) -> dict[str, Any]:
    """Brings the index of `run` to the latest version of its embeddings; returns index.json. storage: None reads
    the environment (`Storage.from_environment`).

    Raises:
        FileNotFoundError: the run has no embeddings. TooFewVectors: fewer than 2. ValueError: no index fits the budget.
    """
    storage = storage or Storage.from_environment()
    embeddings = open_embeddings(run, storage)
    try:
        loaded = load_index(run, storage)
    except (FileNotFoundError, ValueError) as err:  # none yet, or one to replace
        logger.info("building the index of %s: %s", run, err)
        return build_index(run, config, storage)
    if loaded.info.get("table_version") == embeddings.version:
        return loaded.info
    reason = _rebuild_reason(loaded, embeddings, config)
    if reason:
        logger.info("rebuilding the index of %s: %s", run, reason)
        return build_index(run, config, storage)
    return _apply(run, storage, loaded, embeddings)


def _rebuild_reason(loaded: LoadedIndex, embeddings: Embeddings, config: IndexConfig) -> str | None:
    """Why the index must be built anew rather than updated, or None."""
    info = loaded.info
    if info.get("format") != 2:
        return "its format is older"
    if info.get("config", {}) != asdict(config):
        return "other index settings"
    count = embeddings.count()
    if count < 2:
        raise TooFewVectors(f"{embeddings.run} holds {count} embedding(s); an index needs at least 2")
    spec = choose_index(
        count, first_dimension(embeddings), int(config.memory_budget_gb * GB), config.index_type, config.train_rows
    )
    if spec.index_type != info["index_type"]:
        return f"{count:,} vectors now want a {spec.index_type} index ({spec.reason})"
    if not info["built_count"] / 2 <= count <= 2 * info["built_count"]:
        return f"{count:,} vectors against {info['built_count']:,} at the last build"
    return None


def _apply(run: str, storage: Storage, loaded: LoadedIndex, embeddings: Embeddings) -> dict[str, Any]:
    """Adds the table's new ids, takes out its removed ones, and saves the index with the table's version."""
    start = time.perf_counter()
    info = loaded.info
    current = all_ids(embeddings)
    removed = np.setdiff1d(loaded.ids, current, assume_unique=True)
    added = np.setdiff1d(current, loaded.ids, assume_unique=True)
    graph_removed = loaded.removed
    if len(removed):
        if info["index_type"] == "hnsw":
            graph_removed = np.union1d(graph_removed, removed)
        else:
            loaded.index.remove_ids(faiss.IDSelectorBatch(removed))
    if len(graph_removed) > HNSW_REBUILD_REMOVED * max(loaded.index.ntotal, 1):
        logger.info(
            "rebuilding the HNSW index of %s: %d of its %d vectors are removed rows",
            run,
            len(graph_removed),
            loaded.index.ntotal,
        )
        return build_index(run, IndexConfig(**info["config"]), storage)
    if len(added):
        for batch in iter_batches(
            embeddings,
            IndexConfig(**info["config"]).batch_rows,
            columns=(schema.EMBEDDING,),
            filter=pc.field(schema.ID).isin(pa.array(added)),
        ):
            loaded.index.add_with_ids(for_index(batch.vectors, info["metric"]), batch.ids)
    info.update(count=len(current), table_version=embeddings.version)
    info["updates"] = (info.get("updates") or [])[-19:] + [
        {
            "table_version": embeddings.version,
            "added": int(len(added)),
            "removed": int(len(removed)),
            "seconds": round(time.perf_counter() - start, 3),
        }
    ]
    with tempfile.TemporaryDirectory() as tmp:  # the index now holds the table's ids: its id map is the table's
        id_map = os.path.join(tmp, "ids.parquet")
        write_id_map(embeddings, id_map)
        save_index(run, storage, loaded.index, id_map, graph_removed, info)
    logger.info(
        "updated the index of %s: %d added, %d removed, %d vectors", run, len(added), len(removed), len(current)
    )
    return info
