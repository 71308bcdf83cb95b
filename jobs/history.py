"""`vitmae history`: the runs that updated an output folder: when, with what, what they found and committed."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from jobs.command import Command, main
from jobs.options import JsonOutput
from pipeline.records import finished_runs, unfinished_runs
from pipeline.storage import RunLocation, Storage
from vitmae.errors import InvalidInput, NotFound


@dataclass(frozen=True)
class HistorySettings(JsonOutput, RunLocation):
    """The runs of one output folder, newest first."""

    limit: int = 20
    """newest finished runs to show"""

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise InvalidInput(f"limit must be at least 1, got {self.limit}")


def history(settings: HistorySettings) -> None:
    """Prints the finished runs (newest first) and those that committed but never finished; JSON: an object with the
    lists `finished` and `unfinished` of whole records."""
    storage = Storage.from_config(settings.storage)
    runs = finished_runs(settings.run, storage)[: settings.limit]
    unfinished = unfinished_runs(settings.run, storage)
    if not runs and not unfinished:
        raise NotFound(f"{settings.run} holds no run of the embedding job")
    if settings.json:
        print(json.dumps({"finished": runs, "unfinished": unfinished}))
        return
    print(
        f"{'finished':24} {'run':24} {'listed':>8} {'new':>7} {'changed':>7} {'gone':>6} {'embedded':>8} {'failed':>6} "
        f"{'version':>7} {'seconds':>8}"
    )
    for run in runs:
        c = run["counts"]
        print(
            f"{run['finished']:24} {run['run_id']:24} {c['listed']:>8} {c['new']:>7} {c['changed']:>7} "
            f"{c['removed']:>6} {c.get('embedded', 0):>8} {c.get('failed', 0):>6} {run['versions']['embeddings']:>7} "
            f"{run['seconds']:>8.1f}"
        )
    for run in unfinished:
        print(
            f"unfinished run {run['run_id']}: {run['commits']} commits, {run['rows']} rows committed, last at version "
            f"{run['last_version']} (killed, or still running; the next run goes on from what it committed)"
        )


COMMAND = Command("history", HistorySettings, history, __doc__)

if __name__ == "__main__":
    sys.exit(main(COMMAND))
