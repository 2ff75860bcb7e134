"""A real S3 API for tests: moto's server on a free 127.0.0.1 port, for the whole session.

    from tests.s3_server import s3_endpoint  # noqa: F401 - a fixture, used by name

    def test_something(s3_endpoint: str) -> None:
        S3Source(bucket="b", endpoint_url=s3_endpoint, credentials=...)

Requests go over HTTP through boto3 exactly as against AWS or MinIO. Moto accepts any
credentials until `iam_authentication(s3_endpoint)` turns its IAM checks on (keys must then
exist in moto's IAM, signatures must match, and the user's policies decide access).
"""

from __future__ import annotations

import contextlib
import json
import logging
import urllib.request
from collections.abc import Iterator

import pytest

REGION = "us-east-1"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a moto S3 server (thread in this process), stopped at the end of the session."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # port 0: the OS picks a free one
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def _reset_auth(endpoint: str, value: str) -> str:
    request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=value.encode(), method="POST", headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]


@contextlib.contextmanager
def iam_authentication(endpoint: str) -> Iterator[None]:
    """Moto checks every request's access key, signature and IAM policies inside this block.

    It is a server-wide switch (moto's INITIAL_NO_AUTH_ACTION_COUNT, set to 0 here): keep the
    block short, and create the IAM users and buckets it needs before entering it.
    """
    previous = _reset_auth(endpoint, "0")
    try:
        yield
    finally:
        _reset_auth(endpoint, previous)
