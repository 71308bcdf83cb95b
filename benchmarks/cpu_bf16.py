"""bfloat16 against float32 on this machine's CPU: the embedding job's model stage (`Embedder`, as a CPU actor runs
it, no Ray) on real photographs, ViT-S and ViT-B/16 geometry with weights at a trained model's scale; images/s of
each, alternating rounds, and the bf16 embeddings' and losses' distance to float32's.

    python -m benchmarks.cpu_bf16 --threads 2 --rounds 3
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.common import add_stage_arguments, compare_stages, hardware, stage_checkpoints
from pipeline import schema
from pipeline.embed.infer import InferConfig, cpu_flags

FEATURES = {"avx512_bf16", "amx_bf16", "amx_tile", "avx512f"}  # the CPU features printed with the figures


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(parser)
    args = parser.parse_args()
    features = ", ".join(sorted(cpu_flags() & FEATURES)) or "none"
    print(f"{hardware()}; CPU features: {features}; {args.threads} torch threads, batch {args.batch_size}")
    print("| model | task | float32 images/s | bf16 images/s | **bf16 vs float32** | cosine min | mean | loss error |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, model in stage_checkpoints(args):
        for task, ratio in (("embeddings", 0.0), ("with loss (K=4)", 0.75)):
            outs, rate = compare_stages(
                model, {dtype: InferConfig(ratio, dtype=dtype) for dtype in ("float32", "bfloat16")}, args
            )
            cos = cosines(outs["float32"][schema.EMBEDDING], outs["bfloat16"][schema.EMBEDDING])
            loss = ""
            if ratio:
                f32, b16 = outs["float32"][schema.LOSS], outs["bfloat16"][schema.LOSS]
                loss = f"{np.max(np.abs(b16 - f32) / f32):.2e}"
            print(
                f"| {name} | {task} | {rate['float32']:.2f} | {rate['bfloat16']:.2f} | "
                f"**{rate['bfloat16'] / rate['float32']:.2f}x** | {cos.min():.6f} | {cos.mean():.6f} | {loss} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
