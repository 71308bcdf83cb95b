"""`python -m jobs.duplicates`: group a run's near-duplicate images (cosine >= --threshold); write RUN/duplicates.parquet."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from jobs.errors import run_cli
from pipeline.layout import DUPLICATES_FILE
from pipeline.render import duplicate_tiles, render_groups, save_png
from pipeline.retrieval.duplicates import REPRESENTATIVE_RULE, DuplicateConfig, find_duplicates, groups_of
from pipeline.storage import Storage

logger = logging.getLogger("jobs.duplicates")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run folder with a cosine index, local or s3://")
    parser.add_argument("--threshold", type=float, default=DuplicateConfig.threshold,
                        help="cosine similarity at or above which two images are near-duplicates, in (0, 1] (default %(default)s)")
    parser.add_argument("--top", type=int, default=20, help="largest groups to print and draw (every group is written to duplicates.parquet)")
    parser.add_argument("--json", action="store_true", help="print only a JSON array of the largest groups")
    parser.add_argument("--png", default=None, help="also write a contact sheet of the largest groups, one per row, to this PNG file")
    parser.add_argument("--s3-endpoint", default=None, help="S3 endpoint URL (default: $AWS_ENDPOINT_URL)")


def main_with_args(args: argparse.Namespace) -> None:
    if args.top < 1:
        raise ValueError(f"--top must be at least 1, got {args.top}")
    config = DuplicateConfig(run=args.run, threshold=args.threshold)
    storage = Storage.from_environment(args.s3_endpoint)
    table = find_duplicates(config, storage)
    groups = groups_of(table, args.top)
    if args.json:
        print(json.dumps(groups))
    else:
        count = len(set(table.column("group").to_pylist()))
        images = int(table.schema.metadata[b"duplicates.images"])
        print(f"{count} group{'' if count == 1 else 's'} of near-duplicates ({table.num_rows} images) at cosine >= {args.threshold:g} among {images} images "
              f"(all in {args.run.rstrip('/')}/{DUPLICATES_FILE}); each group's first image is the one to keep: {REPRESENTATIVE_RULE}")
        if groups:
            print(f"{'group':>5}  {'size':>4}  {'cosine':>6}  path")
        for group in groups:
            for i, member in enumerate(group["members"]):
                head = f"{group['group']:>5}  {group['size']:>4}" if i == 0 else " " * 11
                note = "  (same bytes)" if member["identical"] else ""
                print(f"{head}  {member['similarity']:>6.4f}  {member['path']}{note}")
    if args.png:
        if not groups:
            logger.info("no groups of near-duplicates: no contact sheet written to %s", args.png)
            return
        save_png(render_groups(duplicate_tiles(groups, storage)), args.png, storage)
        logger.info("contact sheet: %s", args.png)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vitmae duplicates", description=__doc__)
    add_arguments(parser)
    return run_cli(parser, main_with_args, argv)


if __name__ == "__main__":
    sys.exit(main())
