"""`python -m jobs.embed`: bring the Delta tables under --output up to date with the images under --input: embed
what is new or changed, remove what is gone, keep the index current."""

from __future__ import annotations

import argparse
import sys

from jobs.errors import run_cli
from jobs.index import add_index_arguments, index_config
from pipeline.embed.decode import DECODE_MODES, DecodeConfig
from pipeline.embed.infer import POOLINGS, InferConfig
from pipeline.embed.listing import DEFAULT_EXTENSIONS
from pipeline.embed.run import EmbedConfig, run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="folder, prefix or glob of images, local or s3://")
    source.add_argument("--input-list", help="a file listing the images instead: Parquet with a path column (an S3 "
                        "Inventory report, say), or text with one URI a line; local or s3://")
    parser.add_argument("--output", required=True, help="the output folder (Delta tables and index), local or s3://; "
                        "every run updates it")
    parser.add_argument("--model", required=True, help="checkpoint folder, URI or hub id (config.json, model.safetensors, preprocessor_config.json)")
    parser.add_argument("--mask-ratio", type=float, default=0.0, help="0: embeddings only; >0: also per-image reconstruction loss (e.g. 0.75)")
    parser.add_argument("--loss-samples", type=int, default=InferConfig.loss_samples,
                        help="masks averaged per image for the loss (default %(default)s: at 0.75, every patch once)")
    parser.add_argument("--seed", type=int, default=0, help="with each path, fixes that image's masks")
    parser.add_argument("--pooling", choices=POOLINGS, default="mean", help="mean of patch tokens, or the class token")
    parser.add_argument("--batch-size", type=int, default=None, help="images per model call (default: 256 on GPUs, 8 on CPUs)")
    parser.add_argument("--dtype", default="auto", help="auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16, float16")
    parser.add_argument("--num-gpus", type=int, default=None, help="model actors with one GPU each (default: all GPUs of the cluster)")
    parser.add_argument("--num-actors", type=int, default=None,
                        help="model actors when there are no GPUs (default: one per CPU, as many as half the memory holds)")
    parser.add_argument("--cpu-threads", type=int, default=None,
                        help="torch threads per model actor when there are no GPUs (default: the cluster's CPUs / --num-actors)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model in each actor (on GPUs more images/s for a longer start-up; see the README)")
    parser.add_argument("--dashboard", action="store_true", help="start Ray's dashboard with the job's own local Ray")
    parser.add_argument("--s3-endpoint", default=None, help="S3 endpoint URL (default: $AWS_ENDPOINT_URL)")
    parser.add_argument("--extensions", default=",".join(DEFAULT_EXTENSIONS), help="comma-separated file extensions to embed")
    parser.add_argument("--max-pixels", type=int, default=DecodeConfig.max_pixels, help="refuse larger images (decompression bombs)")
    parser.add_argument("--decode", choices=DECODE_MODES, default=DecodeConfig.mode,
                        help="fast: decode at a reduced scale first (embeddings within cosine 0.9999 of exact); "
                        "exact: transformers' pixels, for 2.4 times the CPU (see the README)")
    parser.add_argument("--overwrite", action="store_true", help="start new tables in --output instead of updating them")
    parser.add_argument("--retry-errors", action="store_true", help="embed again the unchanged images that failed before")
    parser.add_argument("--keep-missing", action="store_true", help="keep the rows of images that are no longer listed")
    parser.add_argument("--commit-rows", type=int, default=EmbedConfig.commit_rows,
                        help="commit when this many rows are written... (default %(default)s)")
    parser.add_argument("--commit-seconds", type=float, default=EmbedConfig.commit_seconds,
                        help="...or this long after the last commit (default %(default)s)")
    parser.add_argument("--vacuum-hours", type=float, default=EmbedConfig.vacuum_hours,
                        help="delete files that no table version of the last this-many hours needs (default %(default)s, "
                        "Delta's 7 days; keep it above your longest run and reader)")
    parser.add_argument("--retry-seconds", type=float, default=EmbedConfig.retry_seconds,
                        help="once the run has started, wait out a storage outage this long (default %(default)s)")
    parser.add_argument("--no-index", action="store_true", help="do not build the FAISS index (vitmae index builds it later)")
    add_index_arguments(parser)


def config_from_args(args: argparse.Namespace) -> EmbedConfig:
    infer = InferConfig(mask_ratio=args.mask_ratio, loss_samples=args.loss_samples, seed=args.seed, pooling=args.pooling,
                        dtype=args.dtype, compile=args.compile)
    return EmbedConfig(
        input=args.input, input_list=args.input_list, output=args.output, model=args.model, infer=infer,
        decode=DecodeConfig(max_pixels=args.max_pixels, mode=args.decode), index=None if args.no_index else index_config(args),
        batch_size=args.batch_size, num_gpus=args.num_gpus, num_actors=args.num_actors, cpu_threads=args.cpu_threads,
        dashboard=args.dashboard, s3_endpoint=args.s3_endpoint, extensions=extensions(args.extensions),
        overwrite=args.overwrite, retry_errors=args.retry_errors, keep_missing=args.keep_missing,
        commit_rows=args.commit_rows, commit_seconds=args.commit_seconds, vacuum_hours=args.vacuum_hours,
        retry_seconds=args.retry_seconds,
    )


def extensions(flag: str) -> tuple[str, ...]:
    """--extensions jpg,png -> ("jpg", "png")."""
    return tuple(e.strip() for e in flag.split(",") if e.strip())


def main_with_args(args: argparse.Namespace) -> None:
    record = run(config_from_args(args))
    print(summary(record))


def summary(record: dict) -> str:
    """What a run found and did, in two lines."""
    counts = record["counts"]
    found = (f"listed {counts['listed']}: {counts['new']} new, {counts['changed']} changed, {counts['unchanged']} unchanged, "
             f"{counts['removed']} gone, {counts['failed_before']} failed before ({counts['retried']} retried)")
    versions = record["versions"]
    speed = f", {record['images_per_second']:.1f} images/s" if record.get("images_per_second") else ""
    did = (f"embedded {counts.get('embedded', 0)}, failed {counts.get('failed', 0)} in {record['seconds']:.1f}s{speed}; "
           f"committed embeddings version {versions['embeddings']} and errors version {versions['errors']} of {record['output']}")
    return f"{found}\n{did}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vitmae embed", description=__doc__)
    add_arguments(parser)
    return run_cli(parser, main_with_args, argv)


if __name__ == "__main__":
    sys.exit(main())
