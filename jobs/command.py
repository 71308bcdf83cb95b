"""A `vitmae` command: the fields of one settings dataclass become its flags, its `--help` (with every default), its
config files (`--config`, `--print_config`) and its environment variables, through jsonargparse.

A field `mask_ratio` of a nested settings class `infer` is the flag `--infer.mask_ratio`, the key `infer: {mask_ratio:
...}` of a YAML config file and the environment variable `VITMAE_EMBED_INFER__MASK_RATIO` (for `vitmae embed`);
a field's docstring is its help. Precedence, lowest first: defaults, environment, config files, flags, in the order
given on the command line.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from jsonargparse import ActionConfigFile, ActionYesNo, ArgumentParser, Namespace, set_parsing_settings

from jobs.errors import DEBUG_VARIABLE, exit_code, report

ENV_PREFIX = "VITMAE"
HELP_FLAGS = ("-h", "--help")


@dataclass(frozen=True)
class Command:
    """One command: its settings class and what runs an instance of it."""

    name: str  # the sub-command of `vitmae`
    settings: type  # a dataclass: every field is a setting
    run: Callable[[Any], None]  # runs the settings, printing what a person reads; raises on failure
    doc: str  # what it does: the job module's docstring

    @property
    def prog(self) -> str:
        return f"vitmae {self.name}"

    @property
    def env_prefix(self) -> str:
        return f"{ENV_PREFIX}_{self.name.upper()}"


def parser(command: Command, docs: bool = True) -> ArgumentParser:
    """The command's parser: its settings, --config and --print_config, and --debug. With `docs`, each field's
    docstring is its help: read from the settings modules' source (an AST parse of each, about 0.15 s for the
    embedding job), which only --help needs."""
    set_parsing_settings(docstring_parse_attribute_docstrings=docs)
    parser = ArgumentParser(
        prog=command.prog,
        description=f"{command.doc.strip()}\n\n{_usage_notes(command)}",
        default_env=True,
        env_prefix=command.env_prefix,
        exit_on_error=False,
    )
    parser.add_argument(
        "--config",
        action=ActionConfigFile,
        help="a YAML file of settings, as --print_config writes them; flags after it override it",
    )
    parser.add_class_arguments(command.settings, None, as_group=False)
    parser.add_argument(
        "--debug", action=ActionYesNo, default=False, help=f"print the traceback of any error (also {DEBUG_VARIABLE}=1)"
    )
    return parser


def parse(command: Command, argv: Sequence[str]) -> tuple[Any, bool]:
    """(the settings the command line, config files and environment give, whether --debug was asked for).

    Raises:
        jsonargparse.ArgumentError: a flag, value or file that does not parse. SystemExit(0): --help, --print_config.
        UserError: a setting its class refuses.
    """
    found = parser(command, docs=any(flag in argv for flag in HELP_FLAGS))
    namespace = found.parse_args(list(argv))
    debug = bool(namespace.get("debug"))
    return build(command.settings, found.instantiate(namespace)), debug


def build(settings: type, namespace: Namespace) -> Any:
    """The settings class from the parsed values: its nested classes jsonargparse has built already; the class itself
    is built here, so that its checks run."""
    return settings(**{field.name: namespace[field.name] for field in dataclasses.fields(settings)})


def main(command: Command, argv: Sequence[str] | None = None) -> int:
    """Parses `argv` for `command` and runs it: the exit status (jobs.errors), every failure one line on stderr."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or _debug_variable()  # until the settings parse
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings, asked = parse(command, argv)
        debug = asked or _debug_variable()
        command.run(settings)
    except KeyboardInterrupt:
        print(f"{command.prog}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as done:  # --help and --print_config
        return done.code if isinstance(done.code, int) else 0
    except Exception as err:  # noqa: BLE001 - every failure ends as one line, the traceback only when asked for
        print(f"{command.prog}: error: {report(err, debug, command.prog)}", file=sys.stderr)
        return exit_code(err)
    return 0


def _debug_variable() -> bool:
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def _usage_notes(command: Command) -> str:
    return (
        f"Every setting is also read from the environment variable named beside it ({command.env_prefix}_...) and "
        "from --config files; flags win."
    )
