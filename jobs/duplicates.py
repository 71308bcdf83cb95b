"""`vitmae duplicates`: group a run's near-duplicate images (cosine >= threshold); write RUN/duplicates.parquet. With
--against OTHER: list the images of the run that near-duplicate images of OTHER; write RUN/leaks.parquet."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobs.command import Command, main
from jobs.options import Report
from pipeline import schema
from pipeline.layout import DUPLICATES_FILE, LEAKS_FILE, output_uri
from pipeline.render import duplicate_tiles, render_groups, save_png, short_name
from pipeline.retrieval.duplicates import REPRESENTATIVE_RULE, DuplicateConfig, find_duplicates, groups_of
from pipeline.retrieval.leaks import find_leaks
from pipeline.storage import Storage
from vitmae.errors import InvalidInput

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger("jobs.duplicates")


@dataclass(frozen=True)
class DuplicatesSettings(Report, DuplicateConfig):
    """One search for near-duplicates, its largest groups printed."""

    top: int = 20
    """largest groups to print and draw (every group is written to duplicates.parquet, or leaks.parquet)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.top < 1:
            raise InvalidInput(f"top must be at least 1, got {self.top}")


def group(settings: DuplicatesSettings) -> None:
    """Groups, and prints the largest groups (JSON: an array of them, members with their similarity; and their run,
    with --against)."""
    storage = Storage.from_config(settings.storage)
    table = find_leaks(settings, storage) if settings.against else find_duplicates(settings, storage)
    groups = groups_of(table, settings.top)
    if settings.json:
        print(json.dumps(groups))
    else:
        print(_headline(settings, table))
        if groups:
            print(f"{'group':>5}  {'size':>4}  {'cosine':>6}  path")
        for found in groups:
            for i, member in enumerate(found["members"]):
                head = f"{found['group']:>5}  {found['size']:>4}" if i == 0 else " " * 11
                note = "  (same bytes)" if member["identical"] else ""
                print(f"{head}  {member['similarity']:>6.4f}  {member['path']}{note}")
    if settings.png:
        if not groups:
            logger.info("no groups of near-duplicates: no contact sheet written to %s", settings.png)
            return
        role = f"in {short_name(settings.against)}" if settings.against else "keep"
        save_png(render_groups(duplicate_tiles(groups, storage, role=role)), settings.png, storage)
        logger.info("contact sheet: %s", settings.png)


def _headline(settings: DuplicatesSettings, table: pa.Table) -> str:
    groups = len(set(table.column(schema.GROUP).to_pylist()))
    images = int(table.schema.metadata[schema.DUPLICATES_IMAGES])
    if settings.against:
        leaked = table.column(schema.SOURCE_RUN).to_pylist().count(settings.run)
        return (
            f"{leaked} of {images} images of {settings.run} near-duplicate {table.num_rows - leaked} images of "
            f"{settings.against} at cosine >= {settings.threshold:g} (all in {output_uri(settings.run, LEAKS_FILE)}); "
            f"each group's first image is the one of {settings.against}, then the images of {settings.run} "
            "that match it best"
        )
    return (
        f"{groups} group{'' if groups == 1 else 's'} of near-duplicates ({table.num_rows} images) "
        f"at cosine >= {settings.threshold:g} among {images} images "
        f"(all in {output_uri(settings.run, DUPLICATES_FILE)}); each group's first image is the one "
        f"to keep: {REPRESENTATIVE_RULE}"
    )


COMMAND = Command("duplicates", DuplicatesSettings, group, __doc__)

if __name__ == "__main__":
    sys.exit(main(COMMAND))
