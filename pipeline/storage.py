"""Where files live and how to reach them: S3 endpoint and credentials, URIs, whole-file reads and atomic writes;
what the store's refusals and silences mean is `pipeline.storage_errors`.

`Storage` is resolved once per run on the driver and shipped to every Ray worker; its credentials never print
(docs/design.md, "Storage and credentials").
"""

# No postponed annotations here: the command line subclasses the settings below and reads its field types
# in the subclass's module (jobs.command).

import datetime
import io
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import stringify_path

from pipeline.storage_errors import S3_SCHEMES, explained
from vitmae.errors import InvalidInput, NotFound, one_line
from vitmae.folder import Folder, is_hub_id

# Every request to S3 gives up after these, so that a hung server is an outage to wait out (`pipeline.retry`), not a
# read that never returns.
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30


@dataclass(frozen=True)
class StorageConfig:
    """Where S3 is, and how long an outage is waited out.

    Credentials come from the AWS_* variables or the AWS SDK's own chain, never from settings.
    """

    endpoint: str | None = None
    """S3 endpoint URL, for stores other than AWS (default: AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, else AWS's)"""
    retry_seconds: float = 120.0
    """once a job has started, wait out a storage outage this long before failing (0: fail at once)"""

    def __post_init__(self) -> None:
        if not self.retry_seconds >= 0:
            raise InvalidInput(f"retry_seconds must be at least 0, got {self.retry_seconds}")


@dataclass(frozen=True)
class RunLocation:
    """The run folder a command reads: an embedding job's output, local or on S3."""

    run: str
    """the embedding job's output folder, local or s3://"""
    storage: StorageConfig = StorageConfig()


class Storage:
    """The S3 endpoint and credentials of a run (nothing is needed for local paths), and how long an outage of the
    storage is waited out once a run has started (`pipeline.retry`)."""

    __slots__ = ("endpoint", "region", "retry_seconds", "_key", "_secret", "_token")

    def __init__(
        self,
        endpoint: str | None = None,
        key: str | None = None,
        secret: str | None = None,
        token: str | None = None,
        region: str | None = None,
        retry_seconds: float = 120.0,
    ) -> None:
        self.endpoint = endpoint  # S3 endpoint URL; None: the AWS SDK's default
        self.region = region  # S3 region; None: the SDK's default
        self.retry_seconds = retry_seconds  # an outage longer than this fails the operation; 0: no retry
        self._key, self._secret, self._token = key, secret, token  # None: the AWS SDK's own chain (profiles, roles)

    @classmethod
    def from_environment(cls, endpoint: str | None = None, retry_seconds: float = 120.0) -> "Storage":
        """The flag's endpoint (else AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL), the region, and the AWS_* keys when
        both are set.

        The keys are carried explicitly so that Ray workers on other machines use the driver's settings.
        """
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
        key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not (key and secret):
            return cls(endpoint, region=region, retry_seconds=retry_seconds)
        # Temporary credentials (STS, SSO) need the session token with the keys.
        return cls(endpoint, key, secret, os.environ.get("AWS_SESSION_TOKEN") or None, region, retry_seconds)

    @classmethod
    def from_config(cls, config: StorageConfig) -> "Storage":
        """`from_environment` with a job's storage settings."""
        return cls.from_environment(config.endpoint, config.retry_seconds)

    def options(self, uri: str) -> dict[str, Any]:
        """fsspec options for `uri`: none for local paths, endpoint and keys for s3://."""
        if not str(uri).startswith(S3_SCHEMES):
            return {}
        client: dict[str, Any] = {}
        if self.endpoint:
            client["endpoint_url"] = self.endpoint
        if self.region:
            client["region_name"] = self.region
        options: dict[str, Any] = {
            "config_kwargs": {"connect_timeout": CONNECT_TIMEOUT_S, "read_timeout": READ_TIMEOUT_S},
            **({"client_kwargs": client} if client else {}),
        }
        if self._key:
            options.update(key=self._key, secret=self._secret)
            if self._token:
                options["token"] = self._token
        return options

    def delta_options(self, uri: str) -> dict[str, str]:
        """`deltalake` (object_store) options for `uri`: none for local paths."""
        if not str(uri).startswith(S3_SCHEMES):
            return {}
        options = {
            "AWS_REGION": self.region or "us-east-1",  # object_store needs one; S3 redirects to the right one
            "connect_timeout": f"{CONNECT_TIMEOUT_S}s",
            "timeout": f"{READ_TIMEOUT_S}s",
        }
        if self.endpoint:
            options["AWS_ENDPOINT_URL"] = self.endpoint
            if self.endpoint.startswith("http://"):
                options["AWS_ALLOW_HTTP"] = "true"
        if self._key:
            options.update(AWS_ACCESS_KEY_ID=self._key, AWS_SECRET_ACCESS_KEY=self._secret)
            if self._token:
                options["AWS_SESSION_TOKEN"] = self._token
        return options

    def arrow_filesystem(self, uri: str) -> tuple[pafs.FileSystem, str]:
        """A pyarrow filesystem and the path of `uri` on it, for reading Parquet and Delta tables with pyarrow."""
        fs, path = fsspec.core.url_to_fs(stringify_path(uri), **self.options(uri))
        if isinstance(fs, LocalFileSystem):
            return pafs.LocalFileSystem(), path
        return pafs.PyFileSystem(_FSSpecHandler(fs)), path

    def __repr__(self) -> str:
        return f"Storage(endpoint={self.endpoint!r}, credentials={'set' if self._key else 'from the AWS SDK'})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Storage) and all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    def __hash__(self) -> int:
        return hash(self.endpoint)

    def __getstate__(self) -> tuple:
        return tuple(getattr(self, s) for s in self.__slots__)

    def __setstate__(self, state: tuple) -> None:
        for name, value in zip(self.__slots__, state):
            setattr(self, name, value)


class _FSSpecHandler(pafs.FSSpecHandler):
    """pyarrow's handler of an fsspec filesystem, except that opening a file to read asks fsspec's `info`, which raises
    what went wrong, where pyarrow's asks `isfile`, which answers False for any failure: a store that cannot be
    reached read as a missing file, which no retry waits out."""

    def open_input_stream(self, path: str) -> pa.PythonFile:
        return self.open_input_file(path)

    def open_input_file(self, path: str) -> pa.PythonFile:
        if self.fs.info(path)["type"] != "file":
            raise FileNotFoundError(path)
        return pa.PythonFile(self.fs.open(path, mode="rb"), mode="r")


def absolute_uri(uri: str, may_be_hub_id: bool = False) -> str:
    """`uri` with a local path made absolute: Ray's workers run in other folders than the driver.

    URIs stay as they are, and so does a model name that is no local path but has a hub id's shape when
    `may_be_hub_id` (`vitmae.folder.is_hub_id`, the rule by which checkpoints are looked up on the hub).
    """
    if "://" in uri or (may_be_hub_id and is_hub_id(uri)):
        return uri
    return os.path.abspath(uri)


def listed_uri(path: str) -> str:
    """A path as the listing writes it, and so as the tables hold it: with its scheme, a local path as an absolute
    file:// URI."""
    return path if "://" in path else f"file://{os.path.abspath(path)}"


def listed_mtime(info: dict[str, Any]) -> float | None:
    """An fsspec listing entry's last modification in seconds since the epoch: `mtime` (local disks), `LastModified`
    (s3fs) or `last_modified`; None where the filesystem gives none."""
    value = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    return float(value) if isinstance(value, (int, float)) else None


def listed_etag(info: dict[str, Any]) -> str:
    """An fsspec listing entry's ETag without its quotes ("" where the filesystem gives none)."""
    return (info.get("ETag") or info.get("etag") or "").strip('"')


def is_local(uri: str) -> bool:
    """A path on this machine's disks (a hub id is not: every node fetches it)."""
    return uri.startswith("file://") or os.path.isabs(uri) or os.path.exists(uri)


def folder(uri: str, storage: Storage, create: bool = False) -> Folder:
    """The folder at `uri` (no hub-id guessing, unlike checkpoints); created with `create`."""
    fs, root = fsspec.core.url_to_fs(stringify_path(uri), **storage.options(uri))
    if create:
        fs.makedirs(root, exist_ok=True)
    return Folder(fs, root, str(uri))


def probe(uri: str, storage: Storage) -> bool:
    """Whether the folder or prefix `uri` holds anything, asked so that the store's refusals are raised.

    On s3:// one listing of one key: refused credentials or permission, a missing bucket and an endpoint that does not
    answer raise AccessDenied, NotFound or StorageAttemptUnreachable naming `uri` (s3fs's `isdir` and `exists` answer
    False to some of them). Other filesystems answer `isdir`.
    """
    fs, root = fsspec.core.url_to_fs(stringify_path(uri), **storage.options(uri))
    if not str(uri).startswith(S3_SCHEMES):
        return fs.isdir(root)
    bucket, key, _ = fs.split_path(root)
    with explained(uri, storage, "list"):
        answer = fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=f"{key.rstrip('/')}/" if key else "", MaxKeys=1)
    return bool(answer.get("KeyCount") or answer.get("Contents"))


def check_writable(uri: str, storage: Storage, name: str) -> None:
    """Writes the empty object `name` into the s3:// folder `uri` and deletes it, so that a key that may not write
    there fails (AccessDenied) before a job writes anything. Local folders are not tried: that would create them."""
    if not str(uri).startswith(S3_SCHEMES):
        return
    target = folder(uri, storage)
    with explained(uri, storage, "write"):
        target.fs.pipe_file(target.path(name), b"")
        target.fs.rm_file(target.path(name))


def output_folder(uri: str, storage: Storage) -> Folder:
    """The output folder of a job, not created (the first write does that); refuses a file there, and raises what
    the store refuses (`probe`)."""
    found = folder(uri, storage)
    probe(uri, storage)
    if found.fs.isfile(found.root):
        raise InvalidInput(f"output {uri} is a file; give a folder or prefix")
    return found


def run_folder(run: str, storage: Storage) -> Folder:
    """An existing run folder; NotFound when there is none, and what the store refuses (`probe`)."""
    found = folder(run, storage)
    if not probe(run, storage):
        raise NotFound(f"{run}: no such run folder")
    return found


def read_bytes(paths: Sequence[str], storage: Storage) -> list[bytes | Exception]:
    """The bytes of each path (all on one filesystem), or the exception that reading it raised; object stores
    fetch concurrently."""
    if not len(paths):
        return []
    fs, _ = fsspec.core.url_to_fs(paths[0], **storage.options(paths[0]))
    stripped = [fsspec.core.strip_protocol(p) for p in paths]
    # Whole files, each path taken literally: `cat` would expand `[`, `*` and `?` in file names as a glob.
    return fs.cat_ranges(stripped, None, None, on_error="return")


def read_uri(uri: str, storage: Storage) -> bytes:
    """The bytes of one file or object: FileNotFoundError when it is missing, ValueError (one line) when unreadable."""
    found = read_bytes([uri], storage)[0]
    if isinstance(found, FileNotFoundError):
        raise NotFound(f"{uri}: no such file")
    if isinstance(found, Exception):
        raise InvalidInput(f"cannot read {uri}: {one_line(found)}")
    return found


def write_uri(uri: str, data: bytes, storage: Storage) -> None:
    """Writes one file so that no reader sees it half-written (temporary name and rename, or one PUT)."""
    parent, name = posixpath.split(str(uri).rstrip("/")) if "://" in str(uri) else os.path.split(os.path.abspath(uri))
    folder(parent, storage, create=True).write_bytes(name, data)


def write_parquet(target: Folder, name: str, table: pa.Table) -> int:
    """Writes `table` as the zstd-compressed Parquet file `name` of `target`, atomically; returns its size in bytes."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    target.write_bytes(name, sink.getvalue())
    return sink.tell()


def read_parquet(target: Folder, name: str) -> pa.Table:
    """The Parquet file `name` of `target`, read whole."""
    with target.fs.open(target.path(name), "rb") as f:
        return pq.read_table(f)
