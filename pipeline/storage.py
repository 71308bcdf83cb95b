"""Where files live and how to reach them: S3 endpoint and credentials, URIs, whole-file reads and atomic writes, and
what the store's refusals and silences mean (`storage_error`).

`Storage` is resolved once per run on the driver and shipped to every Ray worker; its credentials never print
(docs/design.md, "Storage and credentials").
"""

# No postponed annotations here: the command line subclasses the settings below and reads its field types
# in the subclass's module (jobs.command).

import contextlib
import datetime
import errno
import io
import os
import posixpath
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import stringify_path

from vitmae.errors import InvalidInput, NotFound, UserError, one_line
from vitmae.folder import Folder, is_hub_id

S3_SCHEMES = ("s3://", "s3a://")

# What a person checks when the store refuses or does not answer, each written once, here: the job's endpoint flag
# and the AWS SDK's own variables.
ENDPOINT_SETTING = "--storage.endpoint or AWS_ENDPOINT_URL"
CREDENTIAL_SETTINGS = "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN"
PERMISSION_SETTING = "the policy of the key in AWS_ACCESS_KEY_ID"
# S3 error codes (botocore's `Error.Code`, the <Code> that object_store quotes) of refused credentials, and what each
# means; "NoCredentials" stands for botocore's NoCredentialsError, which no server sends.
CREDENTIAL_CODES = {
    "InvalidAccessKeyId": "no such access key",
    "SignatureDoesNotMatch": "the secret key does not match the access key",
    "ExpiredToken": "the session token has expired",
    "InvalidToken": "the session token is malformed or invalid",
    "TokenRefreshRequired": "the session token must be refreshed",
    "NoCredentials": "no credentials were found",
}
PERMISSION_CODES = ("AccessDenied", "AllAccessDisabled", "AccountProblem")
NO_BUCKET_CODE = "NoSuchBucket"
_CODE = re.compile(r"<Code>(\w+)</Code>")
# object_store's words for a 401 and a 403 (the latter with or without an S3 error code in the text).
_UNAUTHENTICATED_TEXT = "lacked valid authentication credentials"
_FORBIDDEN_TEXT = "lacked the necessary privileges"
_DECORATION = re.compile(r"\x1b\[[0-9;]*m|↳")  # object_store's colours and arrows between the levels of its texts
_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EPIPE,
}
# What object_store (deltalake) and the HTTP clients say of failures to reach the store; their types vary by version.
_TRANSIENT_TEXT = (
    "error sending request",
    "connection refused",
    "connection reset",
    "timed out",
    "timeout",
    "could not connect to the endpoint",
    "serviceunavailable",
    "service unavailable",
    "slowdown",
    "slow down",
    "internalerror",
    "broken pipe",
    "connection closed",
    "server disconnected",
)


# Every request to S3 gives up after these, so that a hung server is an outage to wait out (`pipeline.retry`), not a
# read that never returns.
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30


class AccessDenied(PermissionError):
    """The store refused the credentials (a wrong key or secret, an expired session token) or the permission for what
    was asked: the settings or the key's policy have to change (command lines exit with status 77)."""


class StorageOutage(OSError):
    """The store stayed unreachable for longer than the run waits (`pipeline.retry.retrying` gave up), or once where
    nothing waits (`StorageAttemptUnreachable`): command lines exit with status 75."""


class StorageAttemptUnreachable(StorageOutage):
    """One attempt could not reach the store: `pipeline.retry.retrying` waits it out; uncaught (where nothing waits
    outages out, as before a run starts), it is an outage too, its message naming the endpoint and the setting."""


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


def transient(err: BaseException) -> bool:
    """Whether `err` says the store could not be reached (for now), rather than that the operation is wrong."""
    if isinstance(err, StorageAttemptUnreachable):
        return True
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    if isinstance(err, OSError) and err.errno in _ERRNOS:
        return True
    name = type(err).__name__
    if type(err).__module__.startswith(("botocore", "aiohttp", "urllib3")) and any(
        word in name for word in ("Connect", "Timeout", "Disconnected")
    ):
        return True
    text = str(err).lower()
    return any(marker in text for marker in _TRANSIENT_TEXT)


def storage_error(err: BaseException, uri: str, storage: Storage, action: str = "access") -> BaseException:
    """What a failure on `uri` means to the person who runs the job: AccessDenied (credentials or permission
    refused), NotFound (no such bucket) or StorageAttemptUnreachable (no answer), as one line naming `uri` and the
    setting to check; any other failure as it is.

    Reads what s3fs and botocore (S3 error codes, NoCredentialsError, connection errors), fsspec (PermissionError) and
    deltalake (object_store's texts) raise. Messages quote the S3 error code, never the server's text (a refused
    signature's can quote the request) nor a credential.

    Args:
        action: what was asked of the store ("list", "read", "write"), for the message.
    """
    if isinstance(err, (UserError, AccessDenied, StorageOutage)) or not _from_store(err):
        return err
    if not str(uri).startswith(S3_SCHEMES):
        if isinstance(err, PermissionError):
            return AccessDenied(
                f"{uri}: permission denied to {action} ({one_line(err)}); check the permissions of its files"
            )
        return err
    code, text = _error_code(err), str(err)
    if code in CREDENTIAL_CODES or (code is None and _UNAUTHENTICATED_TEXT in text):
        reason = f"{code}: {CREDENTIAL_CODES[code]}" if code else "401 Unauthorized"
        return AccessDenied(f"{uri}: the store refused the credentials ({reason}); check {CREDENTIAL_SETTINGS}")
    if code in PERMISSION_CODES:
        return AccessDenied(f"{uri}: the store refused the permission to {action} ({code}); check {PERMISSION_SETTING}")
    if (
        isinstance(err, PermissionError) or _FORBIDDEN_TEXT in text
    ):  # a 403 of no known code, or none (HEAD has no body)
        return AccessDenied(
            f"{uri}: the store refused to {action} it ({code or '403 Forbidden'}); check "
            f"{CREDENTIAL_SETTINGS}, and {PERMISSION_SETTING}"
        )
    endpoint = storage.endpoint or "the AWS default endpoint"
    if code == NO_BUCKET_CODE:
        bucket = str(uri).split("://", 1)[1].split("/", 1)[0]
        return NotFound(f"{uri}: no such bucket {bucket!r} at {endpoint}; check the URI and {ENDPOINT_SETTING}")
    if transient(err):
        return StorageAttemptUnreachable(
            f"{uri}: cannot reach the storage at {endpoint} ({_innermost(err)}); check {ENDPOINT_SETTING}"
        )
    return err


@contextlib.contextmanager
def explained(uri: str, storage: Storage, action: str = "access") -> Iterator[None]:
    """Raises what `storage_error` makes of a failure inside the block (the failure as its cause)."""
    try:
        yield
    except Exception as err:
        found = storage_error(err, uri, storage, action)
        if found is err:
            raise
        raise found from err


def _from_store(err: BaseException) -> bool:
    return isinstance(err, OSError) or type(err).__module__.split(".")[0] in (
        "botocore",
        "aiobotocore",
        "aiohttp",
        "urllib3",
    )


def _error_code(err: BaseException | None) -> str | None:
    """The S3 error code that `err`, or what it was raised from, carries: botocore's ClientError (which s3fs keeps as
    the cause of its PermissionError or OSError) has it, object_store quotes the XML answer. None for answers without
    one (a HEAD request's) and for failures that are no answer."""
    for _ in range(8):
        if err is None:
            return None
        response = getattr(err, "response", None)
        code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
        if code and not code.isdigit():  # a bodiless answer's code is its HTTP status
            return code
        if type(err).__name__ == "NoCredentialsError":
            return "NoCredentials"
        found = _CODE.search(str(err))
        if found:
            return found.group(1)
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    return None


def _innermost(err: BaseException) -> str:
    """The last line of `err`'s text: object_store's texts go from the operation down to the innermost cause."""
    lines = [_DECORATION.sub("", line).strip() for line in str(err).splitlines()]
    return next((line[:200] for line in reversed(lines) if line), type(err).__name__)


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


def read_error(err: Exception) -> str:
    """A one-line reason for a failed read, for the errors table."""
    if isinstance(err, FileNotFoundError):
        return "object not found (deleted or moved after listing)"
    if isinstance(err, PermissionError):
        return "permission denied reading the object"
    return f"could not read the object: {type(err).__name__} {one_line(err, default='')}".strip()


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
