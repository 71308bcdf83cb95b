"""`vitmae serve`: serve a run's search, anomalies and near duplicates over HTTP, with a web page."""

from __future__ import annotations

import sys

from jobs.command import Command, main
from pipeline.service.app import serve
from pipeline.service.config import ServeConfig

COMMAND = Command("serve", ServeConfig, serve, __doc__)

if __name__ == "__main__":
    sys.exit(main(COMMAND))
