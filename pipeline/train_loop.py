"""The pre-training loop each Ray Train worker runs: MAE's AdamW recipe, per-step schedule, epoch checkpoints.

Checkpoints are plain Hugging Face folders under `OUTPUT/checkpoints/epoch-NNNN/` (config.json, model.safetensors,
preprocessor_config.json, loadable by vitmae and transformers) plus `optimizer.pt` (AdamW state, read back with
`weights_only=True`) and `trainer_state.json`, written last: a folder without it is not a checkpoint. Rank 0 writes
them, with `metrics.parquet` (the loss of every step so far) beside the checkpoints.
"""

from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import nn

from pipeline import schema
from vitmae import ViTImageProcessor, ViTMAEConfig, ViTMAEForPreTraining
from vitmae.folder import Folder, open_folder

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
METRICS_FILE = "metrics.parquet"
METRICS_SCHEMA = pa.schema([
    ("step", pa.int64()),  # optimizer steps so far, from 1
    ("epoch", pa.int32()),  # epoch of the step, from 1
    ("loss", pa.float32()),  # the batch's reconstruction loss, averaged over the workers
    ("lr", pa.float32()),  # learning rate of the step
    ("images", pa.int64()),  # images the step trained on, over all workers
])


@dataclass(frozen=True)
class LoopConfig:
    """What every worker needs; made by `pipeline.pretrain` on the driver."""

    output: str  # run folder, local or s3://
    model_config: dict[str, Any]  # ViTMAEConfig.to_dict() of the model trained
    processor: dict[str, Any]  # ViTImageProcessor.to_dict()
    init: str | None  # checkpoint to start from (--init or the checkpoint resumed); None: random init
    epochs: int  # total epochs, resumed ones included
    steps_per_epoch: int  # optimizer steps each worker takes per epoch (sets the schedule's epoch length)
    batch_size: int  # images per worker per step
    lr: float  # peak learning rate (after warm-up)
    min_lr: float  # learning rate at the end of the cosine decay
    warmup_epochs: float  # linear warm-up from 0, in (fractional) epochs
    weight_decay: float  # AdamW weight decay (not on biases, norms and tokens)
    betas: tuple[float, float]  # AdamW betas (MAE: 0.9, 0.95)
    seed: int  # model init and masking
    shuffle_buffer: int  # rows each worker shuffles locally per epoch
    storage_options: dict[str, Any] = field(default_factory=dict)  # fsspec options of output and init
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


def checkpoint_name(epoch: int) -> str:
    return f"{CHECKPOINTS_DIR}/epoch-{epoch:04d}"


def latest_checkpoint(output: Folder) -> tuple[str, dict[str, Any]] | None:
    """(uri, trainer_state) of the last complete checkpoint under `output`, or None."""
    found = []
    for path in output.fs.glob(output.path(f"{CHECKPOINTS_DIR}/epoch-*/{STATE_FILE}")):
        folder = path.rsplit("/", 1)[0]
        found.append((int(folder.rsplit("-", 1)[1]), folder))
    if not found:
        return None
    _, path = max(found)
    name = path[len(output.root.rstrip("/")) + 1:]
    return f"{output.uri.rstrip('/')}/{name}", output.read_json(f"{name}/{STATE_FILE}")


def _build_model(config: LoopConfig) -> ViTMAEForPreTraining:
    """The model of `config.model_config` (the run's mask ratio and norm_pix_loss), with `config.init`'s weights."""
    torch.manual_seed(config.seed)  # every worker starts from the same weights (DDP also broadcasts rank 0's)
    if config.init is None:
        return ViTMAEForPreTraining(ViTMAEConfig.from_dict(config.model_config))
    weights = ViTMAEForPreTraining.from_pretrained(config.init, dtype=torch.float32, storage_options=config.storage_options)
    with torch.device("meta"):
        model = ViTMAEForPreTraining(ViTMAEConfig.from_dict(config.model_config))
    model.load_state_dict(weights.state_dict(), assign=True)
    return model


def _load_optimizer(optimizer: torch.optim.Optimizer, config: LoopConfig, device: torch.device) -> None:
    folder = open_folder(config.init, config.storage_options)
    state = torch.load(io.BytesIO(folder.fs.cat_file(folder.path(OPTIMIZER_FILE))), map_location=device, weights_only=True)
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
    table = pq.read_table(io.BytesIO(output.fs.cat_file(output.path(METRICS_FILE))))
    return [table.filter(pc.less_equal(table.column("step"), step)).cast(METRICS_SCHEMA)]


def _save_checkpoint(output: Folder, model: ViTMAEForPreTraining, processor: ViTImageProcessor, optimizer: torch.optim.Optimizer,
                     state: dict[str, Any], metrics: list[pa.Table], config: LoopConfig) -> None:
    """Rank 0: metrics.parquet, then the epoch's checkpoint, trainer_state.json last (a resume trusts only it)."""
    name = checkpoint_name(state["epoch"])
    uri = f"{output.uri.rstrip('/')}/{name}"
    sink = io.BytesIO()
    pq.write_table(pa.concat_tables(metrics), sink)
    output.write_bytes(METRICS_FILE, sink.getvalue())
    model.save_pretrained(uri, config.storage_options)
    processor.save_pretrained(uri, config.storage_options)
    sink = io.BytesIO()
    torch.save(optimizer.state_dict(), sink)
    output.write_bytes(f"{name}/{OPTIMIZER_FILE}", sink.getvalue())
    output.write_json(f"{name}/{STATE_FILE}", state)
    logger.info("epoch %d: checkpoint %s", state["epoch"], uri)


def train_loop(loop: dict[str, Any]) -> None:
    """The function `TorchTrainer` runs on every worker; `loop` is {"config": LoopConfig}."""
    import ray.train
    import ray.train.torch

    config: LoopConfig = loop["config"]
    context = ray.train.get_context()
    rank = context.get_world_rank()
    device = ray.train.torch.get_device()
    model = ray.train.torch.prepare_model(_build_model(config))
    core: ViTMAEForPreTraining = getattr(model, "module", model)
    processor = ViTImageProcessor.from_dict(config.processor)
    optimizer = torch.optim.AdamW(param_groups(core, config.weight_decay), lr=config.lr, betas=config.betas)
    state: dict[str, Any] = {"epoch": 0, "step": 0, "epoch_loss": [], "skipped": [], "seconds": 0.0}
    # Only rank 0 writes; the others may run where the output is not even visible.
    output = open_folder(config.output, config.storage_options, create=True) if rank == 0 else None
    if config.resume:
        _load_optimizer(optimizer, config, device)
        state = dict(config.resume)
    metrics = _earlier_metrics(output, state["step"]) if output is not None else []
    torch.manual_seed(config.seed * 1000 + rank + 7919 * state["step"])  # masks differ per worker and after a resume
    shard = ray.train.get_dataset_shard("train")
    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        start = time.perf_counter()
        model.train()
        rows: dict[str, list] = {name: [] for name in METRICS_SCHEMA.names}
        loss_sum = skipped = 0.0
        batches = shard.iter_batches(batch_size=config.batch_size, batch_format="numpy", drop_last=True,
                                     local_shuffle_buffer_size=config.shuffle_buffer or None)
        for batch in batches:  # the shards are equal (Ray Train's default), so every worker takes as many steps
            ok = ~schema.failed_rows(batch[schema.ERROR])
            skipped += float((~ok).sum())
            x = processor.normalize(torch.from_numpy(batch[schema.PIXELS]).to(device))
            lr = lr_at(state["step"], config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            weight = torch.from_numpy(ok).to(device, torch.float32)
            # bfloat16 autocast on GPUs (the loss itself is float32); rows that failed to decode (zeros) weigh
            # nothing, and every worker still steps, as DDP needs.
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                per_sample = model(x).per_sample_loss
            loss = (per_sample * weight).sum() / weight.sum().clamp(min=1.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            state["step"] += 1
            mean_loss, images = _all_reduce([loss.item() / context.get_world_size(), float(ok.sum())], device)
            loss_sum += mean_loss
            for name, value in zip(METRICS_SCHEMA.names, (state["step"], epoch, mean_loss, lr, int(images))):
                rows[name].append(value)
        skipped = int(_all_reduce([skipped], device)[0])
        steps = len(rows["step"])
        state["epoch"] = epoch
        state["epoch_loss"] = state["epoch_loss"] + [loss_sum / max(steps, 1)]
        state["skipped"] = state["skipped"] + [skipped]
        state["seconds"] = state["seconds"] + time.perf_counter() - start
        if output is not None:
            metrics.append(pa.table(rows, schema=METRICS_SCHEMA))
            _save_checkpoint(output, core, processor, optimizer, state, metrics, config)
        ray.train.report({"epoch": epoch, "step": state["step"], "loss": state["epoch_loss"][-1], "skipped": skipped})

