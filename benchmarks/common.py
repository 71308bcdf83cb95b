"""What the benchmarks share: the machine, checkpoints, image sets, timed whole processes, Ray, another commit.

Each benchmark runs from the repository's root as `python -m benchmarks.NAME`. Only the standard library is imported
at the top of this module and each helper imports what it needs, so that a benchmark that measures other processes'
memory (nothing_new) imports it without torch, and the GPU benchmarks without Ray.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

    import numpy as np

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent  # the repository's root

# ---------------------------------------------------------------- the machine

PIPELINE_PACKAGES = ("torch", "ray", "transformers")  # what the pipeline's figures depend on
INDEX_PACKAGES = ("faiss", "numpy", "pyarrow")  # what the index's figures depend on


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def version(module: str) -> str:
    """'torch 2.13.0+cpu': the installed version of the distribution named as `module`, read without importing it, or
    else (faiss comes as faiss-cpu) the module's `__version__`."""
    try:
        return f"{module} {importlib.metadata.version(module)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{module} {importlib.import_module(module).__version__}"


def hardware(packages: Sequence[str] = PIPELINE_PACKAGES) -> str:
    """The CPU, its cores and memory, the versions of `packages` (import names) and Python's, in one line."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = "".join(f"{version(name)}, " for name in packages)
    return f"{cpu_model()}, {os.cpu_count()} cores, {memory:.0f} GiB; {versions}Python {platform.python_version()}"


def device_hardware(device: str) -> str:
    """The device a model runs on: the GPU with torch's and CUDA's versions, or the CPU with torch's threads."""
    import torch

    if str(device).startswith("cuda"):
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"{cpu_model()}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def status_kb(name: str, pid: int | str = "self") -> int:
    """A field of /proc/PID/status in kB: VmRSS, or VmHWM, the peak resident memory (which starts anew at exec, where
    wait4's ru_maxrss starts from the forking parent's)."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(name + ":"))


# ---------------------------------------------------------------- checkpoints

SMALL = dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768)
# ViTMAEConfig fields over its defaults (ViT-B/16 at 224, MAE's decoder). The throughput benchmarks' models; their
# small one has a lighter decoder than MAE's.
MODELS = {
    "small": dict(
        SMALL,
        decoder_hidden_size=128,
        decoder_num_hidden_layers=2,
        decoder_num_attention_heads=4,
        decoder_intermediate_size=512,
    ),
    "base": {},
}
E2E_MODELS = {  # the whole-job comparisons' encoders, MAE's decoder
    "small": SMALL,
    "vit-s": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "base": {},
}


def save_checkpoint(folder: Path, geometry: dict, trained_scale: bool = False) -> str:
    """An MAE of `geometry` and MAE's processor, saved in `folder`: weights as a fresh model draws them (seed 0), or
    with `trained_scale` every parameter random at a trained model's scale (`vitmae.random_weights`). Returns the
    folder."""
    import torch

    import vitmae
    from vitmae.processor import MAE_PROCESSOR
    from vitmae.random_weights import random_model

    torch.manual_seed(0)
    config = vitmae.ViTMAEConfig(**geometry)
    model = random_model(vitmae.ViTMAEForPreTraining, config) if trained_scale else vitmae.ViTMAEForPreTraining(config)
    model.save_pretrained(folder)
    vitmae.ViTImageProcessor(**MAE_PROCESSOR).save_pretrained(folder)
    return str(folder)


# ---------------------------------------------------------------- image sets

# Colour photographs that scikit-image ships (skimage/data); upscaled, cropped and flipped into distinct files.
PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "retina.jpg",
    "hubble_deep_field.jpg",
    "ihc.png",
)
KINDS = ("JPEG", "PNG", "PNG, opaque alpha", "PNG, see-through", "WebP")  # of the mixed set
SUFFIXES = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "PNG, opaque alpha": "-opaque.png",
    "PNG, see-through": "-alpha.png",
    "WebP": ".webp",
}


def photo_folder() -> Path:
    """skimage/data, where scikit-image's photographs are."""
    import skimage

    return Path(skimage.__file__).parent / "data"


def _make_image(job: tuple[int, tuple[int, int], str]) -> int:
    """Image i: photo i mod len(PHOTOS), a seeded 4:3 crop (80-100 % of the largest), mirrored on odd passes."""
    import numpy as np
    from PIL import Image

    i, size, path = job
    photo = Image.open(photo_folder() / PHOTOS[i % len(PHOTOS)]).convert("RGB")
    rng = np.random.default_rng(i)
    w, h = photo.size
    cw, ch = (h * 4 / 3, h) if w * 3 >= h * 4 else (w, w * 3 / 4)
    scale = rng.uniform(0.8, 1.0)
    cw, ch = int(cw * scale), int(ch * scale)
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    image = photo.crop((left, top, left + cw, top + ch)).resize(size, Image.Resampling.BICUBIC)
    if (i // len(PHOTOS)) % 2:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image.save(path, "JPEG", quality=90)
    return os.path.getsize(path)


def make_images(folder: Path, count: int, size: tuple[int, int]) -> Path:
    """`count` distinct JPEGs (quality 90) of `size` made from `PHOTOS`, img-NNNNN.jpg in `folder`."""
    folder.mkdir(parents=True)
    jobs = [(i, size, str(folder / f"img-{i:05d}.jpg")) for i in range(count)]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        sizes = list(pool.map(_make_image, jobs, chunksize=4))
    logger.info("%d JPEGs of %dx%d, %.2f MB each on average, in %s", count, *size, statistics.mean(sizes) / 1e6, folder)
    return folder


def _write_kinds(job: tuple[str, str, tuple[int, int] | None]) -> list[str]:
    """One photograph -> a file of each kind named `stem` + suffix; scikit-image's small ones upscaled to `upscale`."""
    import shutil

    import numpy as np
    from PIL import Image

    source, stem, upscale = job
    photo = Image.open(source).convert("RGB")
    if upscale:
        photo = photo.resize(upscale, Image.Resampling.BICUBIC)
    paths = []
    for kind, suffix in SUFFIXES.items():
        path = f"{stem}{suffix}"
        paths.append(path)
        if os.path.exists(path):  # made by an earlier run in the same --workdir
            continue
        if kind == "JPEG" and not upscale and Image.open(source).format == "JPEG":
            shutil.copyfile(source, path)
        elif kind == "JPEG":
            photo.save(path, "JPEG", quality=90)
        elif kind == "PNG":
            photo.save(path, "PNG")
        elif kind == "WebP":
            photo.save(path, "WEBP", quality=90)
        else:
            rgba = photo.convert("RGBA")
            if kind == "PNG, see-through":
                ramp = np.linspace(0, 255, photo.width).round().astype(np.uint8)
                rgba.putalpha(Image.fromarray(np.broadcast_to(ramp, (photo.height, photo.width)).copy()))
            rgba.save(path, "PNG")
    return paths


def make_set(patterns: list[str], folder: Path, limit: int | None) -> dict[str, list[Path]]:
    """The mixed set: each photograph matching `patterns` (or scikit-image's, upscaled to 4000 x 3000) as a file of
    every kind (JPEG, the file itself where it is one, else quality 90; PNG; PNG with an opaque alpha channel; PNG
    with a see-through alpha ramp; WebP, quality 90), by kind."""
    import glob

    from PIL import Image

    if patterns:
        sources = sorted({path for pattern in patterns for path in glob.glob(pattern)})[:limit]
        jobs = [(s, str(folder / f"{i:03d}-{Path(s).stem}"), None) for i, s in enumerate(sources)]
    else:
        data = photo_folder()
        jobs = [
            (str(data / name), str(folder / f"{i:03d}-{Path(name).stem}"), (4000, 3000))
            for i, name in enumerate(PHOTOS[:limit])
        ]
    if not jobs:
        raise FileNotFoundError(f"no photographs match {patterns}")
    folder.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        written = list(pool.map(_write_kinds, jobs))
    files = {kind: [Path(paths[k]) for paths in written] for k, kind in enumerate(KINDS)}
    megapixels = [w * h / 1e6 for w, h in (Image.open(path).size for path in files["JPEG"])]
    logger.info(
        "%d photographs of %.1f to %.1f megapixels (median %.1f), %d files in %s",
        len(megapixels),
        min(megapixels),
        max(megapixels),
        statistics.median(megapixels),
        sum(len(v) for v in files.values()),
        folder,
    )
    return files


def e2e_inputs(files: dict[str, list[Path]], folder: Path, count: int) -> Path:
    """`count` files, the kinds in turn (photograph i as kind i mod 5, then the next), hard-linked into `folder`."""
    folder.mkdir(parents=True)
    mixed = [files[KINDS[(i + j) % len(KINDS)]][i] for j in range(len(KINDS)) for i in range(len(files["JPEG"]))]
    for k in range(count):
        source = mixed[k % len(mixed)]
        os.link(source, folder / f"{k:05d}-{source.name}")
    return folder


def clustered(
    rng: np.random.Generator, centres: np.ndarray, n: int, noise: float, float64_noise: bool = False
) -> np.ndarray:
    """n vectors: a random centre each plus isotropic Gaussian noise. float32 [n, D]. `float64_noise` draws the noise
    in float64 and rounds it, as the tests' `clustered_vectors` does (other numbers from the same seed)."""
    import numpy as np

    labels = rng.integers(0, len(centres), n)
    shape = (n, centres.shape[1])
    out = (
        rng.standard_normal(shape).astype(np.float32) if float64_noise else rng.standard_normal(shape, dtype=np.float32)
    )
    out *= noise
    out += centres[labels]
    return out


# ---------------------------------------------------------------- whole processes


def timed_process(
    command: list[str], log: Path, env: dict[str, str] | None = None, cwd: str | None = None
) -> tuple[float, float]:
    """(seconds from start to exit, peak resident memory in MB) of one process, which must succeed; its output goes to
    `log`. It runs in `cwd` (None: this one) with `env` added to this process's environment; RAY_ADDRESS=local makes
    it start a Ray of its own even where another one runs on the machine (which `ray.init()` would otherwise join).
    The peak is wait4's, which starts from this process's memory at the fork: keep this one small to measure it."""
    env = {**os.environ, "RAY_DATA_LOG_LEVEL": "WARNING", "RAY_ADDRESS": "local", **(env or {})}
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} failed in {cwd or os.getcwd()}: {Path(log).read_text()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def workers_started() -> int:
    """Worker processes the last Ray session on this machine started (each writes its own core-worker log)."""
    return len(list(Path("/tmp/ray/session_latest/logs").glob("python-core-worker-*.log")))


def job_command(inputs: str | Path, model: str, output: str | Path, *flags: str) -> list[str]:
    """The embedding job as a process: `python -m jobs.embed` on `inputs` with `model`, writing `output`."""
    return [
        sys.executable,
        "-m",
        "jobs.embed",
        "--input",
        str(inputs),
        "--model",
        model,
        "--output",
        str(output),
        *flags,
    ]


def alternate(
    setups: dict[str, tuple[str | None, dict[str, str]]], inputs: Path, model: str, work: Path, rounds: int
) -> dict[str, list[tuple[float, float, int]]]:
    """The job on `inputs` once a round in each setup (label -> (folder to run it in, None: this one; environment
    added)), alternating which goes first: (seconds, stage images/s, worker processes started) by setup."""
    from pipeline.records import latest_run
    from pipeline.storage import Storage

    runs: dict[str, list[tuple[float, float, int]]] = {label: [] for label in setups}
    for r in range(rounds):
        for label in list(setups) if r % 2 == 0 else list(setups)[::-1]:
            output = work / f"out-{r}-{label.split()[0]}"
            command = job_command(inputs, model, output)
            cwd, env = setups[label]
            seconds, _ = timed_process(command, work / f"{output.name}.log", env, cwd)
            stage = latest_run(str(output), Storage())["images_per_second"]
            runs[label].append((seconds, stage, workers_started()))
            logger.info(
                "%s, round %d: %.1fs, stage %.2f images/s, %d workers started (load %s)",
                label,
                r + 1,
                seconds,
                stage,
                runs[label][-1][2],
                load_average(),
            )
    return runs


def print_medians(runs: dict[str, list[tuple[float, float, int]]], images: int, model: str) -> None:
    rounds = min(len(values) for values in runs.values())
    print(f"\n{hardware()}; load {load_average()}; {images} images, {model} encoder, medians of {rounds}")
    for label, values in runs.items():
        seconds, stage, workers = (statistics.median(v[i] for v in values) for i in range(3))
        print(
            f"{label:34} {seconds:6.1f} s  stage {stage:5.2f} images/s  {workers:3.0f} worker processes  "
            f"(per round: {', '.join(f'{v[0]:.1f} s' for v in values)})"
        )


def add_stage_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the benchmarks that time the model stage (`Embedder`) on this CPU: threads, rounds, batch and
    models."""
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the job's one actor on every core)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds; the median counts")
    parser.add_argument("--batch-size", type=int, default=8, help="images a call, as the job's CPU actors")
    parser.add_argument("--models", default="vit-s,base", help="geometries of benchmarks.common.E2E_MODELS")


def stage_checkpoints(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """(name, checkpoint folder) of an MAE of each geometry of --models, weights at a trained model's scale, in a
    temporary folder, with torch on --threads threads (`add_stage_arguments`)."""
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            yield name, save_checkpoint(Path(tmp) / name, E2E_MODELS[name], trained_scale=True)


def compare_stages(model: str, configs: dict, args: argparse.Namespace) -> tuple[dict, dict]:
    """The model stage (`Embedder`, as a CPU actor runs it, no Ray) of `model` in each config (key -> InferConfig), on
    scikit-image's photographs decoded as the job decodes them, each under two paths (two mask draws): (key -> its
    outputs on them all, which also warm it up; key -> images/s on --batch-size of them, three calls a round, the
    configs alternating, the median of --rounds)."""
    from benchmarks.loss_variance import photo_batch
    from pipeline.embed.embedder import Embedder

    embedders = {key: Embedder(model, config) for key, config in configs.items()}
    batch = photo_batch(next(iter(embedders.values())).processor, copies=2)
    outs = {key: embedder(batch) for key, embedder in embedders.items()}
    small = {k: v[: args.batch_size] for k, v in batch.items()}
    seconds: dict = {key: [] for key in embedders}
    for _ in range(args.rounds):
        for key, embedder in embedders.items():
            start = time.perf_counter()
            for _ in range(3):
                embedder(small)
            seconds[key].append((time.perf_counter() - start) / (3 * args.batch_size))
    return outs, {key: 1 / statistics.median(s) for key, s in seconds.items()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The set, the model and the rounds, as every whole-job comparison takes them."""
    parser.add_argument(
        "--photos", action="append", default=[], help="glob of photographs (repeatable); default: scikit-image's"
    )
    parser.add_argument("--images", type=int, default=300, help="files of the mixed set to embed")
    parser.add_argument("--model", choices=sorted(E2E_MODELS), default="vit-s", help="encoder geometry")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--workdir", default=None, help="where the set is made (kept for the next run)")


def comparison_inputs(args: argparse.Namespace, work: Path) -> tuple[Path, str]:
    """What `add_arguments`' flags ask for: the files of the mixed set (made in --workdir, else in `work`) hard-linked
    into work/inputs, and the checkpoint, in work/model."""
    files = make_set(args.photos, Path(args.workdir or work) / "set", None)
    model = save_checkpoint(work / "model", E2E_MODELS[args.model], trained_scale=True)
    return e2e_inputs(files, work / "inputs", args.images), model


# ---------------------------------------------------------------- another commit


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def this_checkout() -> str:
    """HEAD's short hash, with '+changes' where tracked files differ from it."""
    return git("rev-parse", "--short", "HEAD") + (
        "+changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    )


@contextlib.contextmanager
def worktree(commit: str, folder: Path) -> Iterator[Path]:
    """A detached `git worktree` of `commit` at `folder`, removed on the way out."""
    git("worktree", "add", "--detach", str(folder), commit)
    try:
        yield folder
    finally:
        git("worktree", "remove", "--force", str(folder))


# ---------------------------------------------------------------- Ray and the plain recipe

MEMORY_INTERVAL_S = 0.5
PSS_INTERVAL_S = 5.0
# read_images' own list, plus WebP, which it leaves out by default.
PLAIN_EXTENSIONS = ["png", "jpg", "jpeg", "tif", "tiff", "bmp", "gif", "webp"]


def _psutil():
    """psutil, installed or as Ray ships it (importing ray puts its third-party folder on the path)."""
    import psutil
    import ray  # noqa: F401

    return psutil


def quiet_logs() -> None:
    """Quiets Ray Data's per-run plan logs and transformers' load reports; Ray workers inherit the environment."""
    import transformers

    os.environ.update(RAY_DATA_LOG_LEVEL="WARNING", TRANSFORMERS_VERBOSITY="error", HF_HUB_DISABLE_PROGRESS_BARS="1")
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    transformers.logging.set_verbosity_error()


class PeakMemory:
    """Samples in a thread the summed RSS (every 0.5 s) and PSS (every 5 s) of this process and its Ray workers.

    RSS counts a shared object-store page once per process that maps it; PSS splits it between them. PSS is
    sampled rarely because reading it walks each process's page tables: 75 ms of CPU for a job's 12 processes,
    which every 0.2 s (as this did before 2026-11-24) took a third of a core from the pipelines measured. Now
    the sampler takes about 3 % of one core.
    """

    def __init__(self) -> None:
        self.driver = _psutil().Process()
        self.rss = self.pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        samples = 0
        while True:
            self._sample(pss=samples % round(PSS_INTERVAL_S / MEMORY_INTERVAL_S) == 0)
            samples += 1
            if self._stop.wait(MEMORY_INTERVAL_S):
                return

    def _sample(self, pss: bool) -> None:
        psutil = _psutil()
        total_rss = total_pss = 0
        for process in [self.driver, *self.driver.children(recursive=True)]:
            try:
                if process is not self.driver and not _is_ray_worker(process):
                    continue
                info = process.memory_full_info() if pss else process.memory_info()
                total_rss += info.rss
                total_pss += info.pss if pss else 0
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        self.rss, self.pss = max(self.rss, total_rss), max(self.pss, total_pss)


def _is_ray_worker(process) -> bool:
    command = " ".join(process.cmdline())
    return command.startswith("ray::") or "default_worker.py" in command


@dataclass
class Stage:
    name: str
    wall_s: float  # summed remote wall time of the operator's tasks (actor calls)
    cpu_s: float  # summed remote CPU time


@dataclass
class Run:
    pipeline: str
    images: int
    seconds: float
    rss_bytes: int
    pss_bytes: int
    stages: list[Stage] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_OPERATOR = re.compile(r"^Operator \d+ (.+?): \d+ tasks? executed", re.M)
_TOTAL = re.compile(r"\* Remote (wall|cpu) time: .*?, ([\d.]+)(us|ms|s|m|h) total")


def parse_stages(stats: str) -> list[Stage]:
    """Ray Data's `stats()` text -> the summed remote wall and CPU time of each operator."""
    starts = [(m.start(), m.group(1)) for m in _OPERATOR.finditer(stats)]
    stages = []
    for k, (start, name) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else len(stats)
        totals = {kind: float(value) * _UNITS[unit] for kind, value, unit in _TOTAL.findall(stats[start:end])}
        stages.append(Stage(name, totals.get("wall", float("nan")), totals.get("cpu", float("nan"))))
    return stages


def stop_ray() -> None:
    """Shuts Ray down and waits until its processes are gone, so their exit does not overlap the next measurement."""
    import ray

    if ray.is_initialized():
        processes = _psutil().Process().children(recursive=True)
        ray.shutdown()
        _psutil().wait_procs(processes, timeout=30)


def fresh_ray() -> None:
    """A new local Ray with 2 CPUs for each measured run, so that no run inherits another's workers (and their
    memory): as a job started on its own would see it, less `ray.init` itself."""
    import ray

    stop_ray()
    ray.init(address="local", num_cpus=2, logging_level=logging.WARNING, include_dashboard=False)  # never another's Ray
    ray.data.DataContext.get_current().enable_progress_bars = False
    ready = ray.remote(num_cpus=1)(_nothing)
    ray.get([ready.remote() for _ in range(2)])  # the pre-started workers are up before the clock starts


def _nothing() -> None:
    return None


def plain_preprocess(batch: dict[str, np.ndarray], processor) -> dict[str, np.ndarray]:
    pixel_values = processor(images=list(batch["image"]), return_tensors="np")["pixel_values"]
    return {"path": batch["path"], "pixel_values": pixel_values}


class PlainEmbedder:
    """The recipe's model actor: transformers' ViTMAEModel, mean of the final-LayerNorm patch tokens."""

    def __init__(self, model: str) -> None:
        import transformers

        self.model = transformers.ViTMAEModel.from_pretrained(model, mask_ratio=0.0, attn_implementation="sdpa").eval()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            hidden = self.model(pixel_values=torch.from_numpy(batch["pixel_values"])).last_hidden_state
        return {"path": batch["path"], "embedding": hidden[:, 1:].mean(dim=1).numpy()}


def run_plain(images: Path, model: str, output: Path, batch_size: int) -> Run:
    """What a user would write, on a fresh Ray: `ray.data.read_images` -> `transformers.ViTImageProcessorPil` in
    map_batches -> `transformers.ViTMAEModel` (mask ratio 0, sdpa) in one actor -> mean pooling -> `write_parquet`."""
    import ray
    import transformers

    fresh_ray()
    count = len(list(images.iterdir()))
    with PeakMemory() as memory:
        start = time.perf_counter()
        processor = transformers.ViTImageProcessorPil.from_pretrained(model)
        dataset = (
            ray.data.read_images(str(images), mode="RGB", include_paths=True, file_extensions=PLAIN_EXTENSIONS)
            .map_batches(
                plain_preprocess, fn_kwargs={"processor": processor}, batch_size=batch_size, batch_format="numpy"
            )
            .map_batches(
                PlainEmbedder,
                fn_constructor_kwargs={"model": model},
                batch_size=batch_size,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=1),
            )
        )
        dataset.write_parquet(str(output))
        seconds = time.perf_counter() - start
    written = ray.data.read_parquet(str(output)).count()
    if written != count:
        raise RuntimeError(f"the plain recipe wrote {written} of {count} images")
    return Run("plain recipe", count, seconds, memory.rss, memory.pss, parse_stages(dataset.stats()))


# ---------------------------------------------------------------- the model stage alone


def model_alone(images: Path, model: str, batch_size: int, limit: int) -> dict[str, float]:
    """images/s of `Embedder` called directly on pre-decoded uint8 batches (no Ray), in the two ways a node's
    cores can run it: one process on all of them (at `batch_size`), and one single-threaded process a core at
    the job's CPU batch (the job's default actors), all started together; plus the job's decode alone.

    Run it in every round, next to the pipelines, because a virtual machine's speed drifts by tens of percent over
    minutes.
    """
    import multiprocessing

    import numpy as np

    import vitmae
    from pipeline.embed.decode import DecodeConfig, decode_image
    from pipeline.embed.resources import batch_size_for

    processor = vitmae.ViTImageProcessor.from_pretrained(model)
    paths = sorted(images.iterdir())[:limit]
    start = time.perf_counter()
    pixels = np.stack([decode_image(p.read_bytes(), processor, DecodeConfig()).pixels for p in paths])
    result = {"decode, 1 core": len(paths) / (time.perf_counter() - start)}
    cores = os.cpu_count() or 1
    spawn = multiprocessing.get_context("spawn")
    for processes, threads, batch in ((1, cores, batch_size), (cores, 1, batch_size_for(gpus=0))):
        shares = np.array_split(pixels, processes)
        with ProcessPoolExecutor(processes, mp_context=spawn) as pool, spawn.Manager() as manager:
            barrier = manager.Barrier(processes)
            spans = list(
                pool.map(
                    _time_embedder,
                    [model] * processes,
                    shares,
                    [threads] * processes,
                    [batch] * processes,
                    [barrier] * processes,
                )
            )
        seconds = max(end for _, end in spans) - min(begin for begin, _ in spans)
        result[f"model, {processes} x {threads} thread{'s' if threads > 1 else ''}"] = len(paths) / seconds
    return result


def _time_embedder(model: str, pixels: np.ndarray, threads: int, batch_size: int, barrier) -> tuple[float, float]:
    """One model-alone process: a warm-up batch, then every batch of `pixels` after all processes are ready.

    Returns:
        The start and end of the timed batches (`time.time()`, comparable across processes).
    """
    import numpy as np

    from pipeline import schema
    from pipeline.embed.embedder import Embedder
    from pipeline.embed.infer import InferConfig

    embedder = Embedder(model, InferConfig(mask_ratio=0.0, pooling="mean"), threads=threads)
    batches = [
        {
            schema.PATH: np.array([f"{i}" for i in range(i, i + len(chunk))], dtype=object),
            schema.ERROR: np.full(len(chunk), "", dtype=object),
            schema.PIXELS: chunk,
        }
        for i in range(0, len(pixels), batch_size)
        for chunk in [pixels[i : i + batch_size]]
    ]
    embedder(batches[0])
    barrier.wait()
    start = time.time()
    for batch in batches:
        embedder(batch)
    return start, time.time()
