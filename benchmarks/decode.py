"""Decoding and resizing per core, by format: the plain recipe, the exact mode and the fast mode; their embeddings'
cosines; the peak memory of each; and the job end to end against the plain Ray Data recipe on the same mixed set.

Each photograph becomes one file of each kind: JPEG (the file itself where it is one, else quality 90), PNG, PNG
with an opaque alpha channel, PNG with a see-through alpha ramp, and WebP (quality 90). The plain recipe is what
`ray.data.read_images(mode="RGB")` and transformers' `ViTImageProcessorPil` do: Pillow decodes the whole image,
converts it to RGB (dropping alpha) and resizes it. Times are CPU seconds of this process (libvips on one thread),
the median of --rounds interleaved rounds, so other work on the machine stretches them less than wall time.

Cosines compare mean-pooled embeddings with the exact mode's (transformers' pixels): ViT-B/16 with weights drawn at a
trained model's scale (as the parity tests draw them), and each --model checkpoint (the demo's, say).

--end-to-end N runs, as whole processes and alternating, `python -m jobs.embed` and `python -m benchmarks.plain_recipe`
on N of the files (the kinds in turn), with the same checkpoint, timing each process from start to exit (Ray's start-up
included), then the model stage alone on pre-decoded batches (`benchmarks.common.model_alone`);
with --e2e-job-only the job alone, for the check against the model alone where the model bounds it (ViT-B).

    python -m benchmarks.decode                                # scikit-image's photographs, upscaled to 12 megapixels
    python -m benchmarks.decode --photos '/usr/share/backgrounds/*_by_*.jpg' --model out/demo/pretrain/model
    python -m benchmarks.decode --photos 'photos/*.jpg' --rounds 1 --end-to-end 300 --e2e-model small
    python -m benchmarks.decode --photos 'photos/*.jpg' --end-to-end 300 --e2e-model base --e2e-job-only --e2e-rounds 1
"""

from __future__ import annotations

import argparse
import io
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import vitmae
from benchmarks.common import (
    E2E_MODELS,
    KINDS,
    ROOT,
    e2e_inputs,
    hardware,
    job_command,
    load_average,
    make_set,
    model_alone,
    save_checkpoint,
    status_kb,
    timed_process,
)
from pipeline.embed.decode import DecodeConfig, decode_image
from pipeline.records import latest_run
from pipeline.storage import Storage
from vitmae.processor import MAE_PROCESSOR
from vitmae.random_weights import random_model

logger = logging.getLogger("decode")

METHODS = ("plain recipe", "exact", "fast")


# ---------------------------------------------------------------- per core


def decoders(processor: vitmae.ViTImageProcessor) -> dict[str, Callable[[bytes], np.ndarray]]:
    """Each method: encoded bytes -> uint8 [H, W, 3] at the processor's size."""
    exact, fast = DecodeConfig(mode="exact"), DecodeConfig()
    return {
        "plain recipe": lambda data: processor.resize_to_uint8(Image.open(io.BytesIO(data)).convert("RGB")),
        "exact": lambda data: decode_image(data, processor, exact).pixels,
        "fast": lambda data: decode_image(data, processor, fast).pixels,
    }


def time_methods(
    files: dict[str, list[Path]], processor: vitmae.ViTImageProcessor, rounds: int
) -> dict[str, dict[str, float]]:
    """CPU seconds per image, by kind and method: each image's median over the rounds, then the mean over images.
    Within a round the methods take turns image by image, in an order that rotates, so drift hits them alike."""
    methods = decoders(processor)
    seconds: dict[tuple[str, str, int], list[float]] = {}
    for r in range(rounds):
        for kind, paths in files.items():
            for i, path in enumerate(paths):
                data = path.read_bytes()
                order = list(METHODS[(i + r) % 3 :] + METHODS[: (i + r) % 3])
                for method in order:
                    start = time.process_time()
                    methods[method](data)
                    seconds.setdefault((kind, method, i), []).append(time.process_time() - start)
        logger.info("timing round %d of %d done (load %s)", r + 1, rounds, load_average())
    return {
        kind: {
            method: float(np.mean([statistics.median(seconds[kind, method, i]) for i in range(len(paths))]))
            for method in METHODS
        }
        for kind, paths in files.items()
    }


def _peak_memory(method: str, paths: list[Path], processor: dict) -> float:
    """In a fresh process: MB of peak RSS above the RSS before, decoding `paths` with `method` one after the other."""
    decode = decoders(vitmae.ViTImageProcessor.from_dict(processor))[method]
    decode(paths[0].read_bytes())  # the decoders' own start-up
    Path("/proc/self/clear_refs").write_text("5")  # Linux: the peak RSS (VmHWM) starts again from the current RSS
    before = status_kb("VmRSS")
    for path in paths:
        decode(path.read_bytes())
    return (status_kb("VmHWM") - before) / 1024


def peak_memory(files: dict[str, list[Path]], processor: vitmae.ViTImageProcessor) -> dict[str, float]:
    """Each method's peak RSS over the whole set, one fresh process each."""
    paths = [path for kind in KINDS for path in files[kind]]
    spawn = multiprocessing.get_context("spawn")
    result = {}
    for method in METHODS:
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            result[method] = pool.submit(_peak_memory, method, paths, processor.to_dict()).result()
    return result


# ---------------------------------------------------------------- cosines


def embeddings(model: torch.nn.Module, processor: vitmae.ViTImageProcessor, pixels: list[np.ndarray]) -> torch.Tensor:
    """uint8 [H, W, 3] images -> float32 [N, D] mean-pooled embeddings, 16 at a time."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(pixels), 16):
            x = processor.normalize(torch.from_numpy(np.stack(pixels[i : i + 16])))
            out.append(model(x, mask_ratio=0.0).last_hidden_state[:, 1:].mean(1))
    return torch.cat(out)


def cosines(
    files: dict[str, list[Path]], model: torch.nn.Module, processor: vitmae.ViTImageProcessor
) -> dict[str, dict[str, tuple[float, float]]]:
    """(min, mean) cosine to the exact mode's embedding, by kind, for the plain recipe and the fast mode."""
    methods = decoders(processor)
    result = {}
    for kind, paths in files.items():
        datas = [path.read_bytes() for path in paths]
        vectors = {method: embeddings(model, processor, [methods[method](d) for d in datas]) for method in METHODS}
        result[kind] = {}
        for method in ("plain recipe", "fast"):
            cosine = torch.nn.functional.cosine_similarity(vectors[method], vectors["exact"])
            result[kind][method] = (cosine.min().item(), cosine.mean().item())
    return result


def base_model() -> tuple[torch.nn.Module, vitmae.ViTImageProcessor]:
    torch.manual_seed(0)
    return random_model(vitmae.ViTMAEModel, vitmae.ViTMAEConfig()).eval(), vitmae.ViTImageProcessor(**MAE_PROCESSOR)


def checkpoint(path: str) -> tuple[torch.nn.Module, vitmae.ViTImageProcessor]:
    return vitmae.ViTMAEModel.from_pretrained(path).eval(), vitmae.ViTImageProcessor.from_pretrained(path)


# ---------------------------------------------------------------- end to end


def end_to_end(
    inputs: Path, model: str, work: Path, rounds: int, decode_mode: str, plain: bool, dtype: str = "auto"
) -> dict[str, list[float]]:
    """Seconds of each whole process, in alternating order: the job and (where `plain`) the plain recipe on the same
    files; under "job's embedding stage", the images/s the job's run record gives its stage (no Ray start-up, no
    index)."""
    count = len(list(inputs.iterdir()))
    # label -> the command writing to an output folder
    commands = {
        "this job": lambda out: job_command(
            inputs, model, out, "--overwrite", "true", "--decode.mode", decode_mode, "--infer.dtype", dtype
        ),
        "plain recipe": lambda out: [
            *(sys.executable, "-m", "benchmarks.plain_recipe", "--input", str(inputs), "--model", model),
            *("--output", str(out)),
        ],
    }
    if not plain:
        del commands["plain recipe"]
    seconds: dict[str, list[float]] = {label: [] for label in [*commands, "job's embedding stage"]}
    for r in range(rounds):
        for label in list(commands) if r % 2 == 0 else list(commands)[::-1]:
            output = work / f"e2e-{label.split()[0]}-{r}"
            seconds[label].append(timed_process(commands[label](output), work / f"{output.name}.log", cwd=str(ROOT))[0])
            logger.info(
                "%s, round %d: %d images in %.1fs, %.2f images/s (load %s)",
                label,
                r + 1,
                count,
                seconds[label][-1],
                count / seconds[label][-1],
                load_average(),
            )
            if label == "this job":
                seconds["job's embedding stage"].append(latest_run(str(output), Storage())["images_per_second"])
    return seconds


# ---------------------------------------------------------------- report


def print_per_core(
    times: dict[str, dict[str, float]], files: dict[str, list[Path]], memory: dict[str, float] | None
) -> None:
    print(
        f"\n{'kind':18} {'n':>3} "
        + " ".join(f"{m + ' ms':>16}" for m in METHODS)
        + f" {'exact vs plain':>14} {'fast vs plain':>13}"
    )
    totals = {method: 0.0 for method in METHODS}
    for kind, row in times.items():
        n = len(files[kind])
        for method in METHODS:
            totals[method] += row[method] * n
        print(
            f"{kind:18} {n:3} "
            + " ".join(f"{1e3 * row[m]:16.1f}" for m in METHODS)
            + f" {row['plain recipe'] / row['exact']:13.2f}x {row['plain recipe'] / row['fast']:12.2f}x"
        )
    n = sum(len(v) for v in files.values())
    print(
        f"{'whole set':18} {n:3} "
        + " ".join(f"{1e3 * totals[m] / n:16.1f}" for m in METHODS)
        + f" {totals['plain recipe'] / totals['exact']:13.2f}x {totals['plain recipe'] / totals['fast']:12.2f}x"
    )
    if memory:
        print(f"{'peak RSS, MB':18} {'':3} " + " ".join(f"{memory[m]:16.0f}" for m in METHODS))


def print_cosines(name: str, result: dict[str, dict[str, tuple[float, float]]]) -> None:
    print(f"\ncosine to the exact mode, {name}: {'kind':18} {'plain min':>10} {'mean':>9} {'fast min':>10} {'mean':>9}")
    for kind, row in result.items():
        (pmin, pmean), (fmin, fmean) = row["plain recipe"], row["fast"]
        print(f"{'':>{len(name) + 28}}{kind:18} {pmin:10.6f} {pmean:9.6f} {fmin:10.6f} {fmean:9.6f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--photos", action="append", default=[], help="glob of photographs (repeatable); default: scikit-image's"
    )
    parser.add_argument("--limit", type=int, default=None, help="at most this many photographs")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds; each image's median counts")
    parser.add_argument(
        "--model", action="append", default=[], help="a checkpoint to compare embeddings with too (repeatable)"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--end-to-end", type=int, default=0, help="images for the whole-process comparison (0: none)")
    parser.add_argument("--e2e-model", choices=sorted(E2E_MODELS), default="vit-s", help="its encoder geometry")
    parser.add_argument("--e2e-rounds", type=int, default=2, help="alternating rounds of the two processes")
    parser.add_argument("--e2e-decode", choices=("fast", "exact"), default="fast", help="the job's --decode")
    parser.add_argument("--e2e-dtype", default="auto", help="the job's --infer.dtype (the plain recipe: float32)")
    parser.add_argument("--e2e-job-only", action="store_true", help="run the job alone, against the model stage alone")
    parser.add_argument("--end-to-end-only", action="store_true", help="skip the per-core times, memory and cosines")
    parser.add_argument(
        "--workdir", default=None, help="where the files go, kept for the next run (default: a temporary folder)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        files = make_set(args.photos, Path(args.workdir or tmp) / "set", args.limit)
        times = memory = None
        cosine: dict[str, dict] = {}
        if not args.end_to_end_only:
            model, processor = base_model()
            times = time_methods(files, processor, args.rounds)
            memory = None if args.no_memory else peak_memory(files, processor)
            cosine["ViT-B/16 at a trained model's scale"] = cosines(files, model, processor)
            for path in args.model:
                cosine[path] = cosines(files, *checkpoint(path))
        e2e = alone = None
        if args.end_to_end:
            inputs = e2e_inputs(files, work / "e2e-inputs", args.end_to_end)
            ckpt = save_checkpoint(work / "e2e-model", E2E_MODELS[args.e2e_model], trained_scale=True)
            e2e = end_to_end(
                inputs, ckpt, work, args.e2e_rounds, args.e2e_decode, not args.e2e_job_only, args.e2e_dtype
            )
            alone = model_alone(inputs, ckpt, 32, min(args.end_to_end, 128))
        print(f"\n{hardware()}; load {load_average()}")
        if times:
            print(
                f"per core: CPU ms per image to uint8 224x224 (MAE's processor), median of {args.rounds} interleaved "
                "rounds; libvips on one thread"
            )
            print_per_core(times, files, memory)
        for name, result in cosine.items():
            print_cosines(name, result)
        if e2e:
            n = args.end_to_end
            job, stage = statistics.median(e2e["this job"]), statistics.median(e2e["job's embedding stage"])
            print(
                f"\nend to end, whole processes, {n} images of the mixed set, {args.e2e_model} encoder, "
                "job decode.mode "
                f"{args.e2e_decode}: this job {job:.1f}s ({n / job:.2f} images/s; its embedding stage {stage:.2f} "
                "images/s)"
            )
            if "plain recipe" in e2e:
                plain = statistics.median(e2e["plain recipe"])
                print(
                    f"  plain recipe {plain:.1f}s ({n / plain:.2f} images/s): {plain / job:.2f}x; per round: "
                    + ", ".join(f"{p / j:.2f}x" for j, p in zip(e2e["this job"], e2e["plain recipe"]))
                )
            best = max(v for k, v in alone.items() if k.startswith("model"))
            print(
                "  stages alone (no Ray): "
                + ", ".join(f"{k} {v:.2f} images/s" for k, v in alone.items())
                + f"; of the faster model alone, the job end to end is {100 * n / job / best:.0f} %, its embedding "
                f"stage {100 * stage / best:.0f} %"
            )


if __name__ == "__main__":
    main()
