"""The README's examples: every code block is run here, on a run of the tests' gallery, or says why not (a GPU, a
bucket, a cluster, a scheduler) in a comment above it."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import duckdb

README = Path(__file__).parents[1] / "README.md"
# A fenced block and the comment above it: <!-- example: run --> or <!-- example: not run: why -->.
BLOCK = re.compile(r"(?:<!-- example: (?P<mark>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<code>.*?)```", re.DOTALL)


def blocks() -> list[tuple[str | None, str, str]]:
    """(marker, language, code) of every fenced block of the README, in order."""
    return [(m["mark"], m["lang"], m["code"]) for m in BLOCK.finditer(README.read_text())]


def test_every_block_is_run_or_says_why_not():
    found = blocks()
    unmarked = [code.splitlines()[0] for mark, _, code in found if mark is None]
    assert not unmarked, f"README blocks without <!-- example: ... -->: {unmarked}"
    assert all(mark == "run" or mark.startswith("not run") for mark, _, _ in found)
    assert sum(mark == "run" for mark, _, _ in found) >= 2


def test_the_python_blocks_run_as_written_on_an_output(gallery_run, tmp_path, monkeypatch):
    """The blocks marked run, one after another in one namespace (as in a notebook), in a folder whose `out/` is an
    output with its rankings: every statement runs, and every DuckDB query runs to its end."""
    from pipeline.retrieval.anomalies import AnomalyConfig, rank_anomalies
    from pipeline.retrieval.duplicates import DuplicateConfig, find_duplicates

    output = tmp_path / "out"
    shutil.copytree(gallery_run, output)
    find_duplicates(DuplicateConfig(str(output)))
    rank_anomalies(AnomalyConfig(str(output)))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    rows = []
    for mark, lang, code in blocks():
        if mark != "run":
            continue
        assert lang == "python"
        for statement in ast.parse(code).body:
            if isinstance(statement, ast.Expr):
                value = eval(compile(ast.Expression(statement.value), str(README), "eval"), namespace)
                if isinstance(value, duckdb.DuckDBPyRelation):
                    rows.append(len(value.fetchall()))
            else:
                exec(compile(ast.Module([statement], []), str(README), "exec"), namespace)
    assert len(namespace["frame"]) == 27 and rows and rows[0] == 10, rows  # the largest images: ten of the 27
