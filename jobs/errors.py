"""How every command ends: its exit status, which a scheduler can act on, and one line on stderr for a person.

| status | meaning | what to do |
| --- | --- | --- |
| 0 | done | |
| 1 | a bug: a failure nobody raised on purpose | run again with --debug for the traceback, and report it |
| 2 | the command is wrong: a flag, a path, a model, settings other than the table's | fix the command |
| 75 | try again later (EX_TEMPFAIL): a storage outage past retry_seconds, another run holding the output, an index
not built yet | retry; past a few tries, read the message |
| 77 | credentials or permissions refused (EX_NOPERM), expired ones included | fix the credentials |
"""

from __future__ import annotations

import sys
import traceback

from jsonargparse import ArgumentError

from pipeline.retrieval.index_store import IndexNotReady
from pipeline.storage_errors import AccessDenied, StorageOutage
from pipeline.tables import ConcurrentRunError
from vitmae.errors import UserError, one_line

DONE, BUG, WRONG_COMMAND, TRY_LATER, NO_PERMISSION = 0, 1, 2, 75, 77
# The first of an error and its explicit causes (`raise ... from`) that is one of these decides the status.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (AccessDenied, NO_PERMISSION),
    (StorageOutage, TRY_LATER),  # what was committed stays; the next run goes on
    (ConcurrentRunError, TRY_LATER),  # two runs on one output: the one that finds the other's commit stops
    (IndexNotReady, TRY_LATER),  # the embedding run building the index has not finished (or it needs `vitmae index`)
    (UserError, WRONG_COMMAND),
    (ArgumentError, WRONG_COMMAND),  # a flag, value or config file that does not parse
)
DEBUG_VARIABLE = "VITMAE_DEBUG"


def exit_code(err: BaseException) -> int:
    """The exit status for `err` (the table above)."""
    for cause in _chain(err):
        for kind, code in EXIT_CODES:
            if isinstance(cause, kind):
                return code
    return BUG


def report(err: BaseException, debug: bool, prog: str) -> str:
    """One line for a person; with `debug`, the traceback first, on stderr."""
    if debug:
        traceback.print_exception(err)
    if isinstance(err, ArgumentError):
        return f"{' '.join(str(err).split())} (see {prog} --help)"
    shown = _shown(err)
    message = one_line(shown)
    if exit_code(err) != BUG:
        return message
    where = "the traceback is above" if debug else f"run again with --debug (or {DEBUG_VARIABLE}=1) for the traceback"
    return f"internal error, {type(shown).__name__}: {message} ({where})"


def _shown(err: BaseException) -> BaseException:
    """What a Ray task raised, rather than Ray's wrappers around it (Ray Data's "UDF failed", the remote traceback)."""
    ray = sys.modules.get("ray")
    if ray is not None and isinstance(err, ray.exceptions.RayTaskError) and err.cause is not None:
        return _shown(err.cause)
    if type(err).__module__.startswith("ray.") and err.__cause__ is not None:
        return _shown(err.__cause__)
    return err


def _chain(err: BaseException):
    """`err` as shown, then its explicit causes."""
    seen: BaseException | None = _shown(err)
    while seen is not None:
        yield seen
        seen = seen.__cause__
