"""`vitmae index`: bring the FAISS index of a run up to its embeddings table, under RUN/index/."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from jobs.command import Command, main
from pipeline.layout import INDEX_DIR, output_uri
from pipeline.retrieval.index import IndexConfig, build_index
from pipeline.retrieval.index_update import update_index
from pipeline.storage import RunLocation, Storage


@dataclass(frozen=True)
class IndexSettings(RunLocation):
    """One run's index, updated or built anew."""

    index: IndexConfig = IndexConfig()
    rebuild: bool = False
    """build it anew even where it could be updated"""


def index(settings: IndexSettings) -> None:
    """Updates (or rebuilds) the index and prints what it holds and why it is of its type."""
    storage = Storage.from_config(settings.storage)
    info = (build_index if settings.rebuild else update_index)(settings.run, settings.index, storage)
    recall = info["recall"]
    update = info["updates"][-1] if info.get("updates") else None
    if update and update["table_version"] == info["table_version"]:
        print(f"updated the {info['index_type']} index: {update['added']} added, {update['removed']} removed")
    print(
        f"{info['index_type']} index ({info['factory']}, {info['metric']}) of {info['count']} x {info['dimension']}-d "
        f"vectors at table version {info['table_version']} (built in {info['build_seconds']:.1f}s); "
        f"recall@{recall['k']} {recall['value']:.3f} with {info['search_params'] or 'exact search'}; "
        f"in {output_uri(settings.run, INDEX_DIR)}/"
    )
    print(f"why: {info['reason']}")


COMMAND = Command("index", IndexSettings, index, __doc__)

if __name__ == "__main__":
    sys.exit(main(COMMAND))
