"""The pre-training loop each Ray Train worker runs: MAE's AdamW recipe, per-step schedule, epoch checkpoints.

A run with the same seed sees the same batches, crops and masks (docs/design.md, "Pre-training").
"""

from __future__ import annotations

import io
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import nn

from pipeline import schema
from pipeline.embed.preprocess import PreprocessConfig
from pipeline.embed.work import decoded_images
from pipeline.layout import CHECKPOINTS_DIR, METRICS_FILE, OPTIMIZER_FILE, STATE_FILE, checkpoint_name, output_uri
from pipeline.storage import Storage, read_parquet, write_parquet
from pipeline.train.augment import AugmentConfig, RandomResizedCrop
from vitmae import ViTImageProcessor, ViTMAEConfig, ViTMAEForPreTraining
from vitmae.folder import Folder, open_folder

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopConfig:
    """What every worker needs; made by `pipeline.pretrain` on the driver."""

    output: str  # run folder, local or s3://
    model_config: dict[str, Any]  # ViTMAEConfig.to_dict() of the model trained
    listing: Any  # ray.ObjectRef of the listing (pa.Table, `schema.LISTING_SCHEMA`), in the order the seed gave it
    preprocess: PreprocessConfig  # the CPU stage: the model's processor, decode settings, storage
    augment: AugmentConfig  # the random resized crop and flip
    init: str | None  # checkpoint to start from (--init or the checkpoint resumed); None: random init
    epochs: int  # total epochs, resumed ones included
    steps_per_epoch: int  # optimizer steps each worker takes per epoch (sets the schedule's epoch length)
    batch_size: int  # images per worker per step
    lr: float  # peak learning rate (after warm-up)
    min_lr: float  # learning rate at the end of the cosine decay
    warmup_epochs: float  # linear warm-up from 0, in (fractional) epochs
    weight_decay: float  # AdamW weight decay (not on biases, norms and tokens)
    betas: tuple[float, float]  # AdamW betas (MAE: 0.9, 0.95)
    seed: int  # model init, the order of the images, crops and masks
    storage: Storage = field(default_factory=Storage.from_environment)  # reaches output and init
    resume: dict[str, Any] | None = None  # trainer_state.json of the checkpoint resumed


def lr_at(step: int, config: LoopConfig) -> float:
    """MAE's schedule, per step: linear warm-up to `lr`, then half a cosine down to `min_lr`."""
    epoch = step / config.steps_per_epoch
    if epoch < config.warmup_epochs:
        return config.lr * epoch / config.warmup_epochs
    span = max(config.epochs - config.warmup_epochs, 1e-9)
    progress = min(1.0, (epoch - config.warmup_epochs) / span)
    return config.min_lr + (config.lr - config.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups as MAE's (timm's `add_weight_decay`): no decay on 1-d parameters, i.e. biases and norm weights.

    The fixed sin-cos position tables do not train, so they are in neither group.
    """
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def latest_checkpoint(output: Folder) -> tuple[str, dict[str, Any]] | None:
    """(uri, trainer_state) of the last complete checkpoint under `output`, or None."""
    found = []
    for path in output.fs.glob(output.path(f"{CHECKPOINTS_DIR}/epoch-*/{STATE_FILE}")):
        folder = path.rsplit("/", 1)[0]
        found.append((int(folder.rsplit("-", 1)[1]), folder))
    if not found:
        return None
    _, path = max(found)
    name = path[len(output.root.rstrip("/")) + 1 :]
    return output_uri(output.uri, name), output.read_json(f"{name}/{STATE_FILE}")


def _build_model(config: LoopConfig) -> ViTMAEForPreTraining:
    """The model of `config.model_config` (the run's mask ratio and norm_pix_loss), with `config.init`'s weights."""
    torch.manual_seed(config.seed)  # every worker starts from the same weights (DDP also broadcasts rank 0's)
    if config.init is None:
        return ViTMAEForPreTraining(ViTMAEConfig.from_dict(config.model_config))
    weights = ViTMAEForPreTraining.from_pretrained(
        config.init, dtype=torch.float32, storage_options=config.storage.options(config.init)
    )
    with torch.device("meta"):
        model = ViTMAEForPreTraining(ViTMAEConfig.from_dict(config.model_config))
    model.load_state_dict(weights.state_dict(), assign=True)
    return model


def _load_optimizer(optimizer: torch.optim.Optimizer, config: LoopConfig, device: torch.device) -> None:
    folder = open_folder(config.init, config.storage.options(config.init))
    state = torch.load(
        io.BytesIO(folder.fs.cat_file(folder.path(OPTIMIZER_FILE))), map_location=device, weights_only=True
    )
    optimizer.load_state_dict(state)


def _all_reduce(values: list[float], device: torch.device) -> list[float]:
    """Sums `values` over the workers (identity with one worker or none)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def _earlier_metrics(output: Folder, step: int) -> list[pa.Table]:
    """The metrics of the steps before a resumed checkpoint (a run may have logged a few more before it died)."""
    if step == 0 or not output.exists(METRICS_FILE):
        return []
    table = read_parquet(output, METRICS_FILE)
    return [table.filter(pc.less_equal(table.column(schema.STEP), step)).cast(schema.METRICS_SCHEMA)]


def _save_checkpoint(
    output: Folder,
    model: ViTMAEForPreTraining,
    processor: ViTImageProcessor,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    metrics: list[pa.Table],
    config: LoopConfig,
) -> None:
    """Rank 0: metrics.parquet, then the epoch's checkpoint, trainer_state.json last (a resume trusts only it)."""
    name = checkpoint_name(state["epoch"])
    uri = output_uri(output.uri, name)
    write_parquet(output, METRICS_FILE, pa.concat_tables(metrics))
    model.save_pretrained(uri, config.storage.options(uri))
    processor.save_pretrained(uri, config.storage.options(uri))
    sink = io.BytesIO()
    torch.save(optimizer.state_dict(), sink)
    output.write_bytes(f"{name}/{OPTIMIZER_FILE}", sink.getvalue())
    output.write_json(f"{name}/{STATE_FILE}", state)
    logger.info("epoch %d: checkpoint %s", state["epoch"], uri)


def epoch_batches(config: LoopConfig, epoch: int, rank: int, world: int) -> Iterator[dict[str, np.ndarray]]:
    """This worker's batches of one epoch: `steps_per_epoch` batches of `batch_size` decoded, cropped images.

    The listing is shuffled by (seed, epoch) and dealt to the workers in turn; Ray Data decodes it on the
    cluster's CPUs in order, so that the batches are the same on every run with the same seed.
    """
    import ray
    import ray.data

    listing: pa.Table = ray.get(config.listing)
    order = np.random.default_rng([config.seed, epoch]).permutation(listing.num_rows)
    share = order[rank::world][: config.steps_per_epoch * config.batch_size]
    processor = ViTImageProcessor.from_dict(config.preprocess.processor)
    size = (processor.size["height"], processor.size["width"])
    crop = RandomResizedCrop(size, processor.resample, config.augment, config.seed, epoch)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False  # one bar per epoch and worker would only clutter the job's log
    dataset = decoded_images(
        listing.take(pa.array(share)), replace(config.preprocess, transform=crop), config.batch_size
    )
    return dataset.iter_batches(batch_size=config.batch_size, batch_format="numpy", drop_last=True)


def train_loop(loop: dict[str, Any]) -> None:
    """The function `TorchTrainer` runs on every worker; `loop` is {"config": LoopConfig}."""
    import ray.train
    import ray.train.torch

    config: LoopConfig = loop["config"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    model = ray.train.torch.prepare_model(_build_model(config))
    core: ViTMAEForPreTraining = getattr(model, "module", model)
    processor = ViTImageProcessor.from_dict(config.preprocess.processor)
    optimizer = torch.optim.AdamW(param_groups(core, config.weight_decay), lr=config.lr, betas=config.betas)
    state: dict[str, Any] = {"epoch": 0, "step": 0, "epoch_loss": [], "skipped": [], "seconds": 0.0}
    # Only rank 0 writes; the others may run where the output is not even visible.
    output = open_folder(config.output, config.storage.options(config.output), create=True) if rank == 0 else None
    if config.resume:
        _load_optimizer(optimizer, config, device)
        state = dict(config.resume)
    metrics = _earlier_metrics(output, state["step"]) if output is not None else []
    torch.manual_seed(config.seed * 1000 + rank + 7919 * state["step"])  # masks differ per worker and after a resume
    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        start = time.perf_counter()
        model.train()
        rows: dict[str, list] = {name: [] for name in schema.METRICS_SCHEMA.names}
        skipped = 0.0
        for batch in epoch_batches(config, epoch, rank, world):  # equal shares: every worker takes as many steps
            ok = ~schema.failed_rows(batch[schema.ERROR])
            skipped += float((~ok).sum())
            lr = lr_at(state["step"], config)
            loss = _step(
                model, optimizer, processor.normalize(torch.from_numpy(batch[schema.PIXELS]).to(device)), ok, lr
            )
            state["step"] += 1
            mean_loss, images = _all_reduce([loss / world, float(ok.sum())], device)
            for name, value in zip(schema.METRICS_SCHEMA.names, (state["step"], epoch, mean_loss, lr, int(images))):
                rows[name].append(value)
        skipped = int(_all_reduce([skipped], device)[0])
        state["epoch"] = epoch
        state["epoch_loss"] = state["epoch_loss"] + [float(np.mean(rows["loss"])) if rows["loss"] else 0.0]
        state["skipped"] = state["skipped"] + [skipped]
        state["seconds"] = state["seconds"] + time.perf_counter() - start
        if output is not None:
            metrics.append(pa.table(rows, schema=schema.METRICS_SCHEMA))
            _save_checkpoint(output, core, processor, optimizer, state, metrics, config)
        ray.train.report({"epoch": epoch, "step": state["step"], "loss": state["epoch_loss"][-1], "skipped": skipped})


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, ok: np.ndarray, lr: float) -> float:
    """One optimizer step on x: [N, C, H, W] normalised images, of which `ok` (bool [N]) decoded; returns the loss.

    bfloat16 autocast on GPUs (the loss itself is float32); rows that failed to decode (zeros) weigh nothing, and
    every worker still steps, as DDP needs.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    weight = torch.from_numpy(ok).to(x.device, torch.float32)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
        per_sample = model(x).per_sample_loss
    loss = (per_sample * weight).sum() / weight.sum().clamp(min=1.0)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()
