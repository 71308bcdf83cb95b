"""What the service serves, and how it follows the run: an immutable `RunState` (one table version, its index, id
map and model), replaced whole by `LiveRun` when a later run has updated the table and its index (docs/design.md,
"The service following a run").
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.embed.decode import DecodeConfig
from pipeline.embed.query import QueryEmbedder
from pipeline.layout import EMBEDDINGS_DIR, INFO_FILE, output_uri
from pipeline.records import latest_run
from pipeline.retrieval.exact import stored_vectors
from pipeline.retrieval.search import Hit, Searcher
from pipeline.service.rankings import AnomalyRankings, DuplicateGroups
from pipeline.storage import Storage, folder, listed_uri
from pipeline.tables import description, open_table
from vitmae.errors import one_line

logger = logging.getLogger(__name__)


class PathLookup:
    """Path -> position in the index's id map in O(log N), over a sorted order of the paths (8 bytes a path)."""

    def __init__(self, paths: pa.Array) -> None:
        self.paths = paths
        self.order = pc.sort_indices(paths).to_numpy()  # int64 [N]: positions by path

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> str:
        return self.paths[int(self.order[i])].as_py()

    def position(self, path: str) -> int | None:
        """The position of `path` in the id map, or None."""
        at = bisect.bisect_left(self, path)
        return int(self.order[at]) if at < len(self) and self[at] == path else None


def _one_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="image-model")


@dataclass(frozen=True)
class ImageModel:
    """The run's model for query images, kept across states while the run's model settings stay the same."""

    key: str  # the settings it was loaded for: model, weights' digest, processor, decoding, pooling
    embedder: QueryEmbedder
    # The one thread that runs every image query: a forward pass already uses all of torch's threads, so concurrent
    # ones would only contend; queued queries hold no other thread; and decoding and the model's activations stay in
    # one thread's malloc arena instead of one per thread of a pool.
    worker: ThreadPoolExecutor = field(default_factory=_one_thread, compare=False, repr=False)

    def embed(self, data: bytes) -> np.ndarray:
        """Encoded image bytes -> raw float32 [D] (on the calling thread). ValueError: not a decodable image."""
        return self.embedder(data)


@dataclass(frozen=True)
class RunState:
    """One consistent view of the run: a table version with the index built from it."""

    run: str
    signature: tuple[int, str]  # (table version, index.json as read): what the watcher compares
    searcher: Searcher
    lookup: PathLookup
    image_model: ImageModel | None  # None: search by image is unavailable, for `image_error`
    image_error: str | None
    decode: DecodeConfig  # the run's pixel limit, for thumbnails as for queries
    anomalies: AnomalyRankings
    loaded_at: float = field(default_factory=time.time)

    @property
    def table_version(self) -> int:
        return self.searcher.embeddings.version

    @property
    def info(self) -> dict:
        return self.searcher.loaded.info

    def position(self, path: str) -> int | None:
        """The position in the id map of an indexed path, exactly as stored."""
        return self.lookup.position(path)

    def resolve(self, path: str) -> int | None:
        """As `position`, also taking a local file path for its file:// URI (as `vitmae search --path` does)."""
        found = self.position(path)
        if found is None and "://" not in path and path.startswith("/"):
            found = self.position(listed_uri(path))
        return found

    def search_position(self, position: int, k: int) -> list[Hit]:
        """The k nearest of the indexed image at `position` of the id map (itself first)."""
        loaded = self.searcher.loaded
        ids = loaded.ids[position : position + 1]
        vector = stored_vectors(loaded, self.searcher.embeddings, ids)  # unit length for cosine, which ranks alike
        return self.searcher.search_vectors(vector, k)[0]

    def search_image(self, data: bytes, k: int) -> list[Hit]:
        """The k nearest of an encoded image (run it on `image_model.worker`). ValueError: not a decodable image."""
        assert self.image_model is not None, "callers check image_model first"
        return self.searcher.search_vectors(self.image_model.embed(data), k)[0]


def read_signature(run: str, storage: Storage) -> tuple[int | None, str | None]:
    """(the embeddings table's latest version, index.json's text): None for what is not there."""
    table = open_table(output_uri(run, EMBEDDINGS_DIR), storage)
    found = folder(run, storage)
    try:
        info = found.fs.cat_file(found.path(INFO_FILE)).decode()
    except FileNotFoundError:
        info = None
    return (table.version() if table is not None else None), info


def load_state(run: str, storage: Storage, previous: RunState | None = None, with_model: bool = True) -> RunState:
    """Loads the run's current table version, index and id map, and its model unless `previous` has the same one.

    Raises:
        FileNotFoundError: no run, no table, no index. ValueError: an index that does not reflect the table.
    """
    version, info_text = read_signature(run, storage)
    searcher = Searcher(run, storage)
    if (searcher.embeddings.version, json.loads(info_text or "null")) != (version, searcher.loaded.info):
        raise ValueError(f"{run} changed while it was being loaded")  # the watcher tries again
    image_model, image_error, decode = None, "the service was started without the model", DecodeConfig()
    if with_model:
        image_model, image_error, decode = _image_model(run, storage, searcher, previous)
    lookup = PathLookup(searcher.loaded.paths)
    return RunState(
        run,
        (version, info_text),
        searcher,
        lookup,
        image_model,
        image_error,
        decode,
        AnomalyRankings(run, storage, searcher.embeddings, searcher.loaded),
    )


def _image_model(
    run: str, storage: Storage, searcher: Searcher, previous: RunState | None
) -> tuple[ImageModel | None, str | None, DecodeConfig]:
    """The run's model for image queries (the previous state's where its settings are the same), or why there is
    none."""
    try:
        record = latest_run(run, storage)
        about = description(open_table(output_uri(run, EMBEDDINGS_DIR), storage))
        decode = DecodeConfig.from_dict(record["decode"])
        key = json.dumps(
            [
                record["model"],
                about.get("model", {}).get("sha256"),
                record["processor"],
                record["decode"],
                record["infer"]["pooling"],
            ],
            sort_keys=True,
        )
    except (FileNotFoundError, KeyError, TypeError, ValueError) as err:
        return None, f"the run has no record of its model ({one_line(err)})", DecodeConfig()
    if previous is not None and previous.image_model is not None and previous.image_model.key == key:
        return previous.image_model, None, decode
    try:
        embedder = QueryEmbedder(run, storage)
    except Exception as err:  # noqa: BLE001 - a model that is gone or unreadable leaves the rest of the service working
        logger.warning("search by image is unavailable: %s", one_line(err))
        return None, f"the run's model could not be loaded ({one_line(err)})", decode
    if embedder.dimension != searcher.loaded.dimension:
        return (
            None,
            (
                f"the run's model makes {embedder.dimension}-d embeddings but the index holds "
                f"{searcher.loaded.dimension}-d vectors"
            ),
            decode,
        )
    return ImageModel(key, embedder), None, decode


class LiveRun:
    """The state served now, and the watcher that replaces it when the run changes."""

    def __init__(self, run: str, storage: Storage, check_seconds: float = 5.0, with_model: bool = True) -> None:
        """Loads the run (see `load_state` for what it raises)."""
        self.run, self.storage, self.check_seconds, self.with_model = run, storage, check_seconds, with_model
        self._state = load_state(run, storage, with_model=with_model)
        self.duplicates = DuplicateGroups(run, storage)
        self.reloads = 0  # states loaded since the first
        self.checked_at = time.time()
        self.last_error: str | None = None  # why the last check could not switch, while it could not
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def state(self) -> RunState:
        """The current state: take it once per request and keep it."""
        return self._state

    def refresh(self) -> bool:
        """Switches to the run's new table version and index when both are there; True when it switched."""
        with self._refresh_lock:
            self.checked_at = time.time()
            try:
                version, info_text = read_signature(self.run, self.storage)
                if (version, info_text) == self._state.signature:
                    self.last_error = None
                    return False
                built = json.loads(info_text).get("table_version") if info_text else None
                if version is None or built != version:
                    self.last_error = f"the table is at version {version}; waiting for its index (at {built})"
                    logger.info("%s: %s", self.run, self.last_error)
                    return False
                state = load_state(self.run, self.storage, self._state, self.with_model)
            except Exception as err:  # noqa: BLE001 - the old state keeps serving; the next check tries again
                self.last_error = one_line(err)
                logger.warning(
                    "%s: could not load the new state, serving version %s: %s",
                    self.run,
                    self._state.table_version,
                    self.last_error,
                )
                return False
            self._state, self.last_error = state, None
            self.reloads += 1
            logger.info(
                "%s: now serving table version %d (%d images, %s index)",
                self.run,
                state.table_version,
                state.searcher.count,
                state.info["index_type"],
            )
            return True

    def start(self) -> None:
        """Starts the watcher thread (once)."""
        if self._watcher is None:
            self._stop.clear()
            self._watcher = threading.Thread(target=self._watch, name="run-watcher", daemon=True)
            self._watcher.start()

    def stop(self) -> None:
        if self._watcher is not None:
            self._stop.set()
            self._watcher.join(timeout=60)
            self._watcher = None

    def _watch(self) -> None:
        while not self._stop.wait(self.check_seconds):
            self.refresh()
