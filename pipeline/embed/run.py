"""The embedding run: checks, then list -> preprocess -> infer -> write on Ray Data, then the index and the manifest."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pyarrow as pa
import ray

from pipeline.embed.decode import DecodeConfig
from pipeline.embed.infer import Embedder, InferConfig, model_class
from pipeline.embed.listing import DEFAULT_EXTENSIONS, list_inputs
from pipeline.embed.preprocess import PreprocessConfig, decoded_images
from pipeline.embed.write import WriteConfig, write_batch
from pipeline.layout import EMBEDDINGS_DIR, ERRORS_DIR, INDEX_DIR, MANIFEST, RUN_FILES, package_versions
from pipeline.retrieval.index import IndexConfig, TooFewVectors, build_index
from pipeline.storage import Storage, absolute_uri, is_local, output_folder
from vitmae import ViTImageProcessor, ViTMAEConfig
from vitmae.checkpoint import CONFIG_NAME, parse_dtype
from vitmae.errors import one_line
from vitmae.folder import open_folder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedConfig:
    """One embedding run, as the job's flags give it."""

    input: str  # folder, prefix or glob, local or s3://
    output: str  # run folder, local or s3://
    model: str  # checkpoint folder, URI or hub id
    infer: InferConfig = InferConfig()  # mask ratio, loss samples, seed, pooling, dtype, compile
    decode: DecodeConfig = DecodeConfig()  # pixel limit and JPEG draft
    index: IndexConfig | None = IndexConfig()  # the FAISS index built last (the rule: pipeline/retrieval/index.py); None: none
    batch_size: int | None = None  # images per model call; None: 256 on GPUs, 8 on CPUs (see `batch_size_for`)
    num_gpus: int | None = None  # model actors with one GPU each; None: every GPU of the cluster
    num_actors: int | None = None  # model actors without GPUs; None: one per CPU, as memory allows (see `cpu_actors`)
    cpu_threads: int | None = None  # torch threads per model actor without GPUs; None: the cluster's CPUs / num_actors
    dashboard: bool = False  # start Ray's dashboard with the job's own local Ray (a cluster keeps its own)
    s3_endpoint: str | None = None  # S3 endpoint; else AWS_ENDPOINT_URL
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS  # file extensions to list
    rows_per_file: int = 4096  # rows per output Parquet file
    overwrite: bool = False  # replace an earlier run in `output`

    def __post_init__(self) -> None:
        for name in ("batch_size", "num_actors", "cpu_threads", "rows_per_file"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.num_gpus is not None and self.num_gpus < 0:
            raise ValueError(f"--num-gpus must be at least 0, got {self.num_gpus}")


@dataclass
class Prepared:
    """What the checks before the run found."""

    listing: pa.Table
    processor: ViTImageProcessor
    model_config: dict[str, Any]
    parameters: int  # of the model the actors load (the decoder too when the loss is scored)
    storage: Storage = field(default_factory=Storage)  # reaches input, output and model


def prepare(config: EmbedConfig) -> Prepared:
    """Everything that can fail on user input fails here, before any work and before anything is written."""
    storage = Storage.from_environment(config.s3_endpoint)
    _check_output(config, storage)
    options = storage.options(config.model)
    model_folder = open_folder(config.model, options)
    model_config = model_folder.read_json(CONFIG_NAME)
    mae = ViTMAEConfig.from_dict(model_config)
    if not model_folder.exists("preprocessor_config.json"):
        raise FileNotFoundError(
            f"--model {config.model} has no preprocessor_config.json; save the processor the model was "
            "trained with next to it (vitmae.ViTImageProcessor(...).save_pretrained(folder))"
        )
    processor = ViTImageProcessor.from_pretrained(model_folder.uri, options)
    if not processor.do_resize or processor.size != {"height": mae.image_size, "width": mae.image_size}:
        size = processor.size if processor.do_resize else "nothing (do_resize is false)"
        raise ValueError(
            f"--model {config.model}: the processor resizes to {size} but the model expects "
            f"{mae.image_size}x{mae.image_size} images"
        )
    # The actors' own load on the meta device: unreadable weights, and weights that do not fit the config, fail now.
    model = model_class(config.infer.mask_ratio).from_pretrained(model_folder.uri, device="meta", storage_options=options)
    parameters = sum(p.numel() for p in model.parameters())
    listing = list_inputs(config.input, config.extensions, storage)
    return Prepared(listing, processor, model_config, parameters, storage)


def _check_output(config: EmbedConfig, storage: Storage) -> None:
    """Refuses an --output that is a file or holds a run (unless --overwrite); creates nothing."""
    earlier = [name for name in RUN_FILES if output_folder(config.output, storage).exists(name)]
    if earlier and not config.overwrite:
        raise FileExistsError(
            f"--output {config.output} already holds a run ({', '.join(earlier)}); pass --overwrite to replace it"
        )


def run(config: EmbedConfig) -> dict[str, Any]:
    """Runs the job and returns the manifest (also written, last, to `output`/manifest.json)."""
    config = replace(config, output=absolute_uri(config.output), model=absolute_uri(config.model, may_be_hub_id=True))
    prepared = prepare(config)
    start = time.time()
    if not ray.is_initialized():
        # The dashboard's processes wake at normal priority and stall the model's GEMM threads on small machines.
        ray.init(logging_level=logging.WARNING, include_dashboard=config.dashboard)
    gpus = _check_cluster(config)
    output_folder(config.output, prepared.storage).remove(RUN_FILES)  # an earlier run, refused above without --overwrite
    ray_started = time.time()
    listing = prepared.listing
    actors, threads = (gpus, None) if gpus else cpu_actors(config, prepared.parameters)
    batch_size = config.batch_size or batch_size_for(gpus)
    logger.info("%d model actors on %s, %d images a batch", actors, f"{gpus} GPUs" if gpus else f"{threads} CPU threads each", batch_size)
    # Without GPUs, Ray Data fuses decoding into the model actors, whose threads then decode too.
    preprocess = PreprocessConfig(prepared.processor.to_dict(), config.decode, prepared.storage, threads=threads or 1)
    dataset = (
        decoded_images(listing, preprocess, batch_size)
        .map_batches(
            Embedder, fn_constructor_kwargs={"model": config.model, "config": config.infer, "storage": prepared.storage,
                                             "threads": threads},
            batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=1 if gpus else 0,
        )
        .map_batches(
            # Writing is I/O. Holding no CPU, it streams while the model actors hold every CPU of the cluster.
            write_batch, fn_kwargs={"config": WriteConfig(config.output, prepared.storage)},
            batch_size=config.rows_per_file, batch_format="numpy", num_cpus=0,
        )
    )
    embedded = failed = 0
    for counts in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        embedded += int(counts["embedded"].sum())
        failed += int(counts["failed"].sum())
    if embedded + failed != listing.num_rows:
        raise RuntimeError(f"listed {listing.num_rows} inputs but wrote {embedded} embeddings and {failed} errors")
    embedded_at = time.time()
    built, index_error = False, None
    try:
        built = _build_index(config, prepared.storage)
    except Exception as err:  # the embeddings stay, with their manifest; the run fails below with one line
        index_error = err
    timings = {"start_ray": ray_started - start, "embed": embedded_at - ray_started, "index": time.time() - embedded_at}
    manifest = _manifest(replace(config, batch_size=batch_size, num_actors=actors, cpu_threads=threads), prepared, gpus,
                         embedded, failed, timings, built, index_error)
    manifest["ray_data_stats"] = dataset.stats()
    open_folder(config.output, prepared.storage.options(config.output), create=True).write_json(MANIFEST, manifest)
    if index_error is not None:
        raise IndexNotBuilt(
            f"the embeddings are written, but the index could not be built ({manifest['index_error']}); "
            f"build it with: vitmae index --run {config.output}"
        ) from index_error
    return manifest


def _check_cluster(config: EmbedConfig) -> int:
    """The number of GPU actors; refuses more GPUs than the cluster has, warns of local paths on several nodes."""
    available = int(ray.cluster_resources().get("GPU", 0))
    if config.num_gpus is not None and config.num_gpus > available:
        raise ValueError(
            f"--num-gpus {config.num_gpus} asks for more GPUs than the Ray cluster's {available} (start the GPU "
            "nodes first, or pass --num-gpus 0 to run on CPUs)"
        )
    local = [uri for uri in (config.input, config.output, config.model) if is_local(uri)]
    if local and len([node for node in ray.nodes() if node["Alive"]]) > 1:
        logger.warning("%s: local paths must be on storage that every node of the cluster mounts", ", ".join(local))
    return config.num_gpus if config.num_gpus is not None else available


# Beside its weights, a CPU model actor holds torch and Ray and a batch's activations (about the weights' size for
# ViT-B at 8 images, twice that with 4 loss masks; measured in benchmarks/RESULTS.md).
_ACTOR_BASE_BYTES = 2**30


def cpu_actors(config: EmbedConfig, parameters: int) -> tuple[int, int]:
    """Model actors, and torch threads each, on a cluster without GPUs.

    Each CPU actor holds one Ray CPU, and Ray Data fuses the decode stage into it, so the actor decodes its
    batches and then runs the model, both on its threads. By default there is one actor per CPU with one
    thread each: independent actors keep every core busy, where the threads of one actor wait for each other
    at every operation and all stall when one core is taken (benchmarks/RESULTS.md). Only as many actors start
    as half the cluster's memory holds (their weights, twice, and 1 GB each), the CPUs shared between them.
    """
    resources = ray.cluster_resources()
    cpus = max(1, int(resources.get("CPU", 1)))
    actors = config.num_actors
    if actors is None:
        dtype = config.infer.dtype
        itemsize = parse_dtype("float32" if dtype == "auto" else dtype).itemsize
        fit = int(resources.get("memory", 0) / 2 // (_ACTOR_BASE_BYTES + 2 * parameters * itemsize))
        actors = max(1, min(cpus // (config.cpu_threads or 1), fit))
    return actors, config.cpu_threads or max(1, cpus // actors)


def batch_size_for(gpus: int) -> int:
    """The default batch: 256 images on GPUs, where ViT-B runs as fast per image at 128 as at 1024 and a batch goes
    over in two slices; on CPUs 8, which the model runs as fast per image as 32, and with which the actors' last
    batches end closer together (benchmarks/RESULTS.md)."""
    return 256 if gpus else 8


class IndexNotBuilt(ValueError):
    """The embeddings were written, but building their index failed."""


def _build_index(config: EmbedConfig, storage: Storage) -> bool:
    """Builds the index, before the manifest; whether there is one.

    A run with fewer than two embeddings has nothing to index: a warning, not a failure. Anything else raises.
    """
    if config.index is None:
        return False
    try:
        build_index(config.output, config.index, storage)
    except TooFewVectors as err:
        logger.warning("no index built: %s", err)
        return False
    return True


def _manifest(
    config: EmbedConfig, prepared: Prepared, gpus: int, embedded: int, failed: int, timings: dict[str, float],
    built: bool, index_error: Exception | None,
) -> dict[str, Any]:
    """The run's record; `config` holds the batch size, actors and threads the run used."""
    digest = hashlib.sha256(json.dumps(prepared.model_config, sort_keys=True).encode()).hexdigest()
    settings = {k: v for k, v in asdict(config).items() if k not in ("overwrite",)}
    return {
        **settings,
        "extensions": list(config.extensions),
        "model_config_sha256": digest,
        "model_config": prepared.model_config,
        "processor": prepared.processor.to_dict(),
        "embedding_dim": prepared.model_config.get("hidden_size"),
        "gpus": gpus,
        "counts": {"listed": prepared.listing.num_rows, "embedded": embedded, "failed": failed},
        "seconds": round(sum(timings.values()), 3),
        "timings": {f"{name}_seconds": round(value, 3) for name, value in timings.items()},
        # Throughput of the pipeline itself: Ray's start-up and the index are timed apart.
        "images_per_second": round(prepared.listing.num_rows / timings["embed"], 3) if timings["embed"] > 0 else None,
        "versions": package_versions(),
        "outputs": {"embeddings": f"{EMBEDDINGS_DIR}/", "errors": f"{ERRORS_DIR}/", "index": f"{INDEX_DIR}/" if built else None},
        "index_error": f"{type(index_error).__name__}: {one_line(index_error)}" if index_error else None,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
