"""A local S3 server (moto) for storage tests; import its fixtures into a test module.

Usage in a test module::

    from tests.conftest_s3 import s3_endpoint, s3_url  # noqa: F401  (pytest fixtures)

``s3_endpoint`` (session) starts ``moto.server.ThreadedMotoServer`` on
127.0.0.1 and a free port with dummy AWS credentials in the environment;
``s3_url`` makes a fresh, empty bucket for each test and returns
``(url, storage_options)`` for :class:`awe.storage.DataStorage`.
"""

from __future__ import annotations

import logging
import socket
import uuid

import pytest

__all__ = ["s3_endpoint", "s3_url", "free_port"]

_DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/awe-test-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/awe-test-aws-credentials",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """URL of a moto S3 server running for the whole test session."""
    import s3fs  # noqa: F401  (the test extra installs both; a missing one must fail, not skip)
    from moto import server as server_mod
    with pytest.MonkeyPatch.context() as mp:
        for name, value in _DUMMY_ENV.items():
            mp.setenv(name, value)
        mp.delenv("AWS_PROFILE", raising=False)
        mp.delenv("AWS_ENDPOINT_URL", raising=False)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log on stderr
        port = free_port()
        server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.stop()


@pytest.fixture
def s3_url(s3_endpoint):
    """A fresh bucket: ``(s3://bucket/prefix, storage_options)``."""
    import s3fs

    options = {"client_kwargs": {"endpoint_url": s3_endpoint}}
    bucket = f"awe-test-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir(bucket)
    fs.invalidate_cache()
    return f"s3://{bucket}/ds", options
