"""`ServeConfig`: what `vitmae serve` was asked for."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import SecretStr

from pipeline.storage import RunLocation
from vitmae.errors import InvalidInput

MB = 1 << 20
API_PREFIX = "/api"  # every route of the API, and only those, is under it (and behind the token)
SECRET_MASK = str(SecretStr("x"))  # what a printed setting shows in place of a secret


@dataclass(frozen=True)
class ServeConfig(RunLocation):
    """One service over one run (its index and, for search by image, its model)."""

    host: str = "127.0.0.1"
    """address to bind: this machine only by default; 0.0.0.0 exposes the service, and then give it a token"""
    port: int = 8000
    """port to listen on (0: any free one)"""
    token: SecretStr | None = field(default=None, repr=False)
    """require `Authorization: Bearer TOKEN` on every /api request and /metrics (best from the environment variable
    VITMAE_SERVE_TOKEN, out of the process list; never printed)"""
    max_upload_mb: float = 20.0
    """largest query image accepted, in MB (larger bodies get 413)"""
    check_seconds: float = 5.0
    """how often the run is checked for a new table version and index"""
    load_model: bool = True
    """load the run's model for search by image (false: no search by image, and none of the model's memory)"""
    access_log: bool = True
    """log a line per request (uvicorn's)"""

    def __post_init__(self) -> None:
        if isinstance(self.token, str):
            object.__setattr__(self, "token", SecretStr(self.token))
        if not 0 <= self.port <= 65535:
            raise InvalidInput(f"port must be in 0..65535, got {self.port}")
        if self.max_upload_mb <= 0:
            raise InvalidInput(f"max_upload_mb must be above 0, got {self.max_upload_mb}")
        if self.check_seconds <= 0:
            raise InvalidInput(f"check_seconds must be above 0, got {self.check_seconds}")
        if self.token is not None and not self.secret.strip():
            raise InvalidInput("token must not be empty")
        if self.secret == SECRET_MASK:
            raise InvalidInput(
                "token is the mask that --print_config writes in place of the token: give the token "
                "itself with VITMAE_SERVE_TOKEN or --token"
            )

    @property
    def secret(self) -> str | None:
        """The token itself, or None."""
        return self.token.get_secret_value() if self.token is not None else None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)
