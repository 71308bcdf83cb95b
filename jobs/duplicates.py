"""`vitmae duplicates`: group a run's near-duplicate images (cosine >= threshold); write RUN/duplicates.parquet."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass

from jobs.command import Command, main
from jobs.options import Report
from pipeline import schema
from pipeline.layout import DUPLICATES_FILE, output_uri
from pipeline.render import duplicate_tiles, render_groups, save_png
from pipeline.retrieval.duplicates import REPRESENTATIVE_RULE, DuplicateConfig, find_duplicates, groups_of
from pipeline.storage import Storage
from vitmae.errors import InvalidInput

logger = logging.getLogger("jobs.duplicates")


@dataclass(frozen=True)
class DuplicatesSettings(Report, DuplicateConfig):
    """One search for near-duplicates, its largest groups printed."""

    top: int = 20
    """largest groups to print and draw (every group is written to duplicates.parquet)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.top < 1:
            raise InvalidInput(f"top must be at least 1, got {self.top}")


def group(settings: DuplicatesSettings) -> None:
    """Groups, and prints the largest groups (JSON: an array of them, members with their similarity)."""
    storage = Storage.from_config(settings.storage)
    table = find_duplicates(settings, storage)
    groups = groups_of(table, settings.top)
    if settings.json:
        print(json.dumps(groups))
    else:
        count = len(set(table.column(schema.GROUP).to_pylist()))
        images = int(table.schema.metadata[schema.DUPLICATES_IMAGES])
        print(
            f"{count} group{'' if count == 1 else 's'} of near-duplicates ({table.num_rows} images) "
            f"at cosine >= {settings.threshold:g} among {images} images "
            f"(all in {output_uri(settings.run, DUPLICATES_FILE)}); each group's first image is the one "
            f"to keep: {REPRESENTATIVE_RULE}"
        )
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
        save_png(render_groups(duplicate_tiles(groups, storage)), settings.png, storage)
        logger.info("contact sheet: %s", settings.png)


COMMAND = Command("duplicates", DuplicatesSettings, group, __doc__)

if __name__ == "__main__":
    sys.exit(main(COMMAND))
