"""The settings a table must keep, against those of a run that goes on with it."""

from __future__ import annotations

import pytest

from pipeline.embed.checks import check_settings


def test_a_table_from_before_the_decode_setting_was_recorded_takes_fast_runs_only():
    """Such tables decoded JPEGs at a reduced scale: "fast" goes on with them, "exact" needs --overwrite."""
    older = {"pooling": "mean"}
    check_settings(older, {"pooling": "mean", "decode": "fast"}, "out")
    with pytest.raises(ValueError, match="decode 'fast' \\(the table\\) vs 'exact' \\(this run\\)"):
        check_settings(older, {"pooling": "mean", "decode": "exact"}, "out")
