"""What the store's answers mean: refused credentials or permission, a missing bucket, no answer at all
(`storage_error`, `transient`), and a failed read as one line for the errors table (`read_error`).

Below `pipeline.storage`, which raises them (`explained`); `pipeline.retry` waits out what is `transient`.
"""

from __future__ import annotations

import contextlib
import errno
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from vitmae.errors import NotFound, UserError, one_line

if TYPE_CHECKING:
    from pipeline.storage import Storage


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


class AccessDenied(PermissionError):
    """The store refused the credentials (a wrong key or secret, an expired session token) or the permission for what
    was asked: the settings or the key's policy have to change (command lines exit with status 77)."""


class StorageOutage(OSError):
    """The store stayed unreachable for longer than the run waits (`pipeline.retry.retrying` gave up), or once where
    nothing waits (`StorageAttemptUnreachable`): command lines exit with status 75."""


class StorageAttemptUnreachable(StorageOutage):
    """One attempt could not reach the store: `pipeline.retry.retrying` waits it out; uncaught (where nothing waits
    outages out, as before a run starts), it is an outage too, its message naming the endpoint and the setting."""


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


def read_error(err: Exception) -> str:
    """A one-line reason for a failed read, for the errors table."""
    if isinstance(err, FileNotFoundError):
        return "object not found (deleted or moved after listing)"
    if isinstance(err, PermissionError):
        return "permission denied reading the object"
    return f"could not read the object: {type(err).__name__} {one_line(err, default='')}".strip()
