"""This embedding job against the plain Ray Data recipe, on the same photographs, checkpoint, batch and local Ray.

(1) `pipeline.embed.run` (mask ratio 0, mean pooling); (2) what a user would write: `ray.data.read_images` ->
`transformers.ViTImageProcessorPil` in map_batches -> `transformers.ViTMAEModel` (mask_ratio 0, sdpa) in one actor
-> mean pooling -> `write_parquet`. For multi-megapixel and small JPEGs it reports images/s end to end (the two
run interleaved, median of --repeats), per-operator times from Ray Data's `stats()`, the model stage alone
(`pipeline.embed.embedder.Embedder` called directly, no Ray, on pre-decoded uint8 batches) and the peak summed RSS of
the driver and its Ray workers; then the job's peak memory at N and 10 N multi-megapixel JPEGs. The images are the
colour photographs scikit-image ships, cropped, mirrored and upscaled (JPEG quality 90); the job runs with its
other defaults (so including any final step it has, such as the index).

    python -m benchmarks.pipeline_throughput
    python -m benchmarks.pipeline_throughput --large 16 --small 64 --repeats 1 --memory-sizes 8,80
    python -m benchmarks.pipeline_throughput --model-size base
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import ray
import torch

from benchmarks.common import (
    MODELS,
    PeakMemory,
    Run,
    fresh_ray,
    hardware,
    load_average,
    make_images,
    model_alone,
    parse_stages,
    quiet_logs,
    run_plain,
    save_checkpoint,
    stop_ray,
)
from pipeline.embed.infer import InferConfig
from pipeline.embed.resources import batch_size_for
from pipeline.embed.run import EmbedConfig
from pipeline.embed.run import run as run_job_plan

logger = logging.getLogger("pipeline_throughput")


# ---------------------------------------------------------------- inputs


def subset(source: Path, folder: Path, count: int) -> Path:
    """The first `count` files of `source`, hard-linked into `folder`."""
    folder.mkdir(parents=True)
    for path in sorted(source.iterdir())[:count]:
        os.link(path, folder / path.name)
    return folder


# ---------------------------------------------------------------- measuring


def run_job(images: Path, model: str, output: Path, batch_size: int | None) -> Run:
    fresh_ray()
    config = EmbedConfig(
        input=str(images),
        output=str(output),
        model=model,
        infer=InferConfig(mask_ratio=0.0, pooling="mean"),
        batch_size=batch_size,
        overwrite=True,
    )
    count = len(list(images.iterdir()))
    with PeakMemory() as memory:
        start = time.perf_counter()
        manifest = run_job_plan(config)
        seconds = time.perf_counter() - start
    if manifest["counts"]["embedded"] != count:
        raise RuntimeError(f"the job embedded {manifest['counts']} of {count} images")
    return Run("this job", count, seconds, memory.rss, memory.pss, parse_stages(manifest["ray_data_stats"]))


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
            logger.info(
                "%s, %s, round %d: %d images in %.1fs, %.1f images/s, peak RSS %.2f GB (load %s)",
                name,
                label,
                r + 1,
                run.images,
                run.seconds,
                run.images_per_s,
                run.rss_bytes / 1e9,
                load_average(),
            )
        stop_ray()  # the stages alone run without Ray, and without its idle processes
        alone.append(model_alone(images, model, args.batch_size, args.model_alone_images))
        logger.info(
            "%s, stages alone, round %d: %s",
            name,
            r + 1,
            ", ".join(f"{k} {v:.1f} images/s" for k, v in alone[-1].items()),
        )
    return {"runs": runs, "alone": {k: statistics.median(a[k] for a in alone) for k in alone[0]}, "alone_rounds": alone}


def _median(runs: list[Run], key: str) -> float:
    return statistics.median(getattr(r, key) for r in runs)


def print_report(
    results: dict[str, dict], startup: dict[str, float], memory: list[Run], args: argparse.Namespace, threads: int
) -> None:
    print(
        f"\n{hardware()}; local Ray with num_cpus=2; "
        f"torch threads in a 1-CPU Ray actor: {threads}; load {load_average()}"
    )
    print(
        f"model {args.model_size} (random weights), batch {args.batch_size} (plain recipe), "
        f"{args.job_batch_size or batch_size_for(gpus=0)} (job), fp32, mask ratio 0, mean pooling; "
        f"median of {args.repeats} interleaved rounds; start-up = the same pipeline on 4 images"
    )
    print(
        f"\n{'images':24} {'pipeline':13} {'n':>4} {'s':>6} {'images/s':>8} {'vs plain':>8} {'start-up s':>10} "
        f"{'net images/s':>12} {'vs plain':>8} {'peak RSS GB':>11} {'PSS GB':>6}"
    )
    for name, result in results.items():
        # Too few images to see past the start-up (which is itself noisy) gives nan rather than a negative rate.
        net = {}
        for label, runs in result["runs"].items():
            busy = _median(runs, "seconds") - startup[label]
            net[label] = runs[0].images / busy if busy > 0 else float("nan")
        plain = _median(result["runs"]["plain recipe"], "images_per_s")
        for label, runs in result["runs"].items():
            rate = _median(runs, "images_per_s")
            print(
                f"{name:24} {label:13} {runs[0].images:4} {_median(runs, 'seconds'):6.1f} "
                f"{rate:8.1f} {rate / plain:7.2f}x "
                f"{startup[label]:10.1f} {net[label]:12.1f} {net[label] / net['plain recipe']:7.2f}x "
                f"{max(r.rss_bytes for r in runs) / 1e9:11.2f} {max(r.pss_bytes for r in runs) / 1e9:6.2f}"
            )
        per_round = [
            j.images_per_s / p.images_per_s for j, p in zip(result["runs"]["this job"], result["runs"]["plain recipe"])
        ]
        print(f"{'':24} end-to-end ratio per round: {', '.join(f'{x:.2f}x' for x in per_round)}")
        result["net"] = net
    print(
        f"\n{'images':24} {'stage alone (no Ray)':20} {'images/s':>8}   "
        "this job as % of it: end to end, net of start-up"
    )
    for name, result in results.items():
        job = _median(result["runs"]["this job"], "images_per_s")
        for label, rate in result["alone"].items():
            print(
                f"{name:24} {label:20} {rate:8.1f}   {100 * job / rate:5.0f} %, "
                f"{100 * result['net']['this job'] / rate:5.0f} %"
            )
        # The reference: the faster way of running the model alone, in the same round.
        best = [max(v for k, v in rates.items() if k.startswith("model")) for rates in result["alone_rounds"]]
        rounds = list(zip(result["runs"]["this job"], best))
        print(
            f"{'':24} end to end as % of the faster model alone in the same round: "
            f"{', '.join(f'{100 * run.images_per_s / rate:.0f} %' for run, rate in rounds)}"
        )
        net = [100 * run.images / (run.seconds - startup["this job"]) / rate for run, rate in rounds]
        print(f"{'':24} net of start-up, the same: {', '.join(f'{x:.0f} %' for x in net)}")
    print(
        f"\n{'images':24} {'pipeline':13} {'operator (last round)':56} "
        f"{'task s':>6} {'CPU s':>6} {'ms/image':>8} {'% of run':>8}"
    )
    for name, result in results.items():
        for label, runs in result["runs"].items():
            last = runs[-1]
            for stage in last.stages:
                print(
                    f"{name:24} {label:13} {stage.name[:56]:56} {stage.wall_s:6.2f} {stage.cpu_s:6.2f} "
                    f"{1000 * stage.wall_s / last.images:8.1f} {100 * stage.wall_s / last.seconds:7.0f} %"
                )
    if len(memory) >= 2:
        print(f"\n{'this job, large JPEGs':24} {'n':>4} {'s':>6} {'images/s':>8} {'peak RSS GB':>11} {'PSS GB':>6}")
        for run in memory:
            print(
                f"{'':24} {run.images:4} {run.seconds:6.1f} {run.images_per_s:8.1f} "
                f"{run.rss_bytes / 1e9:11.2f} {run.pss_bytes / 1e9:6.2f}"
            )
        first, last = memory[0], memory[-1]
        marginal = (last.images - first.images) / (last.seconds - first.seconds)
        print(
            f"{'':24} {last.images / first.images:.0f}x the images: peak RSS x{last.rss_bytes / first.rss_bytes:.2f}, "
            f"peak PSS x{last.pss_bytes / first.pss_bytes:.2f}; marginal rate {marginal:.1f} images/s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--large", type=int, default=128, help="multi-megapixel JPEGs to compare on")
    parser.add_argument("--large-size", default="4000x3000", help="their width x height")
    parser.add_argument("--small", type=int, default=512, help="small JPEGs to compare on")
    parser.add_argument("--small-size", default="500x375", help="their width x height")
    parser.add_argument("--batch-size", type=int, default=32, help="images per model call of the plain recipe")
    parser.add_argument(
        "--job-batch-size", type=int, default=None, help="the job's batch_size (default: the job's own)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of the two pipelines")
    parser.add_argument("--model-alone-images", type=int, default=256, help="images per model-alone pass")
    parser.add_argument(
        "--memory-sizes", default="32,320", help="large-JPEG counts for the job's peak memory; '' skips"
    )
    parser.add_argument(
        "--model-size", choices=sorted(MODELS), default="small", help="small (D 192, 4 layers) or base (ViT-B/16)"
    )
    parser.add_argument("--workdir", default=None, help="where images, checkpoint and outputs go (default: a temp dir)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    quiet_logs()
    large_size, small_size = (tuple(int(x) for x in s.split("x")) for s in (args.large_size, args.small_size))
    memory_sizes = [int(x) for x in args.memory_sizes.split(",") if x]
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        model = save_checkpoint(work / "model", MODELS[args.model_size])
        pool = make_images(work / "large-all", max([args.large, *memory_sizes]), large_size)
        sets = {
            f"large {args.large_size} JPEG": subset(pool, work / "large", args.large),
            f"small {args.small_size} JPEG": make_images(work / "small", args.small, small_size),
        }
        threads = actor_threads()
        startup = start_up(model, subset(sets[f"small {args.small_size} JPEG"], work / "start-up", 4), work, args)
        results = {name: compare(name.split()[0], images, model, work, args) for name, images in sets.items()}
        memory = []
        for n in memory_sizes:
            run = run_job(subset(pool, work / f"memory-{n}", n), model, work / f"out-memory-{n}", args.job_batch_size)
            memory.append(run)
            logger.info(
                "memory, %d images: %.1fs, peak RSS %.2f GB, PSS %.2f GB (load %s)",
                n,
                run.seconds,
                run.rss_bytes / 1e9,
                run.pss_bytes / 1e9,
                load_average(),
            )
        stop_ray()
    print_report(results, startup, memory, args, threads)


if __name__ == "__main__":
    main()
