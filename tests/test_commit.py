"""A run's commits: the Committer's batches of files by rows and by time; and in jobs of their own Ray, a file
committed once written (not when the next one is), a run killed mid-way keeps what it committed and the next
finishes it, two runs at once never double a row."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pictures import fill
from runs import ROOT, own_ray_env, read_run, run_args, start_job

from pipeline.embed.commit import Committer
from pipeline.layout import EMBEDDINGS_DIR, ERRORS_DIR
from pipeline.storage import Storage
from pipeline.tables import DataFile, dataset, open_table


class Table:
    """A RunTable's add_files, recorded."""

    def __init__(self) -> None:
        self.commits: list[list[str]] = []

    def add_files(self, files: list[DataFile]) -> None:
        self.commits.append([f.path for f in files])


def data_file(table: str, name: str, rows: int) -> DataFile:
    return DataFile(table, name, size=1000, rows=rows, modified_ms=0, stats="{}")


def test_files_are_committed_every_so_many_rows_each_table_apart_and_each_file_once():
    tables = {EMBEDDINGS_DIR: Table(), ERRORS_DIR: Table()}
    committer = Committer(tables, commit_rows=100, commit_seconds=3600)
    committer.add([data_file(EMBEDDINGS_DIR, "a", 64), data_file(ERRORS_DIR, "e", 1)])
    assert tables[EMBEDDINGS_DIR].commits == [] and committer.commits == 0  # 65 rows: not yet
    committer.add([data_file(EMBEDDINGS_DIR, "a", 64), data_file(EMBEDDINGS_DIR, "b", 40)])  # "a" again: ignored
    assert tables[EMBEDDINGS_DIR].commits == [["a", "b"]] and tables[ERRORS_DIR].commits == [["e"]]
    assert committer.committed == {EMBEDDINGS_DIR: 104, ERRORS_DIR: 1} and committer.commits == 1
    committer.add([data_file(EMBEDDINGS_DIR, "c", 10)])
    committer.flush()  # the run's end: whatever is left
    committer.flush()  # nothing pending: no empty version
    assert tables[EMBEDDINGS_DIR].commits == [["a", "b"], ["c"]] and tables[ERRORS_DIR].commits == [["e"]]
    assert committer.commits == 2


def test_files_are_committed_once_commit_seconds_have_passed():
    tables = {EMBEDDINGS_DIR: Table(), ERRORS_DIR: Table()}
    committer = Committer(tables, commit_rows=10_000, commit_seconds=0)
    committer.add([data_file(EMBEDDINGS_DIR, "a", 1)])
    assert tables[EMBEDDINGS_DIR].commits == [["a"]]


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def data_commits(output: Path) -> int:
    table = open_table(str(output / "embeddings"), Storage())
    return 0 if table is None else sum(h.get("vitmae.commit") == "add" for h in table.history())


@pytest.mark.slow  # a job of its own Ray, killed, then another over 40 images
def test_a_killed_run_keeps_what_it_committed_and_the_next_finishes(model_dir, tmp_path):
    images, output = tmp_path / "images", tmp_path / "out"
    fill(images, range(40))
    args = run_args(images, output, model_dir, "--batch_size", "2", "--commit_rows", "4", "--commit_seconds", "0")
    job = start_job(args)
    wait_for(lambda: data_commits(output) >= 3 or job.poll() is not None, 240, "the first commits")
    os.killpg(job.pid, signal.SIGKILL)  # the driver and its local Ray, at once
    job.wait()
    committed = dataset(
        open_table(str(output / "embeddings"), Storage()), str(output / "embeddings"), Storage()
    ).count_rows()
    assert 0 < committed < 40, committed
    done = subprocess.run(
        [sys.executable, "-m", "jobs.embed", *args, "--vacuum_hours", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    embedded, errors, record = read_run(output)  # read_run fails on any path twice
    assert set(embedded) == {f"file://{p}" for p in images.iterdir()} and not errors
    assert record["counts"]["embedded"] == 40 - committed
    table = open_table(str(output / "embeddings"), Storage())
    live = {os.path.basename(f) for f in table.file_uris()}
    assert {p.name for p in (output / "embeddings").glob("*.parquet*")} == live  # the killed run's loose files are gone


@pytest.mark.slow  # a job of its own Ray whose model stalls after one batch, killed, then the same command again
def test_a_file_is_committed_once_written_not_when_the_next_one_is(model_dir, tmp_path):
    """The model actor hangs after its first batch (tests/fault_injection): that batch's file is committed all the
    same, with no second file ever written; the run killed then keeps its rows, and the same command embeds the rest."""
    images, output = tmp_path / "images", tmp_path / "out"
    fill(images, range(6))
    args = run_args(images, output, model_dir, "--batch_size", "2", "--commit_rows", "2", "--commit_seconds", "0")
    job = start_job(args, own_ray_env(VITMAE_FAULT_HANG_AFTER="1"))
    try:
        wait_for(lambda: data_commits(output) >= 1 or job.poll() is not None, 120, "the first file's commit")
        assert job.poll() is None, job.stdout.read()[-3000:]
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    embeddings = open_table(str(output / "embeddings"), Storage())
    assert dataset(embeddings, str(output / "embeddings"), Storage()).count_rows() == 2
    done = subprocess.run(
        [sys.executable, "-m", "jobs.embed", *args], cwd=ROOT, env=own_ray_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    embedded, errors, record = read_run(output)
    assert len(embedded) == 6 and not errors and record["counts"]["embedded"] == 4


@pytest.mark.slow  # two jobs of their own Ray at once, then a third
def test_two_runs_at_once_never_double_a_row(model_dir, tmp_path):
    images, output = tmp_path / "images", tmp_path / "out"
    fill(images, range(12))
    args = run_args(images, output, model_dir, "--batch_size", "2", "--commit_rows", "2", "--commit_seconds", "0")
    first, second = start_job(args), start_job(args)
    outs = [job.communicate(timeout=300)[0] for job in (first, second)]
    codes = sorted(job.returncode for job in (first, second))
    assert codes[0] == 0, outs
    if codes[1] != 0:
        assert codes[1] == 75 and any("two runs on one output at once are refused" in out for out in outs), outs
    again = subprocess.run(
        [sys.executable, "-m", "jobs.embed", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    embedded, errors, _ = read_run(output)  # each path once
    assert set(embedded) == {f"file://{p}" for p in images.iterdir()} and not errors
