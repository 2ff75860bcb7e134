"""AWS credentials as a Prefect block, handing out ready S3 clients.

Our own block rather than prefect-aws's `AwsCredentials`: prefect-aws 0.7.x depends on
aiobotocore, which pins botocore to a narrow older range (0.7.12 would downgrade the locked
boto3/botocore 1.44.5 to 1.43.117 and add aiohttp and eight other packages), and its session
token is a plain string that shows in reprs and in the block's JSON. The shape follows it (same
field names, `get_boto3_session()`, `get_s3_client()`), so moving to it later is a rename; the
block type slug differs (`docbatch-aws-credentials`) because a Prefect server ships prefect-aws's
`aws-credentials` block type already, and registering ours under that slug would replace its
schema there.
"""

from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING, Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

if TYPE_CHECKING:
    import boto3

# Attempts per request, the first included. botocore's 'standard' mode retries throttling
# (SlowDown, 429), 5xx answers, connection resets and timeouts with exponential backoff and
# full jitter (for 4 attempts at most 1 + 2 + 4 s of sleep after throttling, 50 + 100 + 200 ms
# after other errors); what still fails after that is left to the caller (a document's
# transient `backend` error, which Prefect's task retries take again later).
MAX_ATTEMPTS = 4
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
# One connection per extraction slot (max_concurrency goes up to 64); botocore's default is 10.
MAX_POOL_CONNECTIONS = 64

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    if isinstance(value, SecretStr) and not value.get_secret_value().strip():
        return None
    return value


class AwsCredentials(Block):
    """Credentials for AWS (or an S3-compatible store such as MinIO).

    Every field may stay empty: boto3's default chain then applies (environment variables
    `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, `AWS_PROFILE`, the shared
    credentials and config files, container and instance roles). The secret fields are `SecretStr`:
    masked in reprs, logs, the Prefect UI and the block's JSON.

    Example:
        ```python
        from blocks.aws import AwsCredentials

        AwsCredentials(aws_access_key_id="AKIA...", aws_secret_access_key="...").save("prod")
        s3 = AwsCredentials.load("prod").get_s3_client(region_name="eu-west-1")
        ```
    """

    _block_type_name: ClassVar[str] = "docbatch AWS Credentials"
    _block_type_slug: ClassVar[str] = "docbatch-aws-credentials"
    _description: ClassVar[str] = "Access keys, a profile or nothing (boto3's default chain) for S3 sources and destinations."

    aws_access_key_id: str | None = Field(
        default=None, title="AWS Access Key ID",
        description="Access key ID; empty uses boto3's default chain (environment, profile, instance role).",
    )
    aws_secret_access_key: SecretStr | None = Field(
        default=None, title="AWS Secret Access Key",
        description="Secret access key belonging to the access key ID; stored encrypted and never shown.",
    )
    aws_session_token: SecretStr | None = Field(
        default=None, title="AWS Session Token",
        description="Session token, only for temporary credentials (STS); stored encrypted and never shown.",
    )
    profile_name: str | None = Field(
        default=None, description="Named profile from the worker's ~/.aws/config and ~/.aws/credentials.",
    )
    region_name: str | None = Field(
        default=None, description="Default AWS region, e.g. 'eu-west-1'; a source's or destination's own region wins.",
    )

    @field_validator(
        "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "profile_name", "region_name", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """An empty form field means 'not set', so the default chain applies."""
        return _blank_to_none(value)

    def get_boto3_session(self) -> boto3.Session:
        """A boto3 session with these credentials (or the default chain where fields are empty).

        Raises ValueError for a secret without its key ID (or the reverse), and botocore's
        `ProfileNotFound` for an unknown profile; no message carries a secret.
        """
        import boto3

        secret = self.aws_secret_access_key.get_secret_value() if self.aws_secret_access_key else None
        token = self.aws_session_token.get_secret_value() if self.aws_session_token else None
        if bool(self.aws_access_key_id) != bool(secret):
            missing = "aws_secret_access_key" if self.aws_access_key_id else "aws_access_key_id"
            raise ValueError(f"AWS credentials are incomplete: {missing} is empty (set both keys, or neither to use the default chain)")
        return boto3.Session(
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=secret,
            aws_session_token=token,
            profile_name=self.profile_name,
            region_name=self.region_name,
        )

    def get_s3_client(
        self,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        read_timeout: float = READ_TIMEOUT_S,
    ) -> Any:
        """An S3 client, shared by every caller with the same settings (boto3 clients are thread-safe).

        `region_name` overrides the block's region; `endpoint_url` points at an S3-compatible
        store (MinIO, Ceph, LocalStack), which then gets path-style addressing (`host/bucket/key`:
        such stores rarely have a DNS name per bucket) and checksums only where S3 requires them
        (some stores reject the CRC32 headers botocore sends by default).
        """
        region = _blank_to_none(region_name) or self.region_name
        endpoint = _blank_to_none(endpoint_url)
        settings = (
            self.aws_access_key_id, self._secret(self.aws_secret_access_key), self._secret(self.aws_session_token),
            self.profile_name, region, endpoint, max_attempts, connect_timeout, read_timeout,
        )
        # The cache is keyed by a hash, so no secret sits in a dictionary key.
        key = hashlib.sha256(repr(settings).encode()).hexdigest()
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                from botocore.config import Config

                options: dict[str, Any] = {
                    "retries": {"mode": "standard", "total_max_attempts": max_attempts},  # 'max_attempts' would count retries only
                    "connect_timeout": connect_timeout,
                    "read_timeout": read_timeout,
                    "max_pool_connections": MAX_POOL_CONNECTIONS,
                    "user_agent_extra": "docbatch",
                }
                if endpoint:
                    options["s3"] = {"addressing_style": "path"}
                    options["request_checksum_calculation"] = "when_required"
                    options["response_checksum_validation"] = "when_required"
                client = self.get_boto3_session().client(
                    "s3", region_name=region, endpoint_url=endpoint, config=Config(**options)
                )
                _clients[key] = client
        return client

    @staticmethod
    def _secret(value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value is not None else None
