"""`python -m jobs.reconstruct`: draw an MAE model's reconstructions of a few images (original, masked, predicted) as one PNG."""

from __future__ import annotations

import argparse
import sys

from jobs.errors import run_cli
from pipeline.storage import Storage
from pipeline.train.reconstruct import save_reconstructions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="MAE checkpoint with its decoder and preprocessor_config.json: folder, s3:// or hub id")
    parser.add_argument("--image", required=True, action="append", help="an image, local path or URI; repeat for more rows")
    parser.add_argument("--png", required=True, help="the PNG to write, local path or URI")
    parser.add_argument("--mask-ratio", type=float, default=0.75, help="fraction of patches masked, in (0, 1) (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="with each image's path, fixes its mask (default %(default)s)")
    parser.add_argument("--s3-endpoint", default=None, help="S3 endpoint URL (default: $AWS_ENDPOINT_URL)")


def main_with_args(args: argparse.Namespace) -> None:
    if not 0 < args.mask_ratio < 1:
        raise ValueError(f"--mask-ratio must be in (0, 1), got {args.mask_ratio}")
    storage = Storage.from_environment(args.s3_endpoint)
    save_reconstructions(args.model, args.image, args.png, args.mask_ratio, args.seed, storage)
    print(f"wrote the reconstructions of {len(args.image)} images to {args.png}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vitmae reconstruct", description=__doc__)
    add_arguments(parser)
    return run_cli(parser, main_with_args, argv)


if __name__ == "__main__":
    sys.exit(main())
