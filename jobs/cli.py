"""The `vitmae` console command: one entry point with a sub-command per job."""

from __future__ import annotations

import argparse
import sys

from jobs import anomalies, duplicates, embed, history, index, pretrain, reconstruct, search, serve
from jobs.errors import add_debug_flag, run_cli

COMMANDS = {
    "embed": embed, "history": history, "index": index, "search": search, "anomalies": anomalies, "duplicates": duplicates,
    "pretrain": pretrain, "reconstruct": reconstruct, "serve": serve,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vitmae", description="ViTMAE embeddings, anomaly scores and search at dataset scale.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        sub = commands.add_parser(name, help=module.__doc__.split(":", 1)[-1].strip(), description=module.__doc__)
        module.add_arguments(sub)
        add_debug_flag(sub)
        sub.set_defaults(main=module.main_with_args, prog=f"vitmae {name}")
    return run_cli(parser, lambda args: args.main(args), argv)


if __name__ == "__main__":
    sys.exit(main())
