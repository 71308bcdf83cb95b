"""Shared fixtures: tiny and base geometries, real photographs shipped by scikit-image (and a folder of them with every
odd and bad input), an S3 server, a local Ray, a small 224-pixel checkpoint, a small real run (with its index) over
a homogeneous gallery with planted outliers, one over photographs and their copies, and the offline demo's whole
run."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from pictures import encode, write_zeros_png
from PIL import Image
from runs import ROOT, own_ray_env
from s3server import S3Server, S3ServerError

import vitmae
from pipeline.storage import Storage
from vitmae.processor import MAE_PROCESSOR

# Real photographs (and one grayscale scan) that the scikit-image wheel ships in skimage/data.
PHOTO_NAMES = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "retina.jpg",
    "camera.png",
)

TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    image_size=32,
    patch_size=8,
    decoder_hidden_size=16,
    decoder_num_hidden_layers=2,
    decoder_num_attention_heads=2,
    decoder_intermediate_size=32,
)
BASE = {}  # the vit-mae-base / vit-base-patch16-224 geometry is the configs' default
# The pre-training and reconstruction tests' MAE: one block each side, 32-pixel inputs.
TINY_MAE = dict(
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=64,
    image_size=32,
    patch_size=8,
    decoder_hidden_size=16,
    decoder_num_hidden_layers=1,
    decoder_num_attention_heads=2,
    decoder_intermediate_size=32,
)
SMALL_224 = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    image_size=224,
    patch_size=16,
    decoder_hidden_size=32,
    decoder_num_hidden_layers=1,
    decoder_num_attention_heads=2,
    decoder_intermediate_size=64,
)
# The gallery: crops of one photograph, and pictures from very different sources planted among them.
GALLERY_BASE = "coffee.png"
GALLERY_CROPS = 24
GALLERY_OUTLIERS = ("camera.png", "page.png", "moon.png")
GALLERY_IMAGES = GALLERY_CROPS + len(GALLERY_OUTLIERS)
VIT_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size", "patch_size")


def vit_kwargs(geometry: dict) -> dict:
    """The encoder-only subset of a ViTMAE geometry, for ViT configs."""
    return {k: v for k, v in geometry.items() if k in VIT_KEYS}


@pytest.fixture(scope="session")
def photo_paths() -> list[Path]:
    import skimage

    folder = Path(os.path.dirname(skimage.__file__)) / "data"
    paths = [folder / name for name in PHOTO_NAMES]
    missing = [p for p in paths if not p.exists()]
    assert not missing, f"scikit-image no longer ships {missing}"
    return paths


@pytest.fixture(scope="session")
def images(tmp_path_factory, photo_paths) -> Path:
    """Real photographs, every odd mode that must be embedded, and every bad input that must not."""
    folder = tmp_path_factory.mktemp("images")
    for path in photo_paths:
        (folder / path.name).write_bytes(path.read_bytes())
    photo = Image.open(photo_paths[0]).convert("RGB")
    small = photo.resize((120, 100))
    (folder / "cmyk.jpg").write_bytes(encode(small.convert("CMYK"), "JPEG"))
    (folder / "gray.png").write_bytes(encode(small.convert("L"), "PNG"))
    (folder / "palette.png").write_bytes(encode(small.convert("P"), "PNG"))
    (folder / "rgba.png").write_bytes(encode(small.convert("RGBA"), "PNG"))
    (folder / "photo.webp").write_bytes(encode(photo, "WEBP"))
    sixteen = Image.fromarray(np.asarray(small.convert("L"), dtype=np.uint16) * 257)
    (folder / "sixteen.png").write_bytes(encode(sixteen, "PNG"))
    frames = [small, small.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    (folder / "animated.gif").write_bytes(encode(frames[0], "GIF", save_all=True, append_images=frames[1:]))
    (folder / "huge.jpg").write_bytes(encode(photo.resize((10_000, 8_000)), "JPEG", quality=85))
    (folder / "glob [1].png").write_bytes(encode(small, "PNG"))  # read as named, not as a pattern
    (folder / "star*.png").write_bytes(encode(small, "PNG"))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "random.png").write_bytes(np.random.default_rng(0).bytes(5000))
    (folder / "text.jpg").write_text("this is not a picture\n")
    (folder / "truncated.jpg").write_bytes(encode(small, "JPEG")[:1500])
    (folder / "truncated.png").write_bytes(encode(photo, "PNG")[:20_000])
    write_zeros_png(folder / "bomb.png", 40_000, 40_000)
    (folder / "readme.txt").write_text("not listed: wrong extension\n")
    return folder


@pytest.fixture
def two_photos(tmp_path, photo_paths) -> Path:
    """A folder of its own with two of the photographs."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in photo_paths[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    return folder


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """A real SeaweedFS S3 server on loopback with an empty bucket `test`; sets no environment variables.

    Use `s3.storage_options()` for fsspec/s3fs, `s3.environment()` with monkeypatch for the AWS_* route,
    and a path prefix of your own under s3://test/, since the bucket is shared by the whole session.
    """
    server, failure = S3Server(), None
    try:
        server.start()
    except S3ServerError as err:
        failure = str(err)
    if failure is not None:  # a broken server fails the S3 tests, never skips them
        pytest.fail(f"could not start the SeaweedFS S3 server: {failure}", pytrace=False)
    try:
        server.create_bucket("test")
        yield server
    finally:
        server.stop()


# Where the tests' Hugging Face hub is: a local port nothing listens on, so that every request is refused at once.
CLOSED_HUB = "http://127.0.0.1:9"


def use_hub(monkeypatch: pytest.MonkeyPatch, cache: Path, endpoint: str = CLOSED_HUB, offline: bool = False) -> None:
    """The Hugging Face hub at `endpoint` (by default none: `CLOSED_HUB`), or none at all with `offline`
    (HF_HUB_OFFLINE), and an empty cache.

    Set in the environment, for the processes a test starts, and in the hub client's constants, which it read when
    this process first imported it.
    """
    from huggingface_hub import constants

    settings = {
        "HF_ENDPOINT": ("ENDPOINT", endpoint),
        "HF_HUB_OFFLINE": ("HF_HUB_OFFLINE", offline),
        "HF_HUB_CACHE": ("HF_HUB_CACHE", str(cache)),
    }
    for variable, (name, value) in settings.items():
        monkeypatch.setenv(variable, str(int(value)) if isinstance(value, bool) else value)
        monkeypatch.setattr(constants, name, value)


def s3_storage(server: S3Server) -> Storage:
    """The pipeline's storage settings for the test server."""
    return Storage(server.endpoint_url, server.access_key, server.secret_key)


@pytest.fixture
def unreachable() -> Storage:
    """S3 settings whose endpoint is a port nothing listens on, waiting out an outage for 1 s."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return Storage(f"http://127.0.0.1:{port}", "key", "secret", retry_seconds=1)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the session; it says it has a GPU so that the actor's CPU fallback runs."""
    import ray

    # Ray's own logs stay out of the tests' captured stderr, where commands must write exactly one line. "local": a
    # Ray of its own, never one that another test or process left running (ray.init would join it and refuse num_cpus).
    context = ray.init(
        address="local",
        num_cpus=2,
        num_gpus=1,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        logging_level="ERROR",
        log_to_driver=False,
    )
    yield f"http://{context.dashboard_url}"
    ray.shutdown()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    vitmae.ViTMAEForPreTraining(vitmae.ViTMAEConfig(**SMALL_224)).save_pretrained(folder)
    vitmae.ViTImageProcessor.from_dict(MAE_PROCESSOR).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def gallery(tmp_path_factory) -> Path:
    """24 random crops of one photograph (coffee-NN.png, 160 x 120) and 3 photographs unlike it, by their own names."""
    import skimage

    data = Path(skimage.__file__).parent / "data"
    folder = tmp_path_factory.mktemp("gallery")
    base = Image.open(data / GALLERY_BASE).convert("RGB")
    rng = np.random.default_rng(0)
    for i in range(GALLERY_CROPS):
        scale = rng.uniform(0.6, 0.9)
        w, h = int(base.width * scale), int(base.height * scale)
        x, y = rng.integers(0, base.width - w + 1), rng.integers(0, base.height - h + 1)
        base.crop((x, y, x + w, y + h)).resize((160, 120)).save(folder / f"coffee-{i:02d}.png")
    for name in GALLERY_OUTLIERS:
        (folder / name).write_bytes((data / name).read_bytes())
    return folder


@pytest.fixture(scope="session")
def gallery_run(ray_cluster, model_dir, gallery, tmp_path_factory) -> Path:
    """The embedding job over the gallery, with loss scoring and each patch's loss kept; it builds the index (flat, for
    27 images) last."""
    from pipeline.embed.infer import InferConfig
    from pipeline.embed.run import EmbedConfig, run

    output = tmp_path_factory.mktemp("gallery_run") / "run"
    run(
        EmbedConfig(
            input=str(gallery),
            output=str(output),
            model=str(model_dir),
            infer=InferConfig(mask_ratio=0.75, patch_loss=True),
            batch_size=16,
            num_gpus=0,
        )
    )
    return output


def jpeg(image: Image.Image, quality: int) -> bytes:
    sink = io.BytesIO()
    image.save(sink, "JPEG", quality=quality)
    return sink.getvalue()


# Photographs that the tests' small random-weight model tells apart (its embeddings put every two of them below a
# cosine of 0.92); it cannot tell all of scikit-image's photographs apart (coffee and retina are at 0.98 for it).
DISTINCT = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "camera.png",
    "moon.png",
    "horse.png",
)


@pytest.fixture(scope="session")
def copies_run(ray_cluster, model_dir, photo_paths, tmp_path_factory):
    """The embedding job over eight distinct photographs and copies of five: re-encoded as JPEG at quality 60,
    resized to 90 %, cropped by 3 % on every side, and one byte for byte."""
    from pipeline.embed.run import EmbedConfig, run

    data = photo_paths[0].parent
    folder = tmp_path_factory.mktemp("copies")
    for name in DISTINCT:
        shutil.copy(data / name, folder / name)

    def image(name: str) -> Image.Image:
        return Image.open(data / name).convert("RGB")

    (folder / "astronaut-q60.jpg").write_bytes(jpeg(image("astronaut.png"), 60))
    chelsea = image("chelsea.png")
    chelsea.resize((chelsea.width * 9 // 10, chelsea.height * 9 // 10), Image.Resampling.BICUBIC).save(
        folder / "chelsea-resized.png"
    )
    for name in ("motorcycle_left.png", "camera.png"):
        photo = image(name)
        w, h = photo.width * 3 // 100, photo.height * 3 // 100
        photo.crop((w, h, photo.width - w, photo.height - h)).save(folder / name.replace(".png", "-cropped.png"))
    (folder / "camera-q60.jpg").write_bytes(jpeg(image("camera.png"), 60))
    shutil.copy(data / "rocket.jpg", folder / "rocket_copy.jpg")
    output = tmp_path_factory.mktemp("copies_run") / "run"
    run(EmbedConfig(input=str(folder), output=str(output), model=str(model_dir), batch_size=16, num_gpus=0))
    return output


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Path:
    """`make demo`'s command, as a user runs it (a process and a Ray of its own), in a folder of the session's: its
    workdir, with what it printed in `demo.out` (about 3 minutes on 2 cores)."""
    workdir = tmp_path_factory.mktemp("demo")
    done = subprocess.run(
        [sys.executable, "-m", "jobs.demo", "--workdir", str(workdir)],
        cwd=ROOT,
        env=own_ray_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, f"the demo failed ({done.returncode}): {done.stderr[-3000:]}"
    (workdir / "demo.out").write_text(done.stdout)
    return workdir


@pytest.fixture(scope="module")
def client(gallery_run):
    """The service over the gallery run, with a 1 MB upload limit; one a module."""
    from service_api import serve

    with serve(gallery_run, max_upload_mb=1) as client:
        yield client


def clustered_vectors(count: int, dim: int, clusters: int = 20, noise: float = 0.3, seed: int = 0) -> np.ndarray:
    """float32 [count, dim]: Gaussian clusters around random centres, the shape index tests need."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    return centres[rng.integers(0, clusters, count)] + noise * rng.standard_normal((count, dim)).astype(np.float32)


def write_embeddings(
    run: str,
    vectors: np.ndarray,
    storage: Storage | None = None,
    rows_per_file: int = 1000,
    paths: Sequence[str] | None = None,
    loss: np.ndarray | None = None,
    first_id: int = 0,
    etags: Sequence[str | None] | None = None,
    sizes: Sequence[int] | None = None,
    widths: Sequence[int] | None = None,
) -> list[str]:
    """Writes `vectors` [N, D] as the embeddings table of `run` (replacing any), ids from `first_id`; returns the paths.

    etags, sizes, widths: per row (default: no ETag, 1000 bytes, 100 pixels wide; always 80 high)."""
    from deltalake import write_deltalake

    from pipeline import schema
    from pipeline.layout import output_uri

    storage = storage or Storage.from_environment()
    paths = list(paths) if paths is not None else [f"s3://images/{i:06d}.jpg" for i in range(len(vectors))]
    n, dim = vectors.shape
    uri = output_uri(run, "embeddings")
    for start in range(0, n, rows_per_file):
        rows = slice(start, min(n, start + rows_per_file))
        part = np.ascontiguousarray(vectors[rows], dtype=np.float32)
        count = len(part)
        losses = loss[rows] if loss is not None else np.full(count, np.nan, np.float32)
        table = pa.table(
            {
                schema.ID: pa.array(np.arange(first_id + start, first_id + start + count), pa.int64()),
                schema.PATH: pa.array(paths[rows], pa.string()),
                schema.EMBEDDING: pa.ListArray.from_arrays(
                    pa.array(np.arange(count + 1, dtype=np.int32) * dim), pa.array(part.ravel())
                ),
                schema.LOSS: pa.array(losses, pa.float32(), mask=np.isnan(losses)),
                schema.WIDTH: pa.array(list(widths[rows]) if widths is not None else [100] * count, pa.int32()),
                schema.HEIGHT: pa.array([80] * count, pa.int32()),
                schema.SIZE: pa.array(list(sizes[rows]) if sizes is not None else [1000] * count, pa.int64()),
                schema.MTIME: pa.array([None] * count, pa.float64()),
                schema.ETAG: pa.array(list(etags[rows]) if etags is not None else [None] * count, pa.string()),
                schema.RUN: pa.array(["test"] * count, pa.string()),
            },
            schema=schema.EMBEDDINGS_SCHEMA,
        )
        write_deltalake(
            uri, table, mode="overwrite" if start == 0 else "append", storage_options=storage.delta_options(uri)
        )
    return paths


def duplicates_table(gallery: Path, version: int) -> pa.Table:
    """duplicates.parquet over the gallery as `vitmae duplicates` writes it: groups of 4 and 3 crops, and a pair of
    outliers, at table `version`."""
    rows = [  # path, group, similarity
        ("coffee-05.png", 7, 0.97),
        ("coffee-04.png", 7, 1.0),
        ("coffee-06.png", 7, 0.95),
        ("moon.png", 2, 1.0),
        ("camera.png", 2, 0.91),
        ("coffee-10.png", 3, 1.0),
        ("coffee-11.png", 3, 0.96),
        ("coffee-12.png", 3, 0.99),
        ("coffee-13.png", 3, 0.93),
    ]
    representative = {7: "coffee-04.png", 2: "moon.png", 3: "coffee-10.png"}
    sizes = {g: sum(1 for r in rows if r[1] == g) for g in representative}
    table = pa.table(
        {
            "path": [f"file://{gallery / r[0]}" for r in rows],
            "group": pa.array([r[1] for r in rows], pa.int64()),
            "group_size": pa.array([sizes[r[1]] for r in rows], pa.int32()),
            "similarity": pa.array([r[2] for r in rows], pa.float32()),
            "representative": [f"file://{gallery / representative[r[1]]}" for r in rows],
        }
    )
    return table.replace_schema_metadata({"duplicates.table_version": str(version)})
