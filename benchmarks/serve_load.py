"""Load on `vitmae serve`, on loopback: requests/s, p50 and p99 latency, errors and the service's memory, at
concurrency 1, 8 and 32 for --seconds each.

    python -m benchmarks.serve_load --workdir /tmp/bench/serve [--vectors 1000000] [--dim 128] [--seconds 30]

Two runs, each served by its own `vitmae serve` process (access log off):
- a synthetic run of --vectors clustered vectors of dimension --dim (an embeddings Delta table and the index that
  `auto` builds for it), searched by path (a random indexed path a request) and by vector (a random vector from the
  same clusters, as JSON);
- a small real run embedded by the job with a ViT-B/16 geometry MAE (random weights, 224 pixels) over crops of
  scikit-image's photographs, searched by image (a 512 x 384 JPEG body a request, embedded by the service).

The load generator is one asyncio loop in this process with one httpx client (one connection) per request in flight,
bounded by --seconds and --max-requests for each cell; it shares the machine's cores with the service. Every run of this
script reuses the runs already in --workdir. Not a test: it takes minutes and about 2 GB.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import write_deltalake
from PIL import Image

from benchmarks.common import (
    INDEX_PACKAGES,
    MODELS,
    ROOT,
    clustered,
    hardware,
    job_command,
    photo_folder,
    save_checkpoint,
)
from pipeline import schema
from pipeline.retrieval.index import IndexConfig, build_index
from pipeline.storage import Storage

Request = tuple[str, str, dict]  # method, URL, httpx keyword arguments


def write_vectors(run: Path, count: int, dim: int, seed: int, shard_rows: int = 100_000) -> np.ndarray:
    """The synthetic run's embeddings table and index (kept across invocations); returns the cluster centres."""
    centres = np.random.default_rng(seed).standard_normal((1000, dim), dtype=np.float32)
    if (run / "index" / "index.json").exists():
        return centres
    shutil.rmtree(run, ignore_errors=True)
    for start in range(0, count, shard_rows):
        n = min(shard_rows, count - start)
        x = clustered(np.random.default_rng([seed, start]), centres, n, 0.5)
        table = pa.table(
            {
                schema.ID: pa.array(np.arange(start, start + n), pa.int64()),
                schema.PATH: pa.array([f"s3://photos/synthetic/{i:09d}.jpg" for i in range(start, start + n)]),
                schema.EMBEDDING: pa.ListArray.from_arrays(
                    pa.array(np.arange(n + 1, dtype=np.int32) * dim), pa.array(x.ravel())
                ),
            }
        )
        write_deltalake(str(run / "embeddings"), table, mode="append")
    started = time.perf_counter()
    info = build_index(str(run), IndexConfig(), Storage())
    print(
        f"built a {info['index_type']} index of {count:,} x {dim}-d vectors in {time.perf_counter() - started:.0f} s "
        f"(recall@10 {info['recall']['value']:.3f}, {info['search_params']})",
        flush=True,
    )
    return centres


def photos(count: int) -> list[Image.Image]:
    """Crops of scikit-image's photographs, 512 x 384."""
    folder = photo_folder()
    names = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg")
    sources = [Image.open(folder / name).convert("RGB") for name in names]
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        source = sources[i % len(sources)]
        w, h = int(source.width * rng.uniform(0.5, 0.9)), int(source.height * rng.uniform(0.5, 0.9))
        x, y = rng.integers(0, source.width - w + 1), rng.integers(0, source.height - h + 1)
        out.append(source.crop((x, y, x + w, y + h)).resize((512, 384)))
    return out


def embed_photos(workdir: Path) -> tuple[Path, list[bytes]]:
    """The ViT-B/16 run (kept across invocations) and the JPEG bodies of the image queries."""
    run, images, model = workdir / "vitb-run", workdir / "vitb-images", workdir / "vitb-model"
    pictures = photos(72)
    queries = []
    for picture in pictures[-12:]:  # not in the run
        sink = io.BytesIO()
        picture.save(sink, format="JPEG", quality=90)
        queries.append(sink.getvalue())
    if (run / "index" / "index.json").exists():
        return run, queries
    shutil.rmtree(run, ignore_errors=True)
    images.mkdir(parents=True, exist_ok=True)
    for i, picture in enumerate(pictures[:-12]):
        picture.save(images / f"photo-{i:03d}.jpg", quality=90)
    save_checkpoint(model, MODELS["base"])  # ViT-B/16 encoder, MAE's decoder
    subprocess.run(
        job_command(images, str(model), run),
        cwd=ROOT,
        env=_env(),
        check=True,
    )
    return run, queries


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


class Service:
    """`vitmae serve` in a child process on a free loopback port."""

    def __init__(self, run: Path, log: Path, model: bool) -> None:
        command = [sys.executable, "-m", "jobs.serve", "--run", str(run), "--port", "0", "--access_log", "false"]
        self.log = log
        with open(log, "wb") as sink:
            self.process = subprocess.Popen(
                command + ([] if model else ["--load_model", "false"]),
                cwd=ROOT,
                env=_env(),
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 600
        while not (found := re.search(rb"Uvicorn running on (http://127\.0\.0\.1:\d+)", log.read_bytes())):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"vitmae serve did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        self.base = found.group(1).decode()

    def memory(self) -> dict[str, float]:
        """VmRSS and VmHWM (peak) in GB, and the CPU seconds used so far."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kb = {key: int(re.search(rf"^{key}:\s+(\d+) kB", status, re.M).group(1)) for key in ("VmRSS", "VmHWM")}
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return {"rss_gb": kb["VmRSS"] / 2**20, "peak_gb": kb["VmHWM"] / 2**20, "cpu_s": cpu}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


@dataclass
class Cell:
    kind: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    server_cpu: float  # cores the service used on average
    client_cpu: float  # cores this load generator used on average
    first_error: str = ""


async def load(
    base: str, make: Callable[[random.Random], Request], concurrency: int, seconds: float, max_requests: int
) -> tuple[list[float], list[str], float]:
    """`concurrency` workers, each with its own connection, send requests until `seconds` pass or `max_requests`
    are sent; returns the latencies in s, the errors and the seconds until the last answer."""
    latencies: list[float] = []
    errors: list[str] = []
    sent = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def worker(seed: int) -> None:
        nonlocal sent
        rng = random.Random(seed)
        # A client each: one shared pool of many connections costs the client more per request than the service.
        async with httpx.AsyncClient(base_url=base, timeout=300, limits=httpx.Limits(max_connections=1)) as client:
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                method, url, kwargs = make(rng)
                begin = time.perf_counter()
                try:
                    response = await client.request(method, url, **kwargs)
                    if response.status_code != 200:
                        errors.append(f"{response.status_code} {response.text[:200]}")
                        continue
                except httpx.HTTPError as err:
                    errors.append(f"{type(err).__name__}: {err}")
                    continue
                latencies.append(time.perf_counter() - begin)

    await asyncio.gather(*(worker(seed) for seed in range(concurrency)))
    return latencies, errors, time.perf_counter() - started


def measure(
    service: Service, kind: str, make: Callable[[random.Random], Request], args: argparse.Namespace
) -> list[Cell]:
    cells = []
    asyncio.run(load(service.base, make, 2, 3, 20))  # warm-up: connections, the model's first call, caches
    for concurrency in args.concurrency:
        before, client_before = service.memory()["cpu_s"], resource.getrusage(resource.RUSAGE_SELF)
        latencies, errors, elapsed = asyncio.run(load(service.base, make, concurrency, args.seconds, args.max_requests))
        after, client_after = service.memory()["cpu_s"], resource.getrusage(resource.RUSAGE_SELF)
        client = (client_after.ru_utime + client_after.ru_stime) - (client_before.ru_utime + client_before.ru_stime)
        ms = np.array(latencies) * 1e3 if latencies else np.array([np.nan])
        cell = Cell(
            kind,
            concurrency,
            len(latencies),
            len(errors),
            elapsed,
            float(np.percentile(ms, 50)),
            float(np.percentile(ms, 99)),
            (after - before) / elapsed,
            client / elapsed,
            errors[0] if errors else "",
        )
        cells.append(cell)
        print(
            f"{kind:>8}  c={concurrency:<3} {cell.requests / elapsed:>8.1f} req/s  p50 {cell.p50_ms:>8.1f} ms  "
            f"p99 {cell.p99_ms:>8.1f} ms  errors {cell.errors}  service {cell.server_cpu:.2f} cores  "
            f"load generator {cell.client_cpu:.2f} cores {cell.first_error}",
            flush=True,
        )
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument(
        "--dim", type=int, default=128, help="of the synthetic vectors (ViT-B's 768 would need 3 GB for them)"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="of load in each cell")
    parser.add_argument("--max-requests", type=int, default=200_000, help="most requests in each cell")
    parser.add_argument("--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[1, 8, 32])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", default="", help="comma-separated kinds not to run: path, vector, image")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    print(f"{hardware(INDEX_PACKAGES)}; load average {os.getloadavg()[0]:.2f} at the start", flush=True)

    synthetic = args.workdir / f"synthetic-{args.vectors}x{args.dim}"
    centres = write_vectors(synthetic, args.vectors, args.dim, args.seed)
    paths = pq.read_table(synthetic / "index" / "ids.parquet", columns=[schema.PATH]).column(schema.PATH).to_pylist()
    vectors = clustered(np.random.default_rng([args.seed, 7]), centres, 1000, 0.5).tolist()
    results: list[tuple[str, dict, dict, list[Cell]]] = []
    if not {"path", "vector"} <= skip:
        service = Service(synthetic, args.workdir / "serve-synthetic.log", model=False)
        start = service.memory()
        cells = []
        if "path" not in skip:
            cells += measure(
                service,
                "path",
                lambda rng, paths=paths: ("GET", "/api/search", {"params": {"path": rng.choice(paths), "k": 10}}),
                args,
            )
        if "vector" not in skip:
            cells += measure(
                service,
                "vector",
                lambda rng: ("POST", "/api/search/vector?k=10", {"json": {"vector": rng.choice(vectors)}}),
                args,
            )
        results.append((f"{args.vectors:,} x {args.dim}-d", start, service.memory(), cells))
        service.stop()
    del paths
    if "image" not in skip:
        run, queries = embed_photos(args.workdir)
        service = Service(run, args.workdir / "serve-vitb.log", model=True)
        start = service.memory()
        cells = measure(
            service,
            "image",
            lambda rng: (
                "POST",
                "/api/search?k=10",
                {"content": rng.choice(queries), "headers": {"Content-Type": "image/jpeg"}},
            ),
            args,
        )
        results.append(("ViT-B/16 run", start, service.memory(), cells))
        service.stop()

    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    print(
        "| query | run | concurrency | requests/s | p50 ms | p99 ms | errors | service cores | load generator cores |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, _, _, cells in results:
        for c in cells:
            print(
                f"| {c.kind} | {name} | {c.concurrency} | {c.requests / c.seconds:,.1f} | "
                f"{c.p50_ms:.1f} | {c.p99_ms:.1f} | "
                f"{c.errors} | {c.server_cpu:.2f} | {c.client_cpu:.2f} |"
            )
    print("\n| service | RSS at start GB | RSS after the load GB | peak RSS GB |")
    print("| --- | ---: | ---: | ---: |")
    for name, start, end, _ in results:
        print(f"| {name} | {start['rss_gb']:.2f} | {end['rss_gb']:.2f} | {end['peak_gb']:.2f} |")


if __name__ == "__main__":
    main()
