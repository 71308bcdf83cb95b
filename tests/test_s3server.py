"""The SeaweedFS S3 test server, and s3fs, pyarrow and vitmae checkpoints going through it."""

from __future__ import annotations

import os
import uuid

import botocore.config
import botocore.exceptions
import botocore.session
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs
import torch
from s3server import S3Server, S3ServerError

import vitmae

MAE_URI = "s3://test/models/mae"
MAE_GEOMETRY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    image_size=32,
    patch_size=8,
    decoder_hidden_size=16,
    decoder_num_hidden_layers=1,
    decoder_num_attention_heads=2,
    decoder_intermediate_size=32,
)


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own in the session's shared bucket."""
    return f"test/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def fs(s3: S3Server) -> s3fs.S3FileSystem:
    return fsspec.filesystem("s3", skip_instance_cache=True, **s3.storage_options())


@pytest.fixture(scope="module")
def saved_mae(s3: S3Server) -> vitmae.ViTMAEForPreTraining:
    """A tiny randomly initialised ViTMAE, saved to MAE_URI once for the tests that load it."""
    torch.manual_seed(0)
    model = vitmae.ViTMAEForPreTraining(vitmae.ViTMAEConfig(**MAE_GEOMETRY)).eval()
    model.save_pretrained(MAE_URI, storage_options=s3.storage_options())
    return model


def _encode(model: torch.nn.Module) -> torch.Tensor:
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(pixels, mask_ratio=0.0).last_hidden_state


def test_s3fs_writes_lists_and_reads_back(fs: s3fs.S3FileSystem, prefix: str) -> None:
    payloads = {f"{prefix}/a.bin": b"alpha", f"{prefix}/sub/b.bin": os.urandom(1000), f"{prefix}/sub/c.txt": b""}
    for path, data in payloads.items():
        fs.pipe_file(path, data)
    # 6 MiB in 5 MiB blocks: a two-part multipart upload, as large Parquet or safetensors writes do.
    big = os.urandom(6 * 2**20)
    with fs.open(f"{prefix}/big.bin", "wb", block_size=5 * 2**20) as f:
        f.write(big)

    fresh = fsspec.filesystem("s3", skip_instance_cache=True, **fs.storage_options)  # no listing cache
    assert sorted(fresh.find(prefix)) == sorted([*payloads, f"{prefix}/big.bin"])
    assert sorted(fresh.ls(f"{prefix}/sub", detail=False)) == [f"{prefix}/sub/b.bin", f"{prefix}/sub/c.txt"]
    assert {path: fresh.cat_file(path) for path in payloads} == payloads
    assert fresh.size(f"{prefix}/big.bin") == len(big)
    assert fresh.cat_file(f"{prefix}/big.bin") == big
    assert (
        fresh.cat_file(f"{prefix}/big.bin", start=5 * 2**20 - 3, end=5 * 2**20 + 3)
        == big[5 * 2**20 - 3 : 5 * 2**20 + 3]
    )
    with pytest.raises(FileNotFoundError):
        fresh.cat_file(f"{prefix}/missing.bin")


def test_pyarrow_parquet_round_trip(s3: S3Server, prefix: str) -> None:
    table = pa.table(
        {
            "path": [f"img_{i:05d}.jpg" for i in range(1000)],
            "embedding": pa.array([[float(i), -float(i)] * 8 for i in range(1000)], type=pa.list_(pa.float32(), 16)),
        }
    )
    uri = f"s3://{prefix}/embeddings/part-00000.parquet"
    fs, _ = fsspec.core.url_to_fs(uri, **s3.storage_options())

    pq.write_table(table, uri, filesystem=fs, row_group_size=300)

    assert fs.exists(uri)
    assert pq.read_metadata(uri, filesystem=fs).num_row_groups == 4
    assert pq.read_table(uri, filesystem=fs).equals(table)
    assert pq.read_table(uri, filesystem=fs, columns=["path"]).column("path").to_pylist()[-1] == "img_00999.jpg"


def test_checkpoint_round_trip_with_storage_options(s3: S3Server, saved_mae: vitmae.ViTMAEForPreTraining) -> None:
    fs, root = fsspec.core.url_to_fs(MAE_URI, **s3.storage_options())
    assert {os.path.basename(p) for p in fs.ls(root, detail=False)} == {"config.json", "model.safetensors"}
    assert not os.path.exists("s3:"), "the checkpoint went to a local folder named s3:"

    loaded = vitmae.ViTMAEModel.from_pretrained(MAE_URI, storage_options=s3.storage_options())

    expected = _encode(saved_mae.vit)
    assert expected.shape == (2, 1 + 16, 32)
    torch.testing.assert_close(_encode(loaded), expected, rtol=0, atol=0)


def test_checkpoint_loads_with_aws_environment_only(
    s3: S3Server, saved_mae: vitmae.ViTMAEForPreTraining, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    for name, value in s3.environment().items():
        monkeypatch.setenv(name, value)
    # Nothing from ~/.aws or a profile may help: the three variables must be enough.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    # s3fs caches filesystems by their arguments; an argument-less one must not outlive this environment.
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        loaded = vitmae.ViTMAEModel.from_pretrained(MAE_URI)
    finally:
        s3fs.S3FileSystem.clear_instance_cache()

    torch.testing.assert_close(_encode(loaded), _encode(saved_mae.vit), rtol=0, atol=0)


def test_server_refuses_anonymous_and_wrong_secret(s3: S3Server) -> None:
    def client(**credentials):
        config = botocore.config.Config(retries={"max_attempts": 1}, **credentials.pop("config", {}))
        return botocore.session.Session().create_client(
            "s3", endpoint_url=s3.endpoint_url, region_name="us-east-1", config=config, **credentials
        )

    good = client(aws_access_key_id=s3.access_key, aws_secret_access_key=s3.secret_key)
    assert "test" in {b["Name"] for b in good.list_buckets()["Buckets"]}
    with pytest.raises(botocore.exceptions.ClientError, match="SignatureDoesNotMatch"):
        client(aws_access_key_id=s3.access_key, aws_secret_access_key=s3.secret_key + "x").list_buckets()
    with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
        client(config={"signature_version": botocore.UNSIGNED}).list_objects_v2(Bucket="test")


def test_the_reader_lists_and_reads_but_may_not_write(s3: S3Server, fs: s3fs.S3FileSystem, prefix: str) -> None:
    fs.pipe_file(f"{prefix}/a.bin", b"alpha")
    reader = fsspec.filesystem("s3", skip_instance_cache=True, **s3.storage_options(read_only=True))
    assert reader.ls(prefix, detail=False) == [f"{prefix}/a.bin"] and reader.cat_file(f"{prefix}/a.bin") == b"alpha"
    with pytest.raises(PermissionError, match="Access Denied"):
        reader.pipe_file(f"{prefix}/b.bin", b"beta")
    with pytest.raises(PermissionError, match="Access Denied"):
        reader.rm_file(f"{prefix}/a.bin")
    assert fs.ls(prefix, detail=False, refresh=True) == [f"{prefix}/a.bin"]


def test_stop_ends_the_process_group_and_removes_the_folder() -> None:
    server = S3Server(stop_timeout=5)
    with server:
        folder, pid = server.folder, server.pid
        assert (folder / "data").is_dir() and server.running()
        server.create_bucket("scratch")
        assert os.getpgid(pid) == pid  # its own group, so stop() reaches everything weed started
    assert not server.running()
    assert not folder.exists()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


def test_start_failure_raises_with_the_log() -> None:
    server = S3Server(weed="/bin/false", startup_timeout=10)
    with pytest.raises(S3ServerError, match="exited with code 1"):
        server.start()
    assert server.folder is None and not server.running()
