"""`vitmae search`: the k nearest images of a query image (image) or of an indexed one (path)."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass

from jobs.command import Command, main
from jobs.options import Report
from pipeline.embed.query import QueryEmbedder, search_image
from pipeline.render import render, save_png, search_tiles
from pipeline.retrieval.search import Searcher
from pipeline.storage import RunLocation, Storage
from vitmae.errors import InvalidInput

logger = logging.getLogger("jobs.search")


@dataclass(frozen=True)
class SearchSettings(Report, RunLocation):
    """One query against a run's index."""

    image: str | None = None
    """a query image, local path or URI, embedded with the run's model, processor and pooling (or give path)"""
    path: str | None = None
    """an indexed image, by its path as stored (or a local file path) (or give image)"""
    k: int = 10
    """neighbours to return"""

    def __post_init__(self) -> None:
        if (self.image is None) == (self.path is None):
            raise InvalidInput("give exactly one of image (a query image) and path (an indexed one)")
        if self.k < 1:
            raise InvalidInput(f"k must be at least 1, got {self.k}")


def search(settings: SearchSettings) -> None:
    """Prints the neighbours (JSON: an array of {"rank", "path", "score"}) and draws them with `png`."""
    storage = Storage.from_config(settings.storage)
    searcher = Searcher(settings.run, storage)
    if settings.image is not None:
        query = settings.image
        hits = search_image(searcher, QueryEmbedder(settings.run, storage), settings.image, settings.k)
    else:
        query = searcher.resolve_path(settings.path)
        hits = searcher.search_path(query, settings.k)
    if settings.json:
        print(json.dumps([{"rank": h.rank, "path": h.path, "score": round(h.score, 6)} for h in hits]))
    else:
        label = "cosine" if searcher.loaded.metric == "cosine" else "L2 dist"
        print(
            f"{len(hits)} nearest of {query} among {searcher.count} images ({searcher.loaded.info['index_type']} index)"
        )
        print(f"{'rank':>4}  {label:>8}  path")
        for hit in hits:
            print(f"{hit.rank:>4}  {hit.score:>8.4f}  {hit.path}")
    if settings.png:
        save_png(render(search_tiles(query, hits, storage)), settings.png, storage)
        logger.info("contact sheet: %s", settings.png)


COMMAND = Command("search", SearchSettings, search, __doc__)

if __name__ == "__main__":
    sys.exit(main(COMMAND))
