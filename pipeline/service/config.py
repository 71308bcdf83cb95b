"""`ServeConfig`: what `vitmae serve` was asked for."""

from __future__ import annotations

from dataclasses import dataclass, field

MB = 1 << 20
API_PREFIX = "/api"  # every route of the API, and only those, is under it (and behind the token)


@dataclass(frozen=True)
class ServeConfig:
    """One service over one run."""

    run: str  # the embedding job's --output folder, local or s3://
    host: str = "127.0.0.1"  # loopback by default: nothing outside this machine reaches the service unless asked
    port: int = 8000
    token: str | None = field(default=None, repr=False)  # with a token, every /api request needs `Bearer <token>`
    max_upload_mb: float = 20.0  # larger request bodies (query images) get 413
    check_seconds: float = 5.0  # how often the run is checked for a new table version and index
    load_model: bool = True  # False: no search by image, and none of the model's memory
    access_log: bool = True  # a log line per request (uvicorn's)
    s3_endpoint: str | None = None  # S3 endpoint URL (None: AWS_ENDPOINT_URL)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in 0..65535, got {self.port}")
        if self.max_upload_mb <= 0:
            raise ValueError(f"--max-upload-mb must be above 0, got {self.max_upload_mb}")
        if self.check_seconds <= 0:
            raise ValueError(f"--check-seconds must be above 0, got {self.check_seconds}")
        if self.token is not None and not self.token.strip():
            raise ValueError("--token must not be empty")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)
