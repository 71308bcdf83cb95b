"""This embedding job against the plain Ray Data recipe, on the same photographs, checkpoint, batch and local Ray.

(1) `pipeline.embed.run` (mask ratio 0, mean pooling); (2) what a user would write: `ray.data.read_images` ->
`transformers.ViTImageProcessorPil` in map_batches -> `transformers.ViTMAEModel` (mask_ratio 0, sdpa) in one actor
-> mean pooling -> `write_parquet`. For multi-megapixel and small JPEGs it reports images/s end to end (the two
run interleaved, median of --repeats), per-operator times from Ray Data's `stats()`, the model stage alone
(`pipeline.embed.embedder.Embedder` called directly, no Ray, on pre-decoded uint8 batches) and the peak summed RSS of the
driver and its Ray workers; then the job's peak memory at N and 10 N multi-megapixel JPEGs. The images are the
colour photographs scikit-image ships, cropped, mirrored and upscaled (JPEG quality 90); the job runs with its
other defaults (so including any final step it has, such as the index).

    python benchmarks/pipeline_throughput.py
    python benchmarks/pipeline_throughput.py --large 16 --small 64 --repeats 1 --memory-sizes 8,80
    python benchmarks/pipeline_throughput.py --model-size base
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray
import torch
import transformers
from PIL import Image

import vitmae
from pipeline import schema
from pipeline.embed.decode import DecodeConfig, decode_image
from pipeline.embed.run import EmbedConfig, batch_size_for
from pipeline.embed.run import run as run_job_plan
from pipeline.embed.embedder import Embedder
from pipeline.embed.infer import InferConfig

try:
    import psutil
except ImportError:  # Ray vendors it
    sys.path.append(str(Path(ray.__file__).parent / "thirdparty_files"))
    import psutil

logger = logging.getLogger("pipeline_throughput")

# Colour photographs that scikit-image ships (skimage/data); upscaled, cropped and flipped into distinct files.
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png",
          "retina.jpg", "hubble_deep_field.jpg", "ihc.png")
MODELS = {
    "small": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768, decoder_hidden_size=128,
                  decoder_num_hidden_layers=2, decoder_num_attention_heads=4, decoder_intermediate_size=512),
    "base": {},  # ViT-B/16 at 224, the config's defaults
}
# read_images' own list, plus WebP, which it leaves out by default.
PLAIN_EXTENSIONS = ["png", "jpg", "jpeg", "tif", "tiff", "bmp", "gif", "webp"]
MEMORY_INTERVAL_S = 0.5
PSS_INTERVAL_S = 5.0


def hardware() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), platform.processor())
    memory = psutil.virtual_memory().total / 2**30
    return (f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB; torch {torch.__version__}, ray {ray.__version__}, "
            f"transformers {transformers.__version__}, Python {platform.python_version()}")


# ---------------------------------------------------------------- inputs


def save_checkpoint(folder: Path, size: str) -> str:
    torch.manual_seed(0)
    vitmae.ViTMAEForPreTraining(vitmae.ViTMAEConfig(**MODELS[size])).save_pretrained(folder)
    vitmae.ViTImageProcessor(image_mean=(0.485, 0.456, 0.406), image_std=(0.229, 0.224, 0.225), resample=3).save_pretrained(folder)
    return str(folder)


def _make_image(job: tuple[int, tuple[int, int], str]) -> int:
    """Image i: photo i mod len(PHOTOS), a seeded 4:3 crop (80-100 % of the largest), mirrored on odd passes."""
    i, size, path = job
    import skimage

    photo = Image.open(Path(skimage.__file__).parent / "data" / PHOTOS[i % len(PHOTOS)]).convert("RGB")
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
    folder.mkdir(parents=True)
    jobs = [(i, size, str(folder / f"img-{i:05d}.jpg")) for i in range(count)]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        sizes = list(pool.map(_make_image, jobs, chunksize=4))
    logger.info("%d JPEGs of %dx%d, %.2f MB each on average, in %s", count, *size, np.mean(sizes) / 1e6, folder)
    return folder


def subset(source: Path, folder: Path, count: int) -> Path:
    """The first `count` files of `source`, hard-linked into `folder`."""
    folder.mkdir(parents=True)
    for path in sorted(source.iterdir())[:count]:
        os.link(path, folder / path.name)
    return folder


# ---------------------------------------------------------------- measuring


class PeakMemory:
    """Samples in a thread the summed RSS (every 0.5 s) and PSS (every 5 s) of this process and its Ray workers.

    RSS counts a shared object-store page once per process that maps it; PSS splits it between them. PSS is
    sampled rarely because reading it walks each process's page tables: 75 ms of CPU for a job's 12 processes,
    which every 0.2 s (as this did before 2026-11-24) took a third of a core from the pipelines measured. Now
    the sampler takes about 3 % of one core.
    """

    def __init__(self) -> None:
        self.driver = psutil.Process()
        self.rss = self.pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "PeakMemory":
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


def _is_ray_worker(process: psutil.Process) -> bool:
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
    if ray.is_initialized():
        processes = psutil.Process().children(recursive=True)
        ray.shutdown()
        psutil.wait_procs(processes, timeout=30)


def fresh_ray() -> None:
    """A new local Ray with 2 CPUs for each measured run, so that no run inherits another's workers (and their
    memory): as a job started on its own would see it, less `ray.init` itself."""
    stop_ray()
    ray.init(address="local", num_cpus=2, logging_level=logging.WARNING, include_dashboard=False)  # never another's Ray
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray.get([_ready.remote() for _ in range(2)])  # the pre-started workers are up before the clock starts


@ray.remote(num_cpus=1)
def _ready() -> None:
    return None


def run_job(images: Path, model: str, output: Path, batch_size: int | None) -> Run:
    fresh_ray()
    config = EmbedConfig(input=str(images), output=str(output), model=model, infer=InferConfig(mask_ratio=0.0, pooling="mean"),
                         batch_size=batch_size, overwrite=True)
    count = len(list(images.iterdir()))
    with PeakMemory() as memory:
        start = time.perf_counter()
        manifest = run_job_plan(config)
        seconds = time.perf_counter() - start
    if manifest["counts"]["embedded"] != count:
        raise RuntimeError(f"the job embedded {manifest['counts']} of {count} images")
    return Run("this job", count, seconds, memory.rss, memory.pss, parse_stages(manifest["ray_data_stats"]))


def plain_preprocess(batch: dict[str, np.ndarray], processor) -> dict[str, np.ndarray]:
    pixel_values = processor(images=list(batch["image"]), return_tensors="np")["pixel_values"]
    return {"path": batch["path"], "pixel_values": pixel_values}


class PlainEmbedder:
    """The recipe's model actor: transformers' ViTMAEModel, mean of the final-LayerNorm patch tokens."""

    def __init__(self, model: str) -> None:
        self.model = transformers.ViTMAEModel.from_pretrained(model, mask_ratio=0.0, attn_implementation="sdpa").eval()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            hidden = self.model(pixel_values=torch.from_numpy(batch["pixel_values"])).last_hidden_state
        return {"path": batch["path"], "embedding": hidden[:, 1:].mean(dim=1).numpy()}


def run_plain(images: Path, model: str, output: Path, batch_size: int) -> Run:
    fresh_ray()
    count = len(list(images.iterdir()))
    with PeakMemory() as memory:
        start = time.perf_counter()
        processor = transformers.ViTImageProcessorPil.from_pretrained(model)
        dataset = (
            ray.data.read_images(str(images), mode="RGB", include_paths=True, file_extensions=PLAIN_EXTENSIONS)
            .map_batches(plain_preprocess, fn_kwargs={"processor": processor}, batch_size=batch_size, batch_format="numpy")
            .map_batches(PlainEmbedder, fn_constructor_kwargs={"model": model}, batch_size=batch_size,
                         batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1))
        )
        dataset.write_parquet(str(output))
        seconds = time.perf_counter() - start
    written = ray.data.read_parquet(str(output)).count()
    if written != count:
        raise RuntimeError(f"the plain recipe wrote {written} of {count} images")
    return Run("plain recipe", count, seconds, memory.rss, memory.pss, parse_stages(dataset.stats()))


def model_alone(images: Path, model: str, batch_size: int, limit: int) -> dict[str, float]:
    """images/s of `Embedder` called directly on pre-decoded uint8 batches (no Ray), in the two ways a node's
    cores can run it: one process on all of them (at --batch-size), and one single-threaded process a core at
    the job's CPU batch (the job's default actors), all started together; plus the job's decode alone.

    `compare` runs it in every round, next to the pipelines, because this virtual machine's speed drifts by
    tens of percent over minutes.
    """
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
            spans = list(pool.map(_time_embedder, [model] * processes, shares, [threads] * processes,
                                  [batch] * processes, [barrier] * processes))
        seconds = max(end for _, end in spans) - min(begin for begin, _ in spans)
        result[f"model, {processes} x {threads} thread{'s' if threads > 1 else ''}"] = len(paths) / seconds
    return result


def _time_embedder(model: str, pixels: np.ndarray, threads: int, batch_size: int, barrier) -> tuple[float, float]:
    """One model-alone process: a warm-up batch, then every batch of `pixels` after all processes are ready.

    Returns:
        The start and end of the timed batches (`time.time()`, comparable across processes).
    """
    embedder = Embedder(model, InferConfig(mask_ratio=0.0, pooling="mean"), threads=threads)
    batches = [
        {schema.PATH: np.array([f"{i}" for i in range(i, i + len(chunk))], dtype=object),
         schema.ERROR: np.full(len(chunk), "", dtype=object), schema.PIXELS: chunk}
        for i in range(0, len(pixels), batch_size) for chunk in [pixels[i:i + batch_size]]
    ]
    embedder(batches[0])
    barrier.wait()
    start = time.time()
    for batch in batches:
        embedder(batch)
    return start, time.time()


def actor_threads() -> int:
    """torch's thread count inside a Ray actor holding one CPU, as Ray Data's model actors do by default."""
    fresh_ray()

    @ray.remote(num_cpus=1)
    class Probe:
        def threads(self) -> int:
            return torch.get_num_threads()

    threads = ray.get(Probe.remote().threads.remote())
    stop_ray()
    return threads


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


# ---------------------------------------------------------------- report


def start_up(model: str, images: Path, work: Path, args: argparse.Namespace) -> dict[str, float]:
    """Seconds each pipeline takes on 4 images (median of --repeats): its fixed cost per run (planning, a fresh
    model actor, its imports and weights), which the images/s above include."""
    seconds: dict[str, list[float]] = {"this job": [], "plain recipe": []}
    for r in range(args.repeats):
        seconds["this job"].append(run_job(images, model, work / f"out-start-job-{r}", args.job_batch_size).seconds)
        seconds["plain recipe"].append(run_plain(images, model, work / f"out-start-plain-{r}", args.batch_size).seconds)
    logger.info("start-up: %s", ", ".join(f"{k} {statistics.median(v):.1f}s" for k, v in seconds.items()))
    return {label: statistics.median(values) for label, values in seconds.items()}


def compare(name: str, images: Path, model: str, work: Path, args: argparse.Namespace) -> dict:
    """Both pipelines and the stages alone, in interleaved rounds."""
    runs: dict[str, list[Run]] = {"this job": [], "plain recipe": []}
    alone: list[dict[str, float]] = []
    for r in range(args.repeats):  # alternate which goes first, so neither always runs on a warmer machine
        order = [("this job", run_job, args.job_batch_size), ("plain recipe", run_plain, args.batch_size)]
        for label, fn, batch_size in order if r % 2 == 0 else order[::-1]:
            run = fn(images, model, work / f"out-{name}-{label.split()[0]}-{r}", batch_size)
            runs[label].append(run)
            logger.info("%s, %s, round %d: %d images in %.1fs, %.1f images/s, peak RSS %.2f GB (load %s)",
                        name, label, r + 1, run.images, run.seconds, run.images_per_s, run.rss_bytes / 1e9, load_average())
        stop_ray()  # the stages alone run without Ray, and without its idle processes
        alone.append(model_alone(images, model, args.batch_size, args.model_alone_images))
        logger.info("%s, stages alone, round %d: %s", name, r + 1, ", ".join(f"{k} {v:.1f} images/s" for k, v in alone[-1].items()))
    return {"runs": runs, "alone": {k: statistics.median(a[k] for a in alone) for k in alone[0]}, "alone_rounds": alone}


def _median(runs: list[Run], key: str) -> float:
    return statistics.median(getattr(r, key) for r in runs)


def print_report(results: dict[str, dict], startup: dict[str, float], memory: list[Run], args: argparse.Namespace,
                 threads: int) -> None:
    print(f"\n{hardware()}; local Ray with num_cpus=2; torch threads in a 1-CPU Ray actor: {threads}; load {load_average()}")
    print(f"model {args.model_size} (random weights), batch {args.batch_size} (plain recipe), "
          f"{args.job_batch_size or batch_size_for(gpus=0)} (job), fp32, mask ratio 0, mean pooling; "
          f"median of {args.repeats} interleaved rounds; start-up = the same pipeline on 4 images")
    print(f"\n{'images':24} {'pipeline':13} {'n':>4} {'s':>6} {'images/s':>8} {'vs plain':>8} {'start-up s':>10} "
          f"{'net images/s':>12} {'vs plain':>8} {'peak RSS GB':>11} {'PSS GB':>6}")
    for name, result in results.items():
        # Too few images to see past the start-up (which is itself noisy) gives nan rather than a negative rate.
        net = {}
        for label, runs in result["runs"].items():
            busy = _median(runs, "seconds") - startup[label]
            net[label] = runs[0].images / busy if busy > 0 else float("nan")
        plain = _median(result["runs"]["plain recipe"], "images_per_s")
        for label, runs in result["runs"].items():
            rate = _median(runs, "images_per_s")
            print(f"{name:24} {label:13} {runs[0].images:4} {_median(runs, 'seconds'):6.1f} {rate:8.1f} {rate / plain:7.2f}x "
                  f"{startup[label]:10.1f} {net[label]:12.1f} {net[label] / net['plain recipe']:7.2f}x "
                  f"{max(r.rss_bytes for r in runs) / 1e9:11.2f} {max(r.pss_bytes for r in runs) / 1e9:6.2f}")
        per_round = [j.images_per_s / p.images_per_s for j, p in zip(result["runs"]["this job"], result["runs"]["plain recipe"])]
        print(f"{'':24} end-to-end ratio per round: {', '.join(f'{x:.2f}x' for x in per_round)}")
        result["net"] = net
    print(f"\n{'images':24} {'stage alone (no Ray)':20} {'images/s':>8}   this job as % of it: end to end, net of start-up")
    for name, result in results.items():
        job = _median(result["runs"]["this job"], "images_per_s")
        for label, rate in result["alone"].items():
            print(f"{name:24} {label:20} {rate:8.1f}   {100 * job / rate:5.0f} %, {100 * result['net']['this job'] / rate:5.0f} %")
        # The reference: the faster way of running the model alone, in the same round.
        best = [max(v for k, v in rates.items() if k.startswith("model")) for rates in result["alone_rounds"]]
        rounds = list(zip(result["runs"]["this job"], best))
        print(f"{'':24} end to end as % of the faster model alone in the same round: "
              f"{', '.join(f'{100 * run.images_per_s / rate:.0f} %' for run, rate in rounds)}")
        net = [100 * run.images / (run.seconds - startup["this job"]) / rate for run, rate in rounds]
        print(f"{'':24} net of start-up, the same: {', '.join(f'{x:.0f} %' for x in net)}")
    print(f"\n{'images':24} {'pipeline':13} {'operator (last round)':56} {'task s':>6} {'CPU s':>6} {'ms/image':>8} {'% of run':>8}")
    for name, result in results.items():
        for label, runs in result["runs"].items():
            last = runs[-1]
            for stage in last.stages:
                print(f"{name:24} {label:13} {stage.name[:56]:56} {stage.wall_s:6.2f} {stage.cpu_s:6.2f} "
                      f"{1000 * stage.wall_s / last.images:8.1f} {100 * stage.wall_s / last.seconds:7.0f} %")
    if len(memory) >= 2:
        print(f"\n{'this job, large JPEGs':24} {'n':>4} {'s':>6} {'images/s':>8} {'peak RSS GB':>11} {'PSS GB':>6}")
        for run in memory:
            print(f"{'':24} {run.images:4} {run.seconds:6.1f} {run.images_per_s:8.1f} {run.rss_bytes / 1e9:11.2f} {run.pss_bytes / 1e9:6.2f}")
        first, last = memory[0], memory[-1]
        marginal = (last.images - first.images) / (last.seconds - first.seconds)
        print(f"{'':24} {last.images / first.images:.0f}x the images: peak RSS x{last.rss_bytes / first.rss_bytes:.2f}, "
              f"peak PSS x{last.pss_bytes / first.pss_bytes:.2f}; marginal rate {marginal:.1f} images/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", type=int, default=128, help="multi-megapixel JPEGs to compare on")
    parser.add_argument("--large-size", default="4000x3000", help="their width x height")
    parser.add_argument("--small", type=int, default=512, help="small JPEGs to compare on")
    parser.add_argument("--small-size", default="500x375", help="their width x height")
    parser.add_argument("--batch-size", type=int, default=32, help="images per model call of the plain recipe")
    parser.add_argument("--job-batch-size", type=int, default=None, help="the job's batch_size (default: the job's own)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of the two pipelines")
    parser.add_argument("--model-alone-images", type=int, default=256, help="images per model-alone pass")
    parser.add_argument("--memory-sizes", default="32,320", help="large-JPEG counts for the job's peak memory; '' skips")
    parser.add_argument("--model-size", choices=sorted(MODELS), default="small", help="small (D 192, 4 layers) or base (ViT-B/16)")
    parser.add_argument("--workdir", default=None, help="where images, checkpoint and outputs go (default: a temp dir)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    # Quiet Ray Data's per-run plan logs and transformers' load reports; Ray workers inherit the environment.
    os.environ.update(RAY_DATA_LOG_LEVEL="WARNING", TRANSFORMERS_VERBOSITY="error", HF_HUB_DISABLE_PROGRESS_BARS="1")
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    transformers.logging.set_verbosity_error()
    large_size, small_size = (tuple(int(x) for x in s.split("x")) for s in (args.large_size, args.small_size))
    memory_sizes = [int(x) for x in args.memory_sizes.split(",") if x]
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        model = save_checkpoint(work / "model", args.model_size)
        pool = make_images(work / "large-all", max([args.large, *memory_sizes]), large_size)
        sets = {f"large {args.large_size} JPEG": subset(pool, work / "large", args.large),
                f"small {args.small_size} JPEG": make_images(work / "small", args.small, small_size)}
        threads = actor_threads()
        startup = start_up(model, subset(sets[f"small {args.small_size} JPEG"], work / "start-up", 4), work, args)
        results = {name: compare(name.split()[0], images, model, work, args) for name, images in sets.items()}
        memory = []
        for n in memory_sizes:
            run = run_job(subset(pool, work / f"memory-{n}", n), model, work / f"out-memory-{n}", args.job_batch_size)
            memory.append(run)
            logger.info("memory, %d images: %.1fs, peak RSS %.2f GB, PSS %.2f GB (load %s)",
                        n, run.seconds, run.rss_bytes / 1e9, run.pss_bytes / 1e9, load_average())
        stop_ray()
    print_report(results, startup, memory, args, threads)


if __name__ == "__main__":
    main()
