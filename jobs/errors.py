"""How every entry point ends: a user mistake is one line on stderr and exit status 2, with no traceback; a bug is
one line and exit status 1, with its traceback behind --debug (or VITMAE_DEBUG=1)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from typing import Callable

from botocore.exceptions import BotoCoreError

from pipeline.retry import StorageUnavailable
from pipeline.tables import ConcurrentRunError
from vitmae.errors import one_line

USER_ERRORS = (
    ValueError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError,
    BotoCoreError,  # S3: no endpoint at that address, no credentials
    ConcurrentRunError,  # two runs on one output: the one that finds the other's commit stops, and says so
    StorageUnavailable,  # an outage longer than --retry-seconds: what was committed stays, the next run goes on
)
DEBUG_VARIABLE = "VITMAE_DEBUG"


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help=f"print the traceback of any error (also {DEBUG_VARIABLE}=1)")


def run_cli(parser: argparse.ArgumentParser, main: Callable[[argparse.Namespace], None], argv: list[str] | None) -> int:
    """Parses `argv` (adding --debug), runs `main`, and turns any exception into `prog: error: one line`."""
    if not any("--debug" in action.option_strings for action in parser._actions):
        add_debug_flag(parser)
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    prog = getattr(args, "prog", parser.prog)  # sub-commands set prog
    try:
        main(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - every failure ends as one line, the traceback only when asked for
        if debug:
            traceback.print_exception(err)
        print(f"{prog}: error: {describe(err, debug)}", file=sys.stderr)
        return 2 if isinstance(_cause(err), USER_ERRORS) else 1
    return 0


def describe(err: BaseException, debug: bool = False) -> str:
    """One line for the user: the message of a user mistake; for anything else also its type, and where the
    traceback is."""
    cause = _cause(err)
    message = one_line(cause)
    if isinstance(cause, BotoCoreError):
        return f"{message} (check --s3-endpoint and AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
    if isinstance(cause, USER_ERRORS):
        return message
    where = "the traceback is above" if debug else f"run again with --debug (or {DEBUG_VARIABLE}=1) for the traceback"
    return f"internal error, {type(cause).__name__}: {message} ({where})"


def _cause(err: BaseException) -> BaseException:
    """What a Ray task raised, rather than Ray's wrappers around it (Ray Data's "UDF failed", the remote traceback)."""
    ray = sys.modules.get("ray")
    if ray is not None and isinstance(err, ray.exceptions.RayTaskError) and err.cause is not None:
        return _cause(err.cause)
    if type(err).__module__.startswith("ray.") and err.__cause__ is not None:
        return _cause(err.__cause__)
    return err
