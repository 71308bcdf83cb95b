"""The embedding job on a real Ray cluster of three nodes (a head and two workers, each its own raylet), submitted
with Ray's job API against S3: model actors on both workers, and a worker node killed in the middle of a run (both
slow). And the local Ray a job starts when given none."""

from __future__ import annotations

import os
import socket
import sys
import time

import pytest
import ray
from conftest import s3_storage
from pictures import photo
from runs import ROOT, read_run, submit_job

from pipeline.cluster import start_ray
from pipeline.tables import open_table


def free_ports(count: int) -> list[int]:
    """`count` loopback ports free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="module")
def cluster():
    """A head that holds no CPU (the job's driver runs there) and two worker nodes of one CPU each."""
    from ray.cluster_utils import Cluster

    # Each node's dashboard agent (which runs submitted jobs) on a port of its own: on Ray's default port they would
    # find it taken by the other nodes' agents, or by another Ray on this machine, and the head then has none.
    head_port, *worker_ports = free_ports(3)
    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": 0,
            "dashboard_agent_listen_port": head_port,
        },
    )
    workers = [
        cluster.add_node(num_cpus=1, resources={f"worker_{name}": 1}, dashboard_agent_listen_port=port)
        for name, port in zip("ab", worker_ports)
    ]
    cluster.wait_for_nodes()
    yield cluster, workers
    cluster.shutdown()


def put_photos(s3, prefix: str, count: int, tmp_path) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(**s3.storage_options())
    for i in range(count):
        path = tmp_path / f"{i}.png"
        photo(i).save(path)
        fs.put(str(path), f"test/{prefix}/photos/{i:03d}.png")


def submit(cluster, s3, prefix: str, *extra: str) -> tuple:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(f"http://{cluster[0].head_node.address_info['webui_url']}")
    args = (
        f"--input s3://test/{prefix}/photos/ --output s3://test/{prefix}/out --model s3://test/cluster-model "
        f"--storage.endpoint {s3.endpoint_url} {' '.join(extra)}"
    )
    env = {"PYTHONPATH": str(ROOT), "AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}
    return client, submit_job(client, f"{sys.executable} -m jobs.embed {args}", env)


def wait(client, job: str, seconds: float = 300) -> str:
    from ray.job_submission import JobStatus

    deadline = time.time() + seconds
    while client.get_job_status(job) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.time() < deadline, client.get_job_logs(job)[-3000:]
        time.sleep(1)
    return client.get_job_status(job)


@pytest.fixture(scope="module")
def model_on_s3(s3, model_dir):
    import s3fs

    s3fs.S3FileSystem(**s3.storage_options()).put(str(model_dir), "test/cluster-model", recursive=True)


@pytest.mark.slow  # a head and two worker nodes
def test_model_actors_run_on_both_worker_nodes(cluster, s3, model_on_s3, tmp_path):
    from ray.job_submission import JobStatus

    put_photos(s3, "cluster", 16, tmp_path)
    client, job = submit(cluster, s3, "cluster", "--batch_size", "2")
    assert wait(client, job) == JobStatus.SUCCEEDED, client.get_job_logs(job)[-3000:]
    embedded, errors, record = read_run("s3://test/cluster/out", s3_storage(s3))
    assert len(embedded) == 16 and not errors  # each path once: read_run fails on a path twice
    workers = {node.node_id for node in cluster[1]}
    assert set(record["resources"]["model_nodes"]) == workers, (record["resources"], workers)


@pytest.mark.slow  # a head and two worker nodes, one killed
def test_a_worker_node_killed_mid_run(cluster, s3, model_on_s3, tmp_path):
    from ray.job_submission import JobStatus

    put_photos(s3, "node-kill", 40, tmp_path)
    client, job = submit(cluster, s3, "node-kill", "--batch_size", "2", "--commit_rows", "4", "--commit_seconds", "0")
    storage = s3_storage(s3)
    deadline = time.time() + 240
    while not _committed(storage, "node-kill"):
        assert time.time() < deadline and client.get_job_status(job) in {JobStatus.PENDING, JobStatus.RUNNING}, (
            client.get_job_logs(job)[-3000:]
        )
        time.sleep(0.5)
    killed = cluster[1][1]
    cluster[0].remove_node(killed, allow_graceful=False)  # SIGKILL of its raylet and workers
    # A replacement joins, as autoscalers do.
    cluster[1][1] = cluster[0].add_node(
        num_cpus=1, resources={"worker_b": 1}, dashboard_agent_listen_port=free_ports(1)[0]
    )
    status = wait(client, job)
    if status != JobStatus.SUCCEEDED:  # it may stop with a clear message: the same command then finishes
        assert "error:" in client.get_job_logs(job), client.get_job_logs(job)[-3000:]
        client, job = submit(cluster, s3, "node-kill", "--batch_size", "2")
        assert wait(client, job) == JobStatus.SUCCEEDED, client.get_job_logs(job)[-3000:]
    embedded, errors, _ = read_run("s3://test/node-kill/out", storage)
    assert len(embedded) == 40 and not errors


def _committed(storage, prefix: str) -> bool:
    table = open_table(f"s3://test/{prefix}/out/embeddings", storage)
    return table is not None and any(h.get("vitmae.commit") == "add" for h in table.history())


def test_a_ray_the_job_starts_keeps_an_idle_worker_a_core_unless_told_otherwise(monkeypatch):
    """Ray's default keeps idle workers only for free CPUs, which the model actors take, so every short task beside
    them would start a worker process of its own (benchmarks/RESULTS.md)."""
    seen = []
    monkeypatch.setattr(ray, "init", lambda **init: seen.append((os.environ.get("RAY_num_workers_soft_limit"), init)))
    monkeypatch.delenv("RAY_num_workers_soft_limit", raising=False)
    start_ray(include_dashboard=False)
    monkeypatch.setenv("RAY_num_workers_soft_limit", "3")
    start_ray()
    assert seen == [(str(os.cpu_count()), {"include_dashboard": False}), ("3", {})]
