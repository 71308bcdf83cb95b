"""`python -m jobs.search`: the k nearest images of a query image (--image) or of an indexed one (--path)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from jobs.errors import run_cli
from pipeline.embed.query import QueryEmbedder, search_image
from pipeline.render import render, save_png, search_tiles
from pipeline.retrieval.search import Searcher
from pipeline.storage import Storage

logger = logging.getLogger("jobs.search")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run folder with an index, local or s3://")
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--image", help="query image, local path or URI: embedded with the run's model, pooling and processor")
    query.add_argument("--path", help="an indexed image, by its path as stored (or a local file path)")
    parser.add_argument("-k", "--k", type=int, default=10, help="neighbours to return (default %(default)s)")
    parser.add_argument("--json", action="store_true", help='print only a JSON array of {"rank", "path", "score"}')
    parser.add_argument("--png", default=None, help="also write a contact sheet (query and neighbours) to this PNG file")
    parser.add_argument("--s3-endpoint", default=None, help="S3 endpoint URL (default: $AWS_ENDPOINT_URL)")


def main_with_args(args: argparse.Namespace) -> None:
    if args.k < 1:
        raise ValueError(f"-k must be at least 1, got {args.k}")
    storage = Storage.from_environment(args.s3_endpoint)
    searcher = Searcher(args.run, storage)
    if args.image is not None:
        query = args.image
        hits = search_image(searcher, QueryEmbedder(args.run, storage), args.image, args.k)
    else:
        query = searcher.resolve_path(args.path)
        hits = searcher.search_path(query, args.k)
    if args.json:
        print(json.dumps([{"rank": h.rank, "path": h.path, "score": round(h.score, 6)} for h in hits]))
    else:
        label = "cosine" if searcher.loaded.metric == "cosine" else "L2 dist"
        print(f"{len(hits)} nearest of {query} among {searcher.count} images ({searcher.loaded.info['index_type']} index)")
        print(f"{'rank':>4}  {label:>8}  path")
        for hit in hits:
            print(f"{hit.rank:>4}  {hit.score:>8.4f}  {hit.path}")
    if args.png:
        save_png(render(search_tiles(query, hits, storage)), args.png, storage)
        logger.info("contact sheet: %s", args.png)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vitmae search", description=__doc__)
    add_arguments(parser)
    return run_cli(parser, main_with_args, argv)


if __name__ == "__main__":
    sys.exit(main())
