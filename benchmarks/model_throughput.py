"""vitmae against transformers: images/s for embeddings (mask ratio 0) and loss scoring (mask ratio 0.75).

Both models get the same random ViT-B/16 weights (through one saved checkpoint), the same batch and
dtype; timings alternate between the models in rounds and the median round is reported.

    python -m benchmarks.model_throughput --batch-size 8 --rounds 5
    python -m benchmarks.model_throughput --device cuda --dtypes bf16 --batch-size 256,1024 --iters 10 --compile both
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
import transformers

import vitmae
from benchmarks.common import device_hardware
from vitmae.checkpoint import parse_dtype

logger = logging.getLogger("model_throughput")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_call(fn: Callable[[], object], iters: int, device: str) -> float:
    """Seconds per call, after one untimed call."""
    fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iters


def build(task: str, folder: str, dtype: torch.dtype, device: str):
    """(transformers model, vitmae model) for 'embed' (encoder, mask 0) or 'loss' (encoder+decoder, mask 0.75)."""
    if task == "embed":
        ref = transformers.ViTMAEModel.from_pretrained(folder, mask_ratio=0.0, attn_implementation="sdpa", dtype=dtype)
        ours = vitmae.ViTMAEModel.from_pretrained(folder, dtype=dtype)
    else:
        ref = transformers.ViTMAEForPreTraining.from_pretrained(folder, attn_implementation="sdpa", dtype=dtype)
        ours = vitmae.ViTMAEForPreTraining.from_pretrained(folder, dtype=dtype)
    return ref.to(device).eval(), ours.to(device).eval()


def calls_for(
    task: str, ref, ours, pixels: torch.Tensor, noise: torch.Tensor, compile_models: str
) -> dict[str, Callable[[], object]]:
    """The timed calls of one task: each library, and under torch.compile those `compile_models` names."""
    kwargs = {"mask_ratio": 0.0} if task == "embed" else {"noise": noise}
    ref_kwargs = {} if task == "embed" else {"noise": noise}
    calls = {"transformers": lambda: ref(pixels, **ref_kwargs), "vitmae": lambda: ours(pixels, **kwargs)}
    # dynamic=True, as the actor compiles: one graph for every batch size
    if compile_models == "both":
        ref_compiled = torch.compile(ref, dynamic=True)
        calls["transformers compiled"] = lambda: ref_compiled(pixels, **ref_kwargs)
    if compile_models in ("vitmae", "both"):
        ours_compiled = torch.compile(ours, dynamic=True)
        calls["vitmae compiled"] = lambda: ours_compiled(pixels, **kwargs)
    return calls


def run(args: argparse.Namespace) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        transformers.ViTMAEForPreTraining(transformers.ViTMAEConfig()).save_pretrained(folder)
        for dtype_name in args.dtypes.split(","):
            dtype = parse_dtype(dtype_name)
            sizes = args.batch_size if dtype == torch.float32 or args.device != "cpu" else args.half_batch_size
            for batch in (int(size) for size in sizes.split(",")):
                pixels = torch.randn(batch, 3, 224, 224, device=args.device, dtype=dtype)
                noise = torch.rand(batch, 196, device=args.device)
                for task in args.tasks.split(","):
                    ref, ours = build(task, folder, dtype, args.device)
                    calls = calls_for(task, ref, ours, pixels, noise, args.compile)
                    seconds = {name: [] for name in calls}
                    with torch.inference_mode():
                        for name, fn in calls.items():  # warm-up (and compilation) outside the timed rounds
                            start = time.perf_counter()
                            fn()
                            sync(args.device)
                            logger.info(
                                "%s %s %d %s: first call %.1f s",
                                task,
                                dtype_name,
                                batch,
                                name,
                                time.perf_counter() - start,
                            )
                        for _ in range(args.rounds):
                            for name, fn in calls.items():
                                seconds[name].append(time_call(fn, args.iters, args.device))
                    base = statistics.median(seconds["transformers"])
                    for name, values in seconds.items():
                        median = statistics.median(values)
                        rows.append(
                            {
                                "task": task,
                                "dtype": dtype_name,
                                "batch": batch,
                                "model": name,
                                "images_per_s": batch / median,
                                "ratio": base / median,
                            }
                        )
                        logger.info(
                            "%s %s %d %s: %.1f images/s (%.2fx)",
                            task,
                            dtype_name,
                            batch,
                            name,
                            batch / median,
                            base / median,
                        )
                    del ref, ours, calls
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, bf16, fp16")
    parser.add_argument("--tasks", default="embed,loss", help="embed (mask ratio 0), loss (mask ratio 0.75)")
    parser.add_argument("--batch-size", default="8", help="comma-separated batch sizes")
    parser.add_argument("--half-batch-size", default="2", help="batch sizes for bf16/fp16 on the CPU (slow there)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=2, help="calls per timed round")
    parser.add_argument(
        "--compile", choices=("none", "vitmae", "both"), default="none", help="also time these under torch.compile"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.compile != "none" and args.device == "cpu":
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # fold weights into oneDNN-packed linears, as for CPU inference
    rows = run(args)
    print(f"\nViT-B/16 at 224, random weights; {device_hardware(args.device)}")
    print(f"{'task':6} {'dtype':5} {'batch':>5} {'model':21} {'images/s':>9} {'vs transformers':>15}")
    for r in rows:
        print(
            f"{r['task']:6} {r['dtype']:5} {r['batch']:>5} {r['model']:21} {r['images_per_s']:9.1f} {r['ratio']:14.2f}x"
        )


if __name__ == "__main__":
    main()
