"""The embedding run: the checks, the diff against the tables, then list -> preprocess -> infer -> write on Ray Data
with commits as it goes, then compaction, the index and the run's record.

Every run on an output updates the same Delta tables: it embeds only what is new or changed, removes what is gone,
and commits while it goes, so that a run killed at any moment keeps what it committed and the same command embeds
the rest. Removals are committed before any new row, so an image is never in both tables, nor twice in one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

import ray
from deltalake import DeltaTable

from pipeline import schema
from pipeline.cluster import start_ray
from pipeline.embed.checks import Model, check_model, check_settings, check_weights, settings
from pipeline.embed.commit import Committer
from pipeline.embed.decode import DecodeConfig
from pipeline.embed.diff import Diff, DiffConfig, compare
from pipeline.embed.infer import InferConfig
from pipeline.embed.listing import DEFAULT_EXTENSIONS, iter_input_list, iter_listing, write_listing
from pipeline.embed.poison import attempts_actor
from pipeline.embed.preprocess import PreprocessConfig, preprocess_batch
from pipeline.embed.progress import Progress
from pipeline.embed.resources import batch_size_for, check_cluster, cpu_actors, cpus_have_bf16
from pipeline.embed.work import block_rows, put_work, work_dataset
from pipeline.embed.write import FILE_ROWS, NODES, WriteConfig, data_files, write_batch
from pipeline.layout import EMBEDDINGS_DIR, ERRORS_DIR, RUN_FILES, WORK_DIR, output_uri, package_versions
from pipeline.records import append_run
from pipeline.retrieval.index import IndexConfig, TooFewVectors
from pipeline.retrieval.index_update import update_index
from pipeline.retry import retrying
from pipeline.storage import (
    Storage,
    StorageConfig,
    absolute_uri,
    check_writable,
    folder,
    listed_mtime,
    output_folder,
    probe,
)
from pipeline.storage_errors import explained
from pipeline.tables import DESCRIPTION_FORMAT, RunTable, dataset, description, open_table
from vitmae.errors import InvalidInput, one_line

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedConfig:
    """One embedding run: bring the Delta tables under `output` up to date with the images under `input`."""

    input: str | None
    """the images: a folder, prefix or glob, local or s3:// (or give input_list instead)"""
    output: str
    """the output folder (Delta tables, index), local or s3://; every run updates it"""
    model: str
    """the checkpoint: a folder, s3:// URI or hub id holding config.json, model.safetensors and
    preprocessor_config.json"""
    input_list: str | None = None
    """a file naming the images instead of input, local or s3://: an S3 Inventory report, Parquet with a path column,
    or text with one URI a line"""
    infer: InferConfig = InferConfig()
    decode: DecodeConfig = DecodeConfig()
    index: IndexConfig = IndexConfig()
    build_index: bool = True
    """bring the FAISS index up to the table at the end of the run (false: leave it to `vitmae index`)"""
    batch_size: int | None = None
    """images per model call (null: 256 on GPUs, 8 on CPUs)"""
    num_gpus: int | None = None
    """model actors with one GPU each (null: every GPU of the cluster)"""
    num_actors: int | None = None
    """model actors when there are no GPUs (null: one per CPU, as many as half the memory holds)"""
    cpu_threads: int | None = None
    """torch threads per model actor when there are no GPUs (null: the cluster's CPUs / num_actors)"""
    dashboard: bool = False
    """start Ray's dashboard with the job's own local Ray (a cluster keeps its own)"""
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    """file extensions to embed, e.g. [jpg,png]"""
    overwrite: bool = False
    """start new tables in output instead of updating them"""
    retry_errors: bool = False
    """embed again the unchanged images that failed in earlier runs"""
    keep_missing: bool = False
    """keep the rows of images that are no longer listed"""
    commit_rows: int = 4096
    """commit when this many rows are written but not committed..."""
    commit_seconds: float = 60.0
    """...or when this long has passed since the last commit"""
    progress_seconds: float = 10.0
    """seconds between the lines that say how far the run is (0: only the last)"""
    ray_progress: bool = False
    """also log Ray Data's own progress, operator by operator"""
    vacuum_hours: float = 168.0
    """delete the files no table version of the last this-many hours needs (Delta's 7 days; keep it above your
    longest run and reader)"""
    storage: StorageConfig = StorageConfig()

    def __post_init__(self) -> None:
        if (self.input is None) == (self.input_list is None):
            raise InvalidInput("give exactly one of input and input_list")
        for name in ("batch_size", "num_actors", "cpu_threads", "commit_rows"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InvalidInput(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("num_gpus", "commit_seconds", "progress_seconds", "vacuum_hours"):
            if getattr(self, name) is not None and not getattr(self, name) >= 0:
                raise InvalidInput(f"{name} must be at least 0, got {getattr(self, name)}")


def run(config: EmbedConfig) -> dict[str, Any]:
    """Updates the output with the inputs as they are now; returns the run's record (also kept in `runs/`).

    Raises:
        AccessDenied, NotFound, StorageAttemptUnreachable: the store refused the output, the model or the input, or did
        not answer, before any work (`pipeline.storage_errors.storage_error`).
        ConcurrentRunError: another run committed to the output meanwhile (what this run committed stays).
        IndexNotBuilt: the tables are updated and recorded, but their index could not be brought up to date.
    """
    start = time.time()
    config = replace(
        config,
        output=absolute_uri(config.output),
        model=absolute_uri(config.model, may_be_hub_id=True),
        input=config.input and absolute_uri(config.input),
        input_list=config.input_list and absolute_uri(config.input_list),
    )
    storage = Storage.from_config(config.storage)
    output_folder(config.output, storage)  # refuses a file, and what the store refuses
    run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(start)) + "-" + uuid.uuid4().hex[:6]
    with tempfile.TemporaryDirectory(prefix="vitmae-run-") as scratch:
        existing, model, diff = _plan(config, storage, scratch)
        record: dict[str, Any] = {
            "run_id": run_id,
            "started": _iso(start),
            "input": config.input,
            "input_list": config.input_list,
            "output": config.output,
            "model": config.model,
            "counts": dict(diff.counts),
            "timings": {},
        }
        if diff.work_rows or len(diff.remove_embeddings) or len(diff.remove_errors) or config.overwrite:
            # Every check has read what it needed; a key that may not write fails now, before Ray starts.
            check_writable(config.output, storage, f"{WORK_DIR}/{run_id}.write-check")
            record.update(_update(config, storage, model, existing, diff, run_id))
        else:
            logger.info("nothing to embed or remove in %s", config.output)
            record["settings"] = description(existing[EMBEDDINGS_DIR])["settings"]
    return _finish(config, storage, model, record, start)


def _plan(config: EmbedConfig, storage: Storage, scratch: str) -> tuple[dict[str, DeltaTable | None], Model, Diff]:
    """The checks before any work, and the diff of the listing against the tables as they are now (written to the
    local folder `scratch`): (the tables read, the model, the diff)."""
    existing = (
        {}
        if config.overwrite
        else {name: open_table(output_uri(config.output, name), storage) for name in (EMBEDDINGS_DIR, ERRORS_DIR)}
    )
    known = description(existing[EMBEDDINGS_DIR]) if existing.get(EMBEDDINGS_DIR) else {}
    model = check_model(config.model, storage, known.get("model"))
    if known:
        check_settings(
            known["settings"], settings(model, config.infer, config.infer.dtype, config.decode), config.output
        )
    source = config.input or config.input_list
    chunks = (
        iter_listing(config.input, config.extensions, storage)
        if config.input
        else iter_input_list(config.input_list, storage)
    )
    listing = os.path.join(scratch, "listing")
    os.makedirs(listing)
    with explained(source, storage, "list" if config.input else "read"):
        probe(source, storage)  # the store's refusals, which the listing could take for "no such folder"
        write_listing(chunks, listing)
    datasets = {
        name: dataset(table, output_uri(config.output, name), storage) for name, table in existing.items() if table
    }
    diff = compare(
        f"{listing}/*.parquet",
        datasets.get(EMBEDDINGS_DIR),
        datasets.get(ERRORS_DIR),
        scratch,
        DiffConfig(retry_errors=config.retry_errors, keep_missing=config.keep_missing),
        int(known.get("next_id", 0)),
    )
    return existing, model, diff


def _finish(
    config: EmbedConfig, storage: Storage, model: Model, record: dict[str, Any], start: float
) -> dict[str, Any]:
    """Brings the index up to the tables and keeps the run's record; raises IndexNotBuilt (after recording) when
    the index could not be."""
    indexing = time.time()
    index_error = None
    try:
        record["index"] = (
            retrying(lambda: update_index(config.output, config.index, storage), storage, "updating the index")
            if config.build_index
            else None
        )
    except TooFewVectors as err:
        logger.warning("no index: %s", err)
        record["index"] = None
    except Exception as err:  # the tables stay as committed and recorded; the run fails with one line below
        record["index"], index_error = {"error": f"{type(err).__name__}: {one_line(err)}"}, err
    record["timings"]["index_seconds"] = round(time.time() - indexing, 3)
    record["versions"] = retrying(
        lambda: {name: _version(config.output, name, storage) for name in (EMBEDDINGS_DIR, ERRORS_DIR)},
        storage,
        "reading the tables' versions",
    )
    record.update(
        processor=model.processor.to_dict(),
        decode=asdict(config.decode),
        infer=asdict(config.infer),
        package_versions=package_versions(),
        finished=_iso(time.time()),
        seconds=round(time.time() - start, 3),
    )
    retrying(lambda: append_run(config.output, storage, record), storage, "recording the run")
    if index_error is not None:
        raise IndexNotBuilt(
            f"the tables are updated, but the index could not be ({record['index']['error']}); "
            f"build it with: vitmae index --run {config.output}"
        ) from index_error
    return record


def _update(
    config: EmbedConfig, storage: Storage, model: Model, existing: dict[str, DeltaTable | None], diff: Diff, run_id: str
) -> dict[str, Any]:
    """Removes what went or changed, embeds the work and commits as it goes, then compacts and vacuums."""
    work_rows = diff.work_rows
    known = description(existing[EMBEDDINGS_DIR]) if existing.get(EMBEDDINGS_DIR) else {}
    dtype, timings, started = config.infer.dtype, {}, time.time()
    with _ray_for(config, model, storage) if work_rows else contextlib.nullcontext((0, 0)) as (parameters, gpus):
        if work_rows:
            dtype = _model_dtype(config.infer, known.get("settings", {}).get("dtype"), gpus)
            config = replace(config, infer=replace(config.infer, dtype=dtype))  # every actor runs in this one
            timings["start_ray_seconds"] = round(time.time() - started, 3)
        run_settings = settings(model, config.infer, dtype, config.decode)
        if known:
            check_settings(known["settings"], run_settings, config.output)
        if config.overwrite:  # every check has passed: the earlier tables go now
            output_folder(config.output, storage).remove(RUN_FILES)
        next_id = int(known.get("next_id", 0))
        about = {
            "format": DESCRIPTION_FORMAT,
            "settings": known.get("settings", run_settings),
            "model": {"files": model.files, "sha256": model.sha256},
        }
        # At the versions the diff read: a commit by anyone else since then stops this run before it writes anything.
        tables = {
            name: RunTable.open_or_create(
                output_uri(config.output, name),
                storage,
                table_schema,
                run_id,
                json.dumps({**about, "next_id": next_id}) if name == EMBEDDINGS_DIR else "",
                read=existing.get(name),
            )
            for name, table_schema in (
                (EMBEDDINGS_DIR, schema.embeddings_schema(config.infer.patch_loss)),
                (ERRORS_DIR, schema.ERRORS_SCHEMA),
            )
        }
        # The ids this run may give (the diff numbered the work from next_id) are taken before any row is committed,
        # so a killed run's are never given again.
        tables[EMBEDDINGS_DIR].set_description(json.dumps({**about, "next_id": next_id + work_rows}), work=work_rows)
        removed = {
            name: tables[name].delete_paths(paths)
            for name, paths in ((EMBEDDINGS_DIR, diff.remove_embeddings), (ERRORS_DIR, diff.remove_errors))
        }
        embed_start = time.time()
        committer = Committer(tables, config.commit_rows, config.commit_seconds)
        embedding = _embed(config, storage, model, diff, committer, gpus, parameters, run_id) if work_rows else {}
        embedded, failed = committer.committed[EMBEDDINGS_DIR], committer.committed[ERRORS_DIR]
        if embedded + failed != work_rows:
            raise RuntimeError(
                f"{work_rows} inputs to embed, but {embedded} embeddings and {failed} errors were written"
            )
        timings["embed_seconds"] = round(time.time() - embed_start, 3)
    maintenance = time.time()
    for table in tables.values():
        table.compact()
        table.vacuum(config.vacuum_hours)
    _clear_work(config, storage, run_id)
    timings["maintenance_seconds"] = round(time.time() - maintenance, 3)
    return {
        "settings": run_settings,
        "counts": {**diff.counts, "embedded": embedded, "failed": failed, "rows_removed": removed},
        "commits": committer.commits,
        "timings": timings,
        # Throughput of the pipeline itself: Ray's start-up, the maintenance and the index are timed apart.
        "images_per_second": round(work_rows / timings["embed_seconds"], 3)
        if work_rows and timings["embed_seconds"] > 0
        else None,
        **embedding,
    }


@contextlib.contextmanager
def _ray_for(config: EmbedConfig, model: Model, storage: Storage) -> Iterator[tuple[int, int]]:
    """Ray for the run's stage: joins the cluster, or starts one, while a thread checks the weights (Ray's start-up
    leaves about a core idle for a few seconds, and the check's import of torch takes about a second of one).

    Yields the model's parameter count and the number of GPU actors (`check_cluster`). A Ray this block started or
    joined is shut down when it ends, failed or not, which frees the actors' memory before the index is built; one
    the caller had started stays.
    """
    own = not ray.is_initialized()
    with ThreadPoolExecutor(1) as pool:
        weights = pool.submit(check_weights, model, config.infer, storage)
        if own:
            # The dashboard's processes wake at normal priority and stall the model's GEMM threads on small machines.
            start_ray(logging_level=logging.WARNING, include_dashboard=config.dashboard)
    try:
        yield weights.result(), check_cluster(config)
    finally:
        if own:
            ray.shutdown()


def _model_dtype(infer: InferConfig, table: str | None, gpus: int) -> str:
    """The dtype of every model actor, `auto` resolved once for the cluster (`InferConfig.resolved_dtype`)."""
    cpu_bf16 = infer.dtype == "auto" and not table and not gpus and cpus_have_bf16()
    dtype = infer.resolved_dtype(bool(gpus), cpu_bf16, table)
    if infer.dtype != "auto":
        return dtype
    if table and table != "auto":
        why = "the table's"
    elif gpus:
        why = "on GPUs"
    else:
        why = "every node's CPU multiplies bf16 natively" if cpu_bf16 else "the CPUs have no bf16 units"
    logger.info("the model runs in %s (auto: %s; --infer.dtype sets it)", dtype, why)
    return dtype


def _work_uri(config: EmbedConfig, run_id: str) -> str:
    return output_uri(config.output, f"{WORK_DIR}/{run_id}.parquet")


def _clear_work(config: EmbedConfig, storage: Storage, run_id: str) -> None:
    """Deletes this run's work file, and those that killed runs left more than `vacuum_hours` ago."""
    work = folder(output_uri(config.output, WORK_DIR), storage)

    def clear() -> None:
        for info in work.fs.ls(work.root, detail=True) if work.fs.exists(work.root) else []:
            mtime = listed_mtime(info)
            age = time.time() - (mtime if mtime is not None else time.time())
            if info["name"].endswith(f"{run_id}.parquet") or age > 3600 * config.vacuum_hours:
                work.fs.rm(info["name"])

    retrying(clear, storage, "clearing the work files")


def _embed(
    config: EmbedConfig,
    storage: Storage,
    model: Model,
    diff: Diff,
    committer: Committer,
    gpus: int,
    parameters: int,
    run_id: str,
) -> dict[str, Any]:
    """Runs the Ray Data pipeline over the diff's work (put where every node reads it); returns the resources it used
    and Ray Data's stage statistics."""
    from pipeline.embed.embedder import DecodingEmbedder, Embedder  # torch: loaded by now, by `check_weights`

    # Before any dataset is made: each keeps the context it was made with. Off, the run's own lines say how far it is,
    # and Ray Data's advice on turning its progress back on (in code) is left out: here that is --ray_progress true.
    ray.data.DataContext.get_current().enable_progress_bars = config.ray_progress
    if not config.ray_progress:
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)

    actors, threads = (gpus, None) if gpus else cpu_actors(config, parameters)
    batch_size = config.batch_size or batch_size_for(gpus)
    logger.info(
        "%d model actors on %s, %d images a batch",
        actors,
        f"{gpus} GPUs" if gpus else f"{threads} CPU threads each",
        batch_size,
    )
    preprocess = PreprocessConfig(model.processor.to_dict(), config.decode, storage, threads=threads or 1)
    work = _work_uri(config, run_id)
    block = block_rows(diff.work_rows, batch_size)
    put_work(diff.work_file, work, storage, block)
    model_stage = {
        "model": config.model,
        "config": config.infer,
        "storage": storage,
        "threads": threads,
        "attempts": attempts_actor(),
    }
    if gpus:  # decoding on the CPUs of the cluster, the model on its GPUs
        decoded = work_dataset(work, storage, actors).map_batches(
            preprocess_batch, fn_kwargs={"config": preprocess}, batch_size=block, batch_format="numpy"
        )
        embedded = decoded.map_batches(
            Embedder,
            fn_constructor_kwargs=model_stage,
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=1,
        )
    else:  # each actor holds a CPU, decodes its batches on its threads, then runs the model on them
        embedded = work_dataset(work, storage, actors).map_batches(
            DecodingEmbedder,
            fn_constructor_kwargs={**model_stage, "preprocess": preprocess},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
        )
    dataset_ = embedded.map_batches(
        # Writing is I/O. Holding no CPU, it streams while the model actors hold every CPU of the cluster; one file per
        # model batch or `FILE_ROWS` rows, whichever is more, and never more rows than a commit's, so that the driver
        # commits as soon as enough rows are written (compaction follows).
        write_batch,
        fn_kwargs={"config": WriteConfig(config.output, run_id, storage, config.infer.patch_loss)},
        batch_size=min(max(batch_size, FILE_ROWS), config.commit_rows),
        batch_format="numpy",
        num_cpus=0,
    )
    nodes: set[str] = set()
    with Progress(diff.work_rows, committer, config.progress_seconds) as progress:
        # Each written file as soon as its write ends: with Ray Data's default prefetch of one batch, the iterator
        # holds a file back until the next one exists, and a run killed then (or stalled) would commit nothing of it.
        for files in dataset_.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
            progress.check()
            committer.add(data_files(files))
            nodes.update(node for joined in files[NODES] for node in str(joined).split(",") if node)
        committer.flush()
    resources = {
        "gpus": gpus,
        "actors": actors,
        "cpu_threads": threads,
        "batch_size": batch_size,
        "dashboard": config.dashboard,
        "model_nodes": sorted(nodes),
    }
    return {"resources": resources, "ray_data_stats": dataset_.stats()}


class IndexNotBuilt(Exception):
    """The tables were updated, but bringing their index up to date failed (the failure is the `__cause__`, which
    decides whether the command was wrong, the store was down, or the code failed)."""


def _version(output: str, name: str, storage: Storage) -> int | None:
    table = open_table(output_uri(output, name), storage)
    return table.version() if table is not None else None


def _iso(seconds: float) -> str:
    """UTC, ISO 8601, to the millisecond."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1000):03d}Z"
