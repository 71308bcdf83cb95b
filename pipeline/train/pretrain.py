"""Pre-training or adapting ViTMAE on a folder of images: Ray Data decodes and augments, Ray Train (DDP) trains.

Outputs under `--output` (names in `pipeline.layout`): checkpoints/epoch-NNNN/, metrics.parquet, metrics.json
(written last), model/ and reconstructions.png (docs/design.md, "Pre-training").
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import pyarrow as pa
import ray
from PIL import Image

from pipeline.cluster import start_ray
from pipeline.embed.decode import DecodeConfig
from pipeline.embed.listing import DEFAULT_EXTENSIONS, list_inputs
from pipeline.embed.preprocess import PreprocessConfig
from pipeline.layout import MODEL_DIR, RECONSTRUCTIONS_FILE, SUMMARY_FILE, TRAINING_FILES, output_uri, package_versions
from pipeline.storage import Storage, StorageConfig, absolute_uri, output_folder
from pipeline.train.augment import AugmentConfig
from pipeline.train.loop import LoopConfig, latest_checkpoint, train_loop
from pipeline.train.reconstruct import ReconstructConfig, save_reconstructions
from vitmae import ViTImageProcessor, ViTMAEConfig, ViTMAEForPreTraining
from vitmae.errors import InvalidInput, NotFound
from vitmae.folder import CONFIG_NAME, SAFETENSORS_NAME, Folder, open_folder
from vitmae.processor import IMAGENET_MEAN, IMAGENET_STD, PROCESSOR_NAME

logger = logging.getLogger(__name__)

# Model geometries for a fresh model; the decoder is MAE's light one. ViT-Ti, ViT-S and ViT-B encoders.
Preset = Literal["tiny", "small", "base"]
PRESETS: dict[Preset, dict[str, int]] = {
    "tiny": dict(
        hidden_size=192,
        num_hidden_layers=12,
        num_attention_heads=3,
        intermediate_size=768,
        decoder_hidden_size=128,
        decoder_num_hidden_layers=2,
        decoder_num_attention_heads=4,
        decoder_intermediate_size=512,
    ),
    "small": dict(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        intermediate_size=1536,
        decoder_hidden_size=256,
        decoder_num_hidden_layers=4,
        decoder_num_attention_heads=8,
        decoder_intermediate_size=1024,
    ),
    "base": {},  # facebook/vit-mae-base: ViT-B/16 and the 8-block, 512-wide decoder
}


@dataclass(frozen=True)
class PretrainConfig:
    """One pre-training run: a fresh model (preset) or an adapted one (init), trained on the images under input."""

    input: str
    """the training images: a folder, prefix or glob, local or s3://"""
    output: str
    """the run folder for checkpoints, metrics and the final model, local or s3://"""
    init: str | None = None
    """a checkpoint to adapt, with its decoder (folder, s3:// URI or hub id); or give preset"""
    preset: Preset | None = None
    """a fresh model of that geometry: tiny (ViT-Ti), small (ViT-S) or base (ViT-B/16), with MAE's light decoder"""
    image_size: int = 224
    """input side of a preset model"""
    patch_size: int = 16
    """patch side of a preset model"""
    epochs: int = 10
    """epochs in all, a resumed run's earlier ones included"""
    batch_size: int = 64
    """images per worker per step"""
    lr: float | None = None
    """peak learning rate (null: blr x batch_size x num_workers / 256)"""
    blr: float = 1.5e-4
    """base learning rate (MAE's)"""
    min_lr: float = 0.0
    """learning rate at the end of the cosine decay"""
    warmup_epochs: float | None = None
    """linear warm-up, in epochs (null: 5 % of the epochs; MAE: 40 of 800)"""
    weight_decay: float = 0.05
    """AdamW weight decay (not on biases and norms)"""
    mask_ratio: float = 0.75
    """share of the patches hidden from the encoder"""
    norm_pix_loss: bool = False
    """reconstruct per-patch normalised pixels (the MAE paper's better setting)"""
    crop_scale: float = 0.2
    """smallest share of the image's area a random crop covers"""
    flip: bool = True
    """random horizontal flips"""
    num_workers: int = 1
    """Ray Train workers, data-parallel"""
    use_gpu: bool = False
    """one GPU per worker (the forward pass under bfloat16 autocast)"""
    cpus_per_worker: float = 1.0
    """CPUs each worker reserves; the cluster's other CPUs decode and augment"""
    seed: int = 0
    """model init, listing order, crops, flips and masks"""
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    """file extensions to train on, e.g. [jpg,png]"""
    decode: DecodeConfig = DecodeConfig()
    resume: bool = False
    """continue from the last complete checkpoint in output"""
    overwrite: bool = False
    """replace an earlier run in output"""
    reconstructions: int = 4
    """training images drawn in reconstructions.png at the end (0: none)"""
    storage: StorageConfig = StorageConfig()

    def __post_init__(self) -> None:
        if (self.init is None) == (self.preset is None) and not self.resume:
            raise InvalidInput("give exactly one of init (a checkpoint to adapt) and preset (tiny, small or base)")
        if self.preset is not None and self.preset not in PRESETS:
            raise InvalidInput(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise InvalidInput(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if not 0.0 < self.crop_scale <= 1.0:
            raise InvalidInput(f"crop_scale must be in (0, 1], got {self.crop_scale}")
        for name in ("epochs", "batch_size", "num_workers", "image_size", "patch_size"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("seed", "reconstructions"):
            if getattr(self, name) < 0:
                raise InvalidInput(f"{name} must be at least 0, got {getattr(self, name)}")
        for name in ("lr", "blr", "min_lr", "weight_decay", "warmup_epochs", "cpus_per_worker"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise InvalidInput(f"{name} must be a finite number, got {value}")
        for name in ("lr", "blr", "cpus_per_worker"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InvalidInput(f"{name} must be positive, got {value}")
        for name in ("min_lr", "weight_decay", "warmup_epochs"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise InvalidInput(f"{name} must be at least 0, got {value}")
        if self.min_lr > self.peak_lr:
            raise InvalidInput(f"min_lr {self.min_lr} is above the peak learning rate {self.peak_lr:.3g}")
        if self.resume and self.overwrite:
            raise InvalidInput("resume and overwrite contradict each other; give one")

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else self.blr * self.batch_size * self.num_workers / 256


def _start_model(
    config: PretrainConfig, output: Folder, storage: Storage
) -> tuple[str | None, dict[str, Any], ViTImageProcessor, dict | None]:
    """(weights to start from, model config, processor, trainer state of a resumed checkpoint)."""
    latest = latest_checkpoint(output)
    if config.resume and latest is not None:
        uri, state = latest
        if state["epoch"] >= config.epochs:
            raise InvalidInput(
                f"{uri} already trained {state['epoch']} of the {config.epochs} epochs; raise --epochs to go on"
            )
        logger.info("resuming from %s (epoch %d, step %d)", uri, state["epoch"], state["step"])
        folder = open_folder(uri, storage.options(uri))
        return uri, folder.read_json(CONFIG_NAME), ViTImageProcessor.from_pretrained(uri, storage.options(uri)), state
    if config.resume:
        if config.init is None and config.preset is None:
            raise NotFound(f"resume: {config.output} holds no checkpoint; start with --init or --preset")
        logger.warning("resume: %s holds no checkpoint yet; starting from the beginning", config.output)
    elif any(output.exists(name) for name in TRAINING_FILES):
        if not config.overwrite:
            raise InvalidInput(
                f"output {config.output} already holds a run; "
                "give --resume true to go on or --overwrite true to replace it"
            )
        if config.init is not None and f"{config.init.rstrip('/')}/".startswith(f"{config.output.rstrip('/')}/"):
            raise InvalidInput(
                f"init {config.init} lies in the output {config.output}, which overwrite would remove; "
                "copy it elsewhere first"
            )
    overrides = {"mask_ratio": config.mask_ratio, "norm_pix_loss": config.norm_pix_loss}
    if config.preset is not None:
        model_config = ViTMAEConfig(
            **PRESETS[config.preset], image_size=config.image_size, patch_size=config.patch_size, **overrides
        )
        processor = ViTImageProcessor(
            size=config.image_size,
            resample=int(Image.Resampling.BICUBIC),
            image_mean=IMAGENET_MEAN,
            image_std=IMAGENET_STD,
        )
        return None, model_config.to_dict(), processor, None
    options = storage.options(config.init)
    ViTMAEForPreTraining.from_pretrained(
        config.init, storage_options=options
    )  # a bad or decoder-less checkpoint fails now
    folder = open_folder(config.init, options)
    model_config = replace(ViTMAEConfig.from_dict(folder.read_json(CONFIG_NAME)), **overrides)
    return config.init, model_config.to_dict(), ViTImageProcessor.from_pretrained(config.init, options), None


def run(config: PretrainConfig) -> dict[str, Any]:
    """Checks, trains, and writes the final model, metrics.json and reconstructions.png; returns metrics.json.

    Every check on the flags, the input, the model and the cluster comes before anything is written or removed.
    """
    init = absolute_uri(config.init, may_be_hub_id=True) if config.init else None
    config = replace(config, output=absolute_uri(config.output), init=init)  # Ray Train's workers run elsewhere
    storage = Storage.from_config(config.storage)
    listing = list_inputs(config.input, config.extensions, storage)
    output = output_folder(config.output, storage)  # created once the checks pass
    init, model_config, processor, state = _start_model(config, output, storage)
    steps_per_epoch = listing.num_rows // config.num_workers // config.batch_size
    if steps_per_epoch < 1:
        raise InvalidInput(
            f"batch_size {config.batch_size} x num_workers {config.num_workers} is more than the "
            f"{listing.num_rows} images listed under {config.input}"
        )
    if not ray.is_initialized():
        # With the dashboard, unlike the embedding job: Ray Train's placement-group cleaner polls the State API,
        # which the dashboard serves, and warns every few seconds without it.
        start_ray(logging_level=logging.WARNING)
    _check_cluster(config)
    loop = LoopConfig(
        output=config.output,
        model_config=model_config,
        listing=ray.put(listing),
        preprocess=PreprocessConfig(processor.to_dict(), config.decode, storage),
        augment=AugmentConfig(scale=(config.crop_scale, 1.0), flip=config.flip),
        init=init,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        batch_size=config.batch_size,
        lr=config.peak_lr,
        min_lr=config.min_lr,
        warmup_epochs=config.warmup_epochs if config.warmup_epochs is not None else 0.05 * config.epochs,
        weight_decay=config.weight_decay,
        betas=(0.9, 0.95),
        seed=config.seed,
        storage=storage,
        resume=state,
    )
    if state is None:  # a fresh start: an earlier run (refused above without --overwrite) goes now
        output.remove(TRAINING_FILES)
    start = time.time()
    _fit(config, loop)
    seconds = time.time() - start
    output.fs.invalidate_cache()  # object stores cache listings, and the workers wrote new checkpoints
    last, final_state = latest_checkpoint(output) or (None, None)
    if last is None or final_state["epoch"] != config.epochs:
        raise RuntimeError(f"training ended without the checkpoint of epoch {config.epochs} in {config.output}")
    model = output_uri(config.output, MODEL_DIR)
    _copy_model(last, model, storage)
    summary = _summary(config, loop, listing.num_rows, final_state, seconds)
    if config.reconstructions:
        _draw(config, listing, model, storage)
    output.write_json(SUMMARY_FILE, summary)
    return summary


def _check_cluster(config: PretrainConfig) -> None:
    """Refuses workers the cluster cannot hold (Ray Train would wait for them forever)."""
    resources = ray.cluster_resources()
    asked = {"CPU": config.num_workers * config.cpus_per_worker, "GPU": config.num_workers if config.use_gpu else 0}
    for name, amount in asked.items():
        if amount > resources.get(name, 0):
            raise InvalidInput(
                f"num_workers {config.num_workers} ask for {amount:g} {name}s in all, more than the Ray cluster's "
                f"{resources.get(name, 0):g} (lower --num_workers or --cpus_per_worker, or start more nodes first)"
            )


def _fit(config: PretrainConfig, loop: LoopConfig) -> None:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = {"CPU": config.cpus_per_worker, **({"GPU": 1} if config.use_gpu else {})}
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"config": loop},
        scaling_config=ScalingConfig(
            num_workers=config.num_workers, use_gpu=config.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(name=f"vitmae-pretrain-{uuid.uuid4().hex[:8]}"),
    )
    logger.info(
        "training %d epochs of %d steps x %d workers x %d images, peak lr %.3g",
        config.epochs,
        loop.steps_per_epoch,
        config.num_workers,
        config.batch_size,
        loop.lr,
    )
    trainer.fit()


def _copy_model(checkpoint: str, target: str, storage: Storage) -> None:
    """The Hugging Face files of the last checkpoint (not its optimizer state) -> `target`."""
    source = open_folder(checkpoint, storage.options(checkpoint))
    destination = open_folder(target, storage.options(target), create=True)
    for name in (CONFIG_NAME, SAFETENSORS_NAME, PROCESSOR_NAME):
        destination.write_bytes(name, source.fs.cat_file(source.path(name)))


def _draw(config: PretrainConfig, listing: pa.Table, model: str, storage: Storage) -> None:
    """reconstructions.png on the first training images that decode; a drawing is never worth failing the run for."""
    paths = listing.column("path").to_pylist()[: 4 * config.reconstructions]
    png = output_uri(config.output, RECONSTRUCTIONS_FILE)
    try:
        save_reconstructions(
            ReconstructConfig(model, tuple(paths), png, config.mask_ratio, config.seed),
            storage,
            limit=config.reconstructions,
        )
    except (ValueError, OSError) as err:  # OSError: also a failed write to the object store
        logger.warning("no %s: %s", RECONSTRUCTIONS_FILE, err)


def _summary(
    config: PretrainConfig, loop: LoopConfig, listed: int, state: dict[str, Any], seconds: float
) -> dict[str, Any]:
    images = state["step"] * config.batch_size * config.num_workers
    return {
        "settings": {**asdict(config), "extensions": list(config.extensions)},
        "model_config": loop.model_config,
        "processor": loop.preprocess.processor,
        "peak_lr": loop.lr,
        "warmup_epochs": loop.warmup_epochs,
        "listed": listed,
        "steps_per_epoch": loop.steps_per_epoch,
        "epochs": state["epoch"],
        "steps": state["step"],
        "loss_per_epoch": state["epoch_loss"],
        "skipped_per_epoch": state["skipped"],
        "train_seconds": round(state["seconds"], 3),
        "seconds": round(seconds, 3),
        "images_per_second": round(images / state["seconds"], 3) if state["seconds"] else None,
        "versions": package_versions(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
