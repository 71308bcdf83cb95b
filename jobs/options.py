"""Settings that several commands share, declared once: how a command prints its result.

No postponed annotations here: commands subclass these, and the command line reads their field types in the
subclass's module (jobs.command).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class JsonOutput:
    """Printing the result for a program rather than a person."""

    json: bool = False
    """print only the result, as JSON (its fields: the README)"""


@dataclass(frozen=True)
class Report(JsonOutput):
    """The result printed, and drawn."""

    png: str | None = None
    """also draw the result as a contact sheet in this PNG file, local or s3://"""
