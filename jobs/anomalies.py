"""`vitmae anomalies`: rank a run's images by reconstruction loss, kNN distance or both; write RUN/anomalies.parquet."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, replace

from jobs.command import Command, main
from jobs.options import Report
from pipeline import schema
from pipeline.layout import ANOMALIES_FILE, output_uri
from pipeline.render import anomaly_tiles, render, save_png
from pipeline.retrieval.anomalies import AnomalyConfig, rank_anomalies
from pipeline.retrieval.vectors import has_patch_loss, open_embeddings, patch_losses
from pipeline.storage import Storage
from vitmae.errors import InvalidInput

logger = logging.getLogger("jobs.anomalies")


@dataclass(frozen=True)
class AnomaliesSettings(Report, AnomalyConfig):
    """One anomaly ranking, its top printed."""

    top: int = 50
    """rows to print and draw (every image is written to anomalies.parquet); the kNN ranking is exact at least this
    far, unless exact_top is 0"""
    heatmaps: bool = True
    """on the --png sheet, draw each image's per-patch loss over it (blue: its lowest, red: its highest), where the
    run kept one (embedded with --infer.patch_loss true)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.top < 1:
            raise InvalidInput(f"top must be at least 1, got {self.top}")


def rank(settings: AnomaliesSettings) -> None:
    """Ranks, and prints the top rows (JSON: an array of them, every column of anomalies.parquet)."""
    storage = Storage.from_config(settings.storage)
    exact_top = max(settings.exact_top, settings.top) if settings.exact_top else 0
    table = rank_anomalies(replace(settings, exact_top=exact_top), storage)
    by = table.schema.metadata[schema.ANOMALIES_BY].decode()
    rows = table.slice(0, settings.top).to_pylist()
    top = [{key: schema.nan_to_none(value) for key, value in row.items()} for row in rows]
    if settings.json:
        print(json.dumps(top))
    else:
        chosen = f"{by} (auto)" if settings.by == "auto" else by
        print(
            f"top {len(top)} of {table.num_rows} images by {chosen} (all in {output_uri(settings.run, ANOMALIES_FILE)})"
        )
        exact = int(table.schema.metadata[schema.ANOMALIES_KNN_EXACT])
        if table.column(schema.KNN_DISTANCE).null_count < table.num_rows:
            print(
                f"kNN distances: {exact:,} of {table.num_rows:,} exact, the kNN ranking's top "
                f"{min(exact_top, table.num_rows):,} among them (~: from the approximate index)"
            )
        print(f"{'rank':>4}  {'loss':>9}  {'knn dist':>10}  path")
        for row in top:
            knn = _show(row[schema.KNN_DISTANCE], ".5f") + ("~" if row[schema.KNN_EXACT] is False else " ")
            rank, loss = _show(row[schema.RANK], "d"), _show(row[schema.LOSS], ".5f")
            print(f"{rank:>4}  {loss:>9}  {knn:>10}  {row[schema.PATH]}")
    if settings.png:
        save_png(render(anomaly_tiles(top, storage, _heatmaps(settings, top, storage))), settings.png, storage)
        logger.info("contact sheet: %s", settings.png)


def _heatmaps(settings: AnomaliesSettings, top: list[dict], storage: Storage) -> dict:
    """path -> float32 [L] per-patch loss of the rows drawn, where the sheet shows heatmaps."""
    if not settings.heatmaps:
        return {}
    embeddings = open_embeddings(settings.run, storage)
    if not has_patch_loss(embeddings):
        logger.info(
            "no heatmaps on the sheet: %s kept no per-patch loss (--infer.patch_loss true keeps it)", settings.run
        )
        return {}
    return patch_losses(embeddings, [row[schema.PATH] for row in top])


def _show(value: object, spec: str) -> str:
    return "-" if value is None else format(value, spec)


COMMAND = Command("anomalies", AnomaliesSettings, rank, __doc__)

if __name__ == "__main__":
    sys.exit(main(COMMAND))
