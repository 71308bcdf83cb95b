"""A run's commits: the Committer's batches of files by rows and by time; and in jobs of their own Ray, a file
committed once written (not when the next one is), a run killed mid-way keeps what it committed and the next
finishes it, two runs at once never double a row."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pictures import fill
from runs import ROOT, own_ray_env, read_run, run_args, start_job

from pipeline.embed.commit import Committer
from pipeline.embed.progress import Progress, duration
from pipeline.layout import EMBEDDINGS_DIR, ERRORS_DIR
from pipeline.storage import Storage
from pipeline.tables import DataFile, dataset, open_table


class Table:
    """A RunTable's add_files, recorded."""

    def __init__(self) -> None:
        self.commits: list[list[str]] = []
        self.version = 0

    def add_files(self, files: list[DataFile]) -> None:
        self.commits.append([f.path for f in files])
        self.version += 1


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


def test_a_file_waits_no_longer_than_commit_seconds_though_no_other_file_comes(monkeypatch):
    """The progress thread's tick commits what waits once commit_seconds have passed, and its line says so."""
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    tables = {EMBEDDINGS_DIR: Table(), ERRORS_DIR: Table()}
    committer = Committer(tables, commit_rows=10_000, commit_seconds=60)
    progress = Progress(total=1000, committer=committer, every=10)
    committer.add([data_file(EMBEDDINGS_DIR, "a", 200), data_file(ERRORS_DIR, "e", 50)])
    clock[0] += 59
    committer.tick()
    assert tables[EMBEDDINGS_DIR].commits == [] and committer.written == 250
    assert progress.line() == (
        "embedded 250 of 1,000 images (25 %) in 59s, 4.2 images/s, about 2m 57s left; 0 rows committed, "
        "embeddings version 0"
    )
    clock[0] += 1
    committer.tick()
    assert tables[EMBEDDINGS_DIR].commits == [["a"]] and tables[ERRORS_DIR].commits == [["e"]]
    assert progress.line().endswith("; 250 rows committed, embeddings version 1")
    clock[0] += 3600
    committer.tick()  # nothing waits: no empty version
    assert committer.commits == 1
    assert [duration(s) for s in (7.4, 100, 3725.2)] == ["7s", "1m 40s", "1h 2m"]


def test_a_commit_that_fails_in_the_progress_thread_fails_the_run():
    class Failing(Table):
        def add_files(self, files: list[DataFile]) -> None:
            raise OSError("the store is gone")

    committer = Committer({EMBEDDINGS_DIR: Failing(), ERRORS_DIR: Table()}, commit_rows=10_000, commit_seconds=0)
    committer.pending.append(data_file(EMBEDDINGS_DIR, "a", 1))
    with pytest.raises(OSError, match="the store is gone"), Progress(total=1, committer=committer, every=0):
        time.sleep(2.5)  # the thread ticks every second


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
    # The run's last progress line; Ray Data's own progress only with --ray_progress true.
    last = re.findall(
        r"embedded 4 of 4 images \(100 %\) in \S+, [\d.]+ images/s; 4 rows committed, embeddings version \d+",
        done.stderr,
    )
    assert last and "Total Progress" not in done.stderr, done.stderr[-3000:]


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
