"""Every code block of the README and docs/ runs here as written, or says why not.

A comment above each fenced block says which:
- `<!-- example: run -->`: run in the page's order: shell with `bash -e -o pipefail`, Python in one namespace per
  page, as a notebook runs it, every DuckDB query and Ray dataset read to its end and returning rows;
- `<!-- example: run: serves -->`: a command that serves until stopped: started, and stopped once it answers;
- `<!-- example: not run: WHY -->`: what it needs that no test has (a GPU, the internet, a scheduler, machines); its
  YAML or Python is still parsed.
Blocks of language `text` are what a command prints or a folder holds, not examples.

They run in the world the docs speak of (`world`): a bucket `bucket` on the tests' S3 server with `photos/` (the
tests' gallery and a file that is no image) and `models/vit-mae-base` (a small random-weight MAE), the same MAE as
`facebook/vit-mae-base` in an offline Hugging Face cache, and a working folder with `photos/`, `vit-mae-base/`,
`query.jpg`, `a.jpg`, `b.jpg` and `out/`, an embedding run of `photos/` (loss scored) with its anomalies and
duplicates. Each page starts from that world afresh.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx
import pytest
import yaml
from conftest import use_hub
from PIL import Image

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A fenced block and the comment above it.
BLOCK = re.compile(r"(?:<!-- example: (?P<mark>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<code>.*?)```", re.DOTALL)
RUN, SERVES = "run", "run: serves"
HUB_ID = "facebook/vit-mae-base"
BLOCK_SECONDS = 600
RAY_PROCESS = re.compile(r"(\x1b\[\d+m)?\(\w+ pid=\d+")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    mark: str | None
    lang: str
    code: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """Every fenced block of `page`, in order."""
    text = page.read_text()
    return [
        Block(page, text.count("\n", 0, m.start("code")), m["mark"], m["lang"], m["code"]) for m in BLOCK.finditer(text)
    ]


def test_every_block_is_run_or_says_why_not():
    found = [block for page in PAGES for block in blocks(page) if block.lang != "text"]
    unmarked = [str(block) for block in found if block.mark is None]
    assert not unmarked, f"blocks without <!-- example: ... --> above them: {unmarked}"
    odd = [str(b) for b in found if b.mark not in (RUN, SERVES) and not re.match(r"not run: \w", b.mark)]
    assert not odd, f"marks other than run, run: serves and not run: WHY: {odd}"
    for block in found:
        if block.mark.startswith("not run") and block.lang == "python":
            ast.parse(block.code, str(block))
        if block.lang == "yaml":
            yaml.safe_load(block.code)
    assert sum(block.mark == SERVES for block in found) >= 2
    assert sum(block.mark == RUN for block in found) >= 10


@pytest.fixture(scope="session")
def world_template(gallery, gallery_run, model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(the working folder, a copy of it): the copy restores the folder for each page, at the same path, so that the
    paths `out/` holds stay those of its `photos/`."""
    from pipeline.embed.infer import InferConfig
    from pipeline.embed.run import EmbedConfig, run
    from pipeline.retrieval.anomalies import AnomalyConfig, rank_anomalies
    from pipeline.retrieval.duplicates import DuplicateConfig, find_duplicates

    base = tmp_path_factory.mktemp("docs")
    folder = base / "world"
    shutil.copytree(gallery, folder / "photos")
    (folder / "photos" / "notes.jpg").write_text("not a picture: it ends in the errors table\n")
    shutil.copytree(model_dir, folder / "vit-mae-base")
    for name, source in (("query.jpg", "coffee-00.png"), ("a.jpg", "coffee-01.png"), ("b.jpg", "camera.png")):
        Image.open(gallery / source).convert("RGB").save(folder / name, quality=90)
    output = str(folder / "out")
    infer = InferConfig(mask_ratio=0.75)
    run(EmbedConfig(input=str(folder / "photos"), output=output, model=str(model_dir), infer=infer, num_gpus=0))
    find_duplicates(DuplicateConfig(output))
    rank_anomalies(AnomalyConfig(output))
    # The hub's cache layout: refs/main names the snapshot.
    commit = "0" * 40
    hub = base / "hub" / f"models--{HUB_ID.replace('/', '--')}"
    shutil.copytree(model_dir, hub / "snapshots" / commit)
    (hub / "refs").mkdir()
    (hub / "refs" / "main").write_text(commit)
    template = base / "template"
    shutil.copytree(folder, template)
    return folder, template


@pytest.fixture
def world(world_template, model_dir, s3, monkeypatch) -> dict[str, str]:
    """The world, afresh: the folder restored, the bucket emptied and filled, this process's environment and working
    folder set as a shell's would be; returns the environment for the commands."""
    import s3fs

    folder, template = world_template
    shutil.rmtree(folder)
    shutil.copytree(template, folder)
    s3.create_bucket("bucket")
    fs = s3fs.S3FileSystem(**s3.storage_options())
    if fs.exists("bucket/"):
        for key in fs.find("bucket/"):
            fs.rm(key)
    fs.put(f"{folder / 'photos'}/", "bucket/photos/", recursive=True)
    fs.put(f"{model_dir}/", "bucket/models/vit-mae-base/", recursive=True)
    env = {
        **s3.environment(),
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",  # the tests' server speaks plain http
        "RAY_ADDRESS": "local",  # each command starts its own Ray, as from cron
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    use_hub(monkeypatch, folder.parent / "hub", offline=True)
    monkeypatch.delenv("VITMAE_SERVE_TOKEN", raising=False)
    monkeypatch.chdir(folder)
    return {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])}


def run_shell(block: Block, env: dict[str, str]) -> None:
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", block.code],
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_SECONDS,
    )
    output = done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0, f"{block} exited {done.returncode}:\n{output}"
    # The commands' own lines: without those Ray's processes print, prefixed "(name pid=N)", where a second Ray on the
    # machine (the tests') can trouble Ray Train's clean-up thread.
    own = "\n".join(line for line in done.stderr.splitlines() if not RAY_PROCESS.match(line))
    assert "Traceback" not in own, f"{block}:\n{own[-3000:]}"


def run_server(block: Block, env: dict[str, str]) -> None:
    """Starts the block, waits until its service answers on its port, then stops it."""
    port = re.search(r"--port (\d+)", block.code)
    url = f"http://127.0.0.1:{port[1] if port else 8000}/api/health"
    server = subprocess.Popen(["bash", "-c", block.code], env=env, start_new_session=True, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"{block} exited {server.returncode}: {server.stderr.read()[-3000:]}"
            assert time.monotonic() < deadline, f"{block} did not answer at {url} in 120 s"
            try:
                answer = httpx.get(url, timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.5)
        assert answer.status_code == 200 and answer.json()["count"] > 0, answer.text
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def run_python(block: Block, namespace: dict) -> None:
    """Each statement in turn; the value of an expression statement that is a query or a dataset is read whole."""
    import ray

    for statement in ast.parse(block.code).body:
        if not isinstance(statement, ast.Expr):
            exec(compile(ast.Module([statement], []), str(block), "exec"), namespace)
            continue
        value = eval(compile(ast.Expression(statement.value), str(block), "eval"), namespace)
        if isinstance(value, duckdb.DuckDBPyRelation):
            assert value.fetchall(), f"{block}: {ast.unparse(statement)} returned no rows"
        elif isinstance(value, ray.data.Dataset):
            assert value.take(1), f"{block}: {ast.unparse(statement)} read no rows"


RUN_PAGES = [page for page in PAGES if any(block.mark in (RUN, SERVES) for block in blocks(page))]


@pytest.mark.slow  # every command of the docs, each starting its own Ray (about a minute a page)
@pytest.mark.parametrize("page", RUN_PAGES, ids=[page.name for page in RUN_PAGES])
def test_the_examples_run_as_written(page, world, ray_cluster):
    namespace: dict = {}
    for block in blocks(page):
        if block.mark == SERVES:
            run_server(block, world)
        elif block.mark == RUN and block.lang == "python":
            run_python(block, namespace)
        elif block.mark == RUN:
            run_shell(block, world)
