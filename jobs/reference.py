"""docs/cli.md, the command line reference, written from the commands' own settings: every flag, its default, its
environment variable and its help, as `vitmae COMMAND --help` prints them.

    python -m jobs.reference > docs/cli.md
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from jobs.cli import COMMANDS
from jobs.command import parser

# The width the help is wrapped to, whatever the terminal that writes the reference.
WIDTH = "120"


def markdown() -> str:
    """The reference: a section per command, in `vitmae`'s order, with its --help."""
    sections = [
        "# Command line reference\n",
        "Written by `python -m jobs.reference > docs/cli.md` from the settings the commands parse; a test fails when "
        "it is stale.\nEvery command reads `--config FILE` (YAML, as `--print_config` writes it) and environment "
        "variables named beside each flag; flags win. Exit statuses: 0 done, 1 a bug, 2 a wrong command, 75 try again "
        "later, 77 credentials or permissions refused.\n",
    ]
    with _width(WIDTH):
        for name, (module, summary) in COMMANDS.items():
            command = importlib.import_module(module).COMMAND
            sections.append(
                f"## vitmae {name}\n\n{summary[0].upper()}{summary[1:]}.\n\n```text\n"
                f"{parser(command).format_help().rstrip()}\n```\n"
            )
    return "\n".join(sections)


@contextmanager
def _width(columns: str) -> Iterator[None]:
    """argparse wraps help to the COLUMNS variable, else to the terminal."""
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = columns
    try:
        yield
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


if __name__ == "__main__":
    sys.stdout.write(markdown())
