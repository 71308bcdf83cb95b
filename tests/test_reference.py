"""docs/cli.md against the commands' settings: a flag added, renamed or given another default makes it stale."""

from __future__ import annotations

from pathlib import Path

from jobs.cli import COMMANDS
from jobs.reference import markdown

REFERENCE = Path(__file__).parents[1] / "docs" / "cli.md"


def test_the_reference_is_what_the_commands_parse():
    text = markdown()
    assert all(f"## vitmae {name}\n" in text for name in COMMANDS)
    assert "--infer.mask_ratio MASK_RATIO" in text and "VITMAE_EMBED_INFER__MASK_RATIO" in text
    assert REFERENCE.read_text() == text, "docs/cli.md is stale: python -m jobs.reference > docs/cli.md"
