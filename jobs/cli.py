"""The `vitmae` console command: one entry point with a sub-command per job, each imported only when it runs (the
embedding job's driver must not pay for torch, which other commands import)."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys

from jobs.command import main as run_command
from jobs.errors import WRONG_COMMAND

# name: (module, what it does in a line)
COMMANDS = {
    "embed": ("jobs.embed", "embed a dataset's new and changed images into the output's Delta tables"),
    "history": ("jobs.history", "the runs that updated an output folder, and what each did"),
    "index": ("jobs.index", "bring a run's FAISS index up to its embeddings table"),
    "search": ("jobs.search", "the nearest images of a query image or of an indexed one"),
    "anomalies": ("jobs.anomalies", "rank a run's images by reconstruction loss, kNN distance or both"),
    "duplicates": ("jobs.duplicates", "group a run's near-duplicate images"),
    "serve": ("jobs.serve", "serve a run's search, anomalies and duplicates over HTTP, with a web page"),
    "pretrain": ("jobs.pretrain", "pre-train a ViTMAE, or adapt one, on a folder of images"),
    "reconstruct": ("jobs.reconstruct", "draw an MAE model's reconstructions of a few images"),
    "demo": ("jobs.demo", "the offline demo: pre-train, embed, index, search and triage digit scans"),
}
DISTRIBUTION = "vitmae-pipeline"


def main(argv: list[str] | None = None) -> int:
    """`vitmae COMMAND ...`: the command's own parser takes everything after its name (`vitmae COMMAND --help`)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="vitmae",
        description="ViTMAE embeddings, anomaly scores and search at dataset scale.",
        epilog="Settings: vitmae COMMAND --help. Exit status: 0 done, 1 a bug, 2 a wrong command, 75 try again later, "
        "77 credentials or permissions refused.",
    )
    parser.add_argument(
        "--version", action="version", version=f"{DISTRIBUTION} {importlib.metadata.version(DISTRIBUTION)}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, summary) in COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)
    try:
        found, rest = parser.parse_known_args(argv)
    except SystemExit as done:  # --help, --version, or no command
        return WRONG_COMMAND if done.code else 0
    command = importlib.import_module(COMMANDS[found.command][0]).COMMAND
    return run_command(command, rest)


if __name__ == "__main__":
    sys.exit(main())
