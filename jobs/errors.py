"""How every entry point reports a user mistake: one line on stderr and exit status 2, no traceback."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from botocore.exceptions import BotoCoreError

USER_ERRORS = (
    ValueError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError,
    BotoCoreError,  # S3: no endpoint at that address, no credentials
)


def run_cli(parser: argparse.ArgumentParser, main: Callable[[argparse.Namespace], None], argv: list[str] | None) -> int:
    """Parses `argv`, runs `main`, and turns user errors into `prog: error: message`."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        main(args)
    except USER_ERRORS as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        if isinstance(err, BotoCoreError):
            message += " (check --s3-endpoint and AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
        print(f"{getattr(args, 'prog', parser.prog)}: error: {message}", file=sys.stderr)  # sub-commands set prog
        return 2
    return 0
