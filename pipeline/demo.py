"""The offline demo: pre-train a small MAE on real digit scans, embed and index a gallery, search it and triage it.

The data ship with scikit-learn and scikit-image, so nothing is downloaded (docs/design.md, "The demo").
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from PIL import Image

from pipeline import schema
from pipeline.cluster import start_ray
from pipeline.embed.infer import InferConfig
from pipeline.embed.run import EmbedConfig
from pipeline.embed.run import run as embed
from pipeline.layout import MODEL_DIR, RECONSTRUCTIONS_FILE
from pipeline.render import anomaly_tiles, render, save_png, search_tiles
from pipeline.retrieval.anomalies import AnomalyConfig, rank_anomalies
from pipeline.retrieval.search import Hit, Searcher
from pipeline.retrieval.vectors import patch_losses
from pipeline.storage import Storage
from pipeline.train.evaluate import Quality, evaluate
from pipeline.train.pretrain import PretrainConfig
from pipeline.train.pretrain import run as pretrain
from vitmae import ViTImageProcessor, ViTMAEConfig, ViTMAEForPreTraining
from vitmae.folder import open_folder
from vitmae.processor import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)

# 64 patches of 4 x 4 on 32 x 32 inputs; ViT-Ti width at a third of its depth, so that training takes minutes on 2 cores
# (the demo's times: README and benchmarks/RESULTS.md).
DEMO_MAE = dict(
    hidden_size=192,
    num_hidden_layers=4,
    num_attention_heads=3,
    intermediate_size=768,
    image_size=32,
    patch_size=4,
    decoder_hidden_size=128,
    decoder_num_hidden_layers=2,
    decoder_num_attention_heads=4,
    decoder_intermediate_size=512,
    norm_pix_loss=False,
)
OUTLIERS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg")
NOT_AN_IMAGE = "notes.jpg"


@dataclass(frozen=True)
class DemoConfig:
    """One demo run."""

    workdir: str = "out/demo"
    """where the images, checkpoints, the run and the pictures go"""
    epochs: int = 20
    """pre-training epochs"""
    batch_size: int = 64
    """images per step"""
    lr: float = 1e-3
    """peak learning rate (a short run on a small model takes more than MAE's 1.5e-4 x 64/256)"""
    held_out: float = 0.2
    """share of the digits kept out of training, for the gallery and the scores"""
    k: int = 10
    """neighbours for precision@k and the search"""
    seed: int = 0
    """the split, the model's initial weights and the masks"""


@dataclass
class DemoReport:
    """What the demo measured; also written to `workdir/demo.json`."""

    before: Quality  # the random-init model on the held-out digits
    after: Quality  # the pre-trained model on the same digits
    loss_per_epoch: list[float]  # pre-training loss, per epoch
    skipped: int  # unreadable training images skipped, over all epochs
    train_seconds: float  # the pre-training job's own time
    query: str = ""  # the searched image
    hits: list[Hit] = field(default_factory=list)  # its nearest neighbours
    anomalies: list[dict[str, Any]] = field(default_factory=list)  # the top rows of the anomaly ranking
    planted_in_top: int = 0  # planted photographs among the top len(OUTLIERS) anomalies
    pngs: dict[str, str] = field(default_factory=dict)  # name -> path of each picture written


def label_of(path: str) -> str:
    """The digit in a demo file name (digit-7-0123.png -> '7'); 'photo' for anything else."""
    name = os.path.basename(path)
    return name.split("-")[1] if name.startswith("digit-") else "photo"


def write_images(root: Path, held_out: float, seed: int) -> tuple[Path, Path]:
    """train/ and gallery/ under `root` (made afresh): digit scans split by `held_out`, photographs and a non-image in
    the gallery."""
    import skimage
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    gallery_count = int(round(held_out * len(order)))
    train, gallery = root / "train", root / "gallery"
    for folder in (train, gallery):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    for position, index in enumerate(order):
        folder = gallery if position < gallery_count else train
        scan_image(digits.images[index]).save(folder / f"digit-{digits.target[index]}-{index:04d}.png")
    photos = Path(skimage.__file__).parent / "data"
    for name in OUTLIERS:
        shutil.copy(photos / name, gallery / name)
    (gallery / NOT_AN_IMAGE).write_text("not a picture: this one ends in the errors table\n")
    return train, gallery


def scan_image(scan: np.ndarray) -> Image.Image:
    """One of scikit-learn's digit scans (float [8, 8], 16 grey levels) as a 32 x 32 greyscale image."""
    return Image.fromarray(np.round(scan * (255 / 16)).astype(np.uint8)).resize((32, 32), Image.Resampling.BICUBIC)


def random_init(folder: Path, seed: int) -> str:
    """A random-init MAE of the demo's geometry with its processor, saved to `folder`."""
    torch.manual_seed(seed)
    ViTMAEForPreTraining(ViTMAEConfig(**DEMO_MAE)).save_pretrained(folder)
    ViTImageProcessor(
        size=DEMO_MAE["image_size"],
        resample=int(Image.Resampling.BICUBIC),
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    ).save_pretrained(folder)
    return str(folder)


def train_small(train: Path, output: Path, init: str, config: DemoConfig, reconstructions: int) -> dict[str, Any]:
    """The pre-training job on the images under `train`, from checkpoint `init`, with the demo's recipe; returns its
    metrics.json (the model is `output/model`)."""
    if not ray.is_initialized():
        # One logical CPU more than the machine has: the worker trains on every core (2 torch threads on 2 cores)
        # while the data stage, which only decodes tiny PNGs, takes the extra slot. The dashboard stays: Ray Train
        # needs its State API (see pipeline.train.pretrain). A Ray of its own, even where another runs on the machine
        # (which Ray would join, and which has its own CPUs).
        start_ray(address="local", num_cpus=(os.cpu_count() or 1) + 1, logging_level=logging.WARNING)
    return pretrain(
        PretrainConfig(
            input=str(train),
            output=str(output),
            init=init,
            epochs=config.epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            crop_scale=0.5,
            flip=False,  # digits are not mirror-symmetric and fill their frame
            cpus_per_worker=float(os.cpu_count() or 1),
            seed=config.seed,
            overwrite=True,
            reconstructions=reconstructions,
        )
    )


def run(config: DemoConfig) -> DemoReport:
    """The whole demo; returns what it measured."""
    work = Path(config.workdir).resolve()
    train, gallery = write_images(work / "images", config.held_out, config.seed)
    init = random_init(work / "model-init", config.seed)
    summary = train_small(train, work / "pretrain", init, config, reconstructions=6)
    trained = str(work / "pretrain" / MODEL_DIR)
    digits = sorted(str(p) for p in gallery.glob("digit-*.png"))
    labels = [label_of(p) for p in digits]
    before = evaluate(init, digits, labels, seed=config.seed, k=config.k)
    after = evaluate(trained, digits, labels, seed=config.seed, k=config.k)
    report = DemoReport(
        before, after, summary["loss_per_epoch"], sum(summary["skipped_per_epoch"]), summary["train_seconds"]
    )
    report.pngs["reconstructions"] = str(work / "pretrain" / RECONSTRUCTIONS_FILE)
    run_dir = str(work / "run")
    # One model actor a core, not one per logical CPU of this Ray (which has one more than the machine).
    embed(
        EmbedConfig(
            input=str(gallery),
            output=run_dir,
            model=trained,
            infer=InferConfig(mask_ratio=0.75, seed=config.seed, patch_loss=True),
            batch_size=config.batch_size,
            num_actors=os.cpu_count() or 1,
            overwrite=True,
        )
    )
    local = Storage()
    searcher = Searcher(run_dir, local)
    report.query = f"file://{digits[0]}"
    report.hits = searcher.search_path(report.query, config.k)
    report.pngs["search"] = str(work / "search.png")
    save_png(render(search_tiles(report.query, report.hits, local)), report.pngs["search"], local)
    table = rank_anomalies(AnomalyConfig(run_dir), local)
    report.anomalies = table.slice(0, 2 * len(OUTLIERS)).to_pylist()
    report.planted_in_top = sum(label_of(row["path"]) == "photo" for row in report.anomalies[: len(OUTLIERS)])
    report.pngs["anomalies"] = str(work / "anomalies.png")
    heatmaps = patch_losses(searcher.embeddings, [row["path"] for row in report.anomalies])
    save_png(render(anomaly_tiles(report.anomalies, local, heatmaps)), report.pngs["anomalies"], local)
    open_folder(work).write_json("demo.json", _finite(asdict(report)))
    return report


def _finite(value: Any) -> Any:
    """NaN (a missing score) -> None, so demo.json is strict JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return schema.nan_to_none(value)
