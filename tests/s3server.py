"""A local S3-compatible server for the tests: moto's `moto_server` on 127.0.0.1, on a free port,
one per test session, gone when the session is.

Without it the S3 tests are skipped with the reason; under CI=true they fail instead, since the
scale stack's tests are mandatory there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

# moto accepts any credentials; botocore insists on some being set.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "glimpse-tests",
    "AWS_SECRET_ACCESS_KEY": "glimpse-tests",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the S3 test server is required under CI=true: {reason}")
    pytest.skip(reason)


class S3Server:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def storage_url(self, bucket: str | None = None) -> str:
        """A URL of a bucket of its own (created by the store at start): tests never share one."""
        return f"s3://{bucket or 'glimpse-' + uuid.uuid4().hex[:12]}?endpoint={self.endpoint}"


def bucket_keys(storage_url: str) -> list[str]:
    """Every key in the bucket of an s3:// storage URL but the /readyz probe's, sorted; read with
    a blocking client, for the tests' synchronous helpers."""
    import boto3  # (moto's own dependency)

    from glimpse.backends.storage.s3 import S3Location

    location = S3Location.from_url(storage_url)
    client = boto3.client("s3", endpoint_url=location.endpoint, region_name="us-east-1")
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=location.bucket):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    client.close()
    return sorted(k for k in keys if not k.startswith("readyz/"))


def start_moto_server(log: Path) -> tuple[subprocess.Popen[bytes], S3Server]:
    command = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    if not Path(command).exists():
        _unavailable("moto_server is not installed (pip install 'moto[server,s3]')")
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [command, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _unavailable(f"moto_server exited with {process.returncode} (see {log})")
        try:
            httpx.get(endpoint + "/moto-api/", timeout=1)
            return process, S3Server(endpoint)
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    process.wait()
    _unavailable(f"moto_server did not answer on {endpoint} within 30 s (see {log})")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    for name, value in FAKE_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    given = os.environ.get("GLIMPSE_TEST_S3_ENDPOINT")
    if given:  # one that .ci/run started
        try:
            httpx.get(given + "/moto-api/", timeout=5)
        except httpx.HTTPError as exc:
            _unavailable(f"GLIMPSE_TEST_S3_ENDPOINT={given} does not answer: {exc}")
        yield S3Server(given)
        return
    process, server = start_moto_server(tmp_path_factory.mktemp("moto") / "moto_server.log")
    try:
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
