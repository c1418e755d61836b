"""Shared fixtures: a fresh embedded Glimpse (SQLite file + local storage) per test, driven
through the real app over ASGI, with the worker run in-process on demand."""

from __future__ import annotations

import contextlib
import faulthandler
import io
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
from PIL import Image

from glimpse.app import create_app
from glimpse.config import Settings
from glimpse.container import Container
from glimpse.worker import drain
from tests.broker import broker  # noqa: F401  (the RabbitMQ vhost of the session)
from tests.clips import Clip, make_clip
from tests.databases import PostgresDatabases, chosen_database, migrate
from tests.redis_service import redis_url  # noqa: F401  (a key prefix of a test's own)
from tests.s3server import bucket_keys, s3_server  # noqa: F401  (the S3 test server)

# No time limit on a Hypothesis example: a loaded machine (CI beside other work) must not fail a
# test that asserts nothing about time (STYLE: timing belongs in bench/, never in tests).
hypothesis.settings.register_profile("glimpse", deadline=None)
hypothesis.settings.load_profile("glimpse")


def pytest_configure(config: pytest.Config) -> None:
    # A test process that dies without a word ("worker 'gw1' crashed", no "Fatal Python error")
    # was killed, or stopped by pytest-timeout (see faulthandler_timeout in pyproject.toml): a
    # SIGTERM at least leaves every thread's stack in the run's output, as a crash does. (On a
    # copy of the real stderr: an xdist worker's sys.stderr is not the run's output.)
    faulthandler.register(signal.SIGTERM, file=os.dup(2), all_threads=True, chain=True)


# Test processes that went down, as the run's last lines say it (CI shows only the tail of the
# output): a process killed by a signal has a negative exit status (-9: SIGKILL, which nothing
# inside the process can report), and the kernel says why it killed one (the OOM killer).
_WORKERS_DOWN: list[str] = []


def pytest_testnodedown(node: Any, error: object) -> None:
    if error is None:
        return
    status: int | None = None
    popen = getattr(getattr(getattr(node, "gateway", None), "_io", None), "popen", None)
    with contextlib.suppress(Exception):
        status = popen.wait(timeout=10) if popen is not None else None
    _WORKERS_DOWN.append(f"{getattr(node.gateway, 'id', node)}: {error} (exit status {status})")


_CRASH_RERUNS = 1
_crashes: dict[str, int] = {}


def pytest_handlecrashitem(crashitem: str, report: pytest.TestReport, sched: Any) -> None:
    # A test whose process died under it (twice in CI, test_hostile_images' impossible box,
    # never reproduced in hundreds of runs here, nothing in the test or the app able to kill
    # it) runs once more in a fresh process, and fails if that one dies too. A test that
    # fails is never run again: only a dead process is. The run's last lines still say which
    # process went down and how (above), so a crash never passes unseen.
    _crashes[crashitem] = _crashes.get(crashitem, 0) + 1
    if _crashes[crashitem] <= _CRASH_RERUNS:
        sched.mark_test_pending(crashitem)
        report.outcome = "rerun"  # type: ignore[assignment]


def pytest_report_teststatus(report: pytest.TestReport) -> tuple[str, str, str] | None:
    if report.outcome == "rerun":  # type: ignore[comparison-overlap]
        return "rerun", "R", "RERUN (its process died)"
    return None


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _WORKERS_DOWN:
        return
    terminalreporter.section("test processes that went down")
    for line in _WORKERS_DOWN:
        terminalreporter.write_line(line)
    with contextlib.suppress(Exception):
        kernel = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10).stdout
        said = [
            line
            for line in kernel.splitlines()
            if any(word in line.lower() for word in ("killed process", "out of memory", "segfault"))
        ]
        terminalreporter.write_line("kernel: " + (" | ".join(said[-10:]) or "nothing killed"))


# The test photographs live in the repo (tests/data/README.md says where each comes from).
TESTDATA = Path(__file__).resolve().parent / "data"


def testdata(relative: str) -> Path:
    """The test photograph at `relative` under tests/data/; a missing one is an error that names
    it, never a test that silently runs on nothing (or a parametrised case that vanishes)."""
    path = TESTDATA / relative
    if not path.is_file():
        raise FileNotFoundError(
            f"test photograph {relative!r} is missing: expected at {path} "
            "(tests/data/ is part of the repository; see tests/data/README.md)"
        )
    return path


testdata.__test__ = False  # type: ignore[attr-defined]  # a helper, though its name starts with "test"


# The photographs that parametrised tests run on, named one by one: a glob of a missing or
# emptied folder would make their cases vanish without a word.
ORIENTATION_PHOTOS = [
    f"orientation/{shape}_{n}.jpg" for shape in ("Landscape", "Portrait") for n in range(9)
]
CAMERA_PHOTOS = [
    "camera/DSCN0010.jpg",
    "camera/DSCN0021.jpg",
    "camera/DSCN0025.jpg",
    "camera/canon_hdr_YES.jpg",
    "camera/iphone_hdr_YES.jpg",
]
LARGE_JPEGS = ["large/Kleiber_by_Lukas_Baubkus.jpg", "large/string.jpg"]
HEIC_PHOTOS = ["heic/IMG_5195.HEIC", "heic/iphone_13_pro_max.HEIC"]


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    databases = PostgresDatabases()
    yield databases
    databases.close()


# The stacks a test can run on: the embedded default (SQLite, the local disk, the SQL queue and
# feed store) and the whole scale stack (PostgreSQL, S3, Redis and RabbitMQ).
STACKS = ("embedded", "scale")


def chosen_stacks() -> tuple[str, ...]:
    """The stacks the API tests run on (tests/api/conftest.py): each in turn, or the one that
    GLIMPSE_TEST_STACK names (`embedded` or `scale`; `both` is the default)."""
    value = os.environ.get("GLIMPSE_TEST_STACK", "both").lower()
    if value == "both":
        return STACKS
    if value not in STACKS:
        raise ValueError(f"GLIMPSE_TEST_STACK must be one of {(*STACKS, 'both')}, not {value!r}")
    return (value,)


@pytest.fixture
def stack_kind(request: pytest.FixtureRequest) -> str:
    """The stack the test runs on: its parameter (every API test runs on each stack), else the
    scale stack under GLIMPSE_TEST_STACK=scale, else the embedded default. A test marked
    `embedded` is about the embedded default itself, and keeps it whatever the switches say."""
    if request.node.get_closest_marker("embedded") is not None:
        return "embedded"
    param = getattr(request, "param", None)
    if param is not None:
        return str(param)
    return "scale" if os.environ.get("GLIMPSE_TEST_STACK") == "scale" else "embedded"


@pytest.fixture
def database(request: pytest.FixtureRequest, stack_kind: str) -> str:
    """Which database the test runs on: GLIMPSE_TEST_DATABASE (by default SQLite on the
    embedded stack, PostgreSQL on the scale stack), or each in turn for a test marked
    @ON_EVERY_DATABASE (tests/databases.py). A test marked `embedded` keeps SQLite."""
    if request.node.get_closest_marker("embedded") is not None:
        return "sqlite"
    return str(getattr(request, "param", None) or chosen_database(stack_kind))


@pytest.fixture
def database_url(database: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """Empty for the embedded SQLite file; else a fresh migrated PostgreSQL database."""
    if database != "postgresql":
        yield ""
        return
    databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
    url = databases.fresh()
    yield url
    databases.drop(url)


@pytest.fixture
def settings(
    tmp_path: Path, request: pytest.FixtureRequest, stack_kind: str, database_url: str
) -> Settings:
    """Fresh settings under tmp_path; a test changes some by indirect parametrisation
    (`@pytest.mark.parametrize("settings", [{"max_image_bytes": 1000}], indirect=True)`)."""
    # GLIMPSE_TEST_STORAGE=s3 runs the same tests over an S3 bucket of their own (moto_server),
    # GLIMPSE_TEST_CACHE=redis with feeds and budgets in Redis, GLIMPSE_TEST_QUEUE=rabbitmq with
    # jobs delivered by RabbitMQ; the scale stack does all three, on PostgreSQL too
    # (tests/databases.py), each test on its own database, bucket, key prefix and queue prefix.
    scale = stack_kind == "scale"
    backends: dict[str, str] = {}
    # A test marked `embedded` keeps every embedded backend (its database: see `database`).
    embedded = request.node.get_closest_marker("embedded") is not None
    local_disk = request.node.get_closest_marker("local_disk") is not None
    if (scale or os.environ.get("GLIMPSE_TEST_STORAGE") == "s3") and not (local_disk or embedded):
        backends["storage_url"] = request.getfixturevalue("s3_server").storage_url()
    if (scale or os.environ.get("GLIMPSE_TEST_CACHE") == "redis") and not embedded:
        backends["cache_url"] = request.getfixturevalue("redis_url")
    if (scale or os.environ.get("GLIMPSE_TEST_QUEUE") == "rabbitmq") and not embedded:
        # The session's queue names (a set of quorum queues per test would pile up in the
        # broker, thousands in a run, and slow it to a halt); jobs of earlier tests delivered
        # here find no row of this test's database and are dropped.
        backends["queue_url"] = request.getfixturevalue("broker").url()
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        secret_key="test-secret",
        media_gc_delay_seconds=0,
        job_retry_base_seconds=0,
        job_retry_max_seconds=0,
        worker_poll_seconds=0.01,
        # A sign-up hashes and a sign-in verifies: at the production cost (0.12 s each) they
        # were most of many tests' time. tests/api/test_sign_in.py checks the cost is applied.
        password_hash_time_cost=1,
        password_hash_memory_kib=1024,
        # Tests look at the origin right after changing who may see a post.
        origin_cache_ttl_seconds=0,
        # ... and at the feed right after changing the graph.
        feed_viewer_memo_seconds=0,
        rate_limits="off",  # tests make many requests; throttling tests set their budgets
        # Most tests count the jobs, variants and files of the upload pipeline itself; the AVIF
        # copies that follow a ready post are switched on by the tests about them
        # (tests/api/test_avif.py), with AVIF_ON.
        avif_enabled=False,
        **backends,
    ).model_copy(update=getattr(request, "param", {}))


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is API.md's error body with this status (and code)."""
    assert response.status_code == status, (response.request.url, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"], body
    assert isinstance(error["message"], str) and error["message"], body
    assert set(error) <= {"code", "message", "details"}, body
    if code is not None:
        assert error["code"] == code, body
    return dict(error)


async def _no_server_error(response: httpx.Response) -> None:
    # API.md: no request ever gets a 500 (503 "not ready" is a promise, not a failure).
    # Every response of every API test is held to it.
    status = response.status_code
    assert status < 500 or status == 503, f"{response.request.url}: {status}"


class Glimpse:
    """The app under test, with the helpers a test needs to act as users."""

    def __init__(self, client: httpx.AsyncClient, container: Container) -> None:
        self.client = client
        self.container = container

    async def signup(
        self, username: str = "alice", password: str = "correct horse"
    ) -> dict[str, str]:
        response = await self.client.post(
            "/api/v1/accounts", json={"username": username, "password": password}
        )
        assert response.status_code == 201, response.text
        response = await self.client.post(
            "/api/v1/auth/token", json={"username": username, "password": password}
        )
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    async def upload(
        self,
        headers: dict[str, str],
        files: list[tuple[str, bytes]] | None = None,
        **fields: Any,
    ) -> httpx.Response:
        files = files if files is not None else [("photo.jpg", jpeg_bytes())]
        parts = [("file", (name, data, "application/octet-stream")) for name, data in files]
        data = {k: v for k, v in fields.items() if v is not None}
        return await self.client.post("/api/v1/posts", headers=headers, files=parts, data=data)

    async def run_jobs(self) -> int:
        return await drain(self.container)

    def stored_files(self) -> list[Path]:
        root = self.container.settings.data_dir / "media"
        if self.container.settings.storage_url.startswith("s3://"):
            # The bucket's keys, named as they would lie on the local disk.
            return [root / key for key in bucket_keys(self.container.settings.storage_url)]
        return sorted(
            p
            for p in root.rglob("*")
            if p.is_file() and ".staging" not in p.parts and "readyz" not in p.parts
        )


def jpeg_bytes(
    size: tuple[int, int] = (800, 600), color: tuple[int, int, int] = (200, 80, 40)
) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "JPEG", quality=90)
    return out.getvalue()


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Glimpse]:
    """The app over `settings` (its database migrated), as one API process of the test's: a
    test that runs two of these over the same database and backends has two processes, each
    with its own memory (kept pages, memos, caches). Any 5xx but a 503 fails the test."""
    migrate(settings.resolved_database_url)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://glimpse.test",
            event_hooks={"response": [_no_server_error]},
        ) as client,
    ):
        yield Glimpse(client, app.state.container)


@pytest.fixture
async def glimpse(settings: Settings) -> AsyncIterator[Glimpse]:
    async with running(settings) as app:
        yield app


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Clip]:
    """The video clips the tests share, made once per session (each a second or less, a few
    dozen KB): H.264 + AAC in MP4 at 720p, iPhone-like HEVC in MOV with a GPS location, VP9 +
    Opus in WebM at odd dimensions, and a silent MP4 filmed rotated by 90 degrees."""
    folder = tmp_path_factory.mktemp("clips")
    return {
        "h264": make_clip(folder / "h264.mp4", size=(1280, 720), seconds=1.0),
        "hevc": make_clip(
            folder / "hevc.mov",
            container="mov",
            codec="libx265",
            seconds=0.5,
            metadata={"location": GPS_LOCATION},
        ),
        "vp9": make_clip(
            folder / "vp9.webm", container="webm", codec="libvpx-vp9", size=(321, 241), seconds=0.5
        ),
        "rotated": make_clip(folder / "rotated.mp4", seconds=0.5, audio=False, rotation=90),
    }


# Where the HEVC clip says it was filmed (ISO 6709, as an iPhone writes it in its QuickTime atoms).
GPS_LOCATION = "+27.5916+086.5640+8850/"


# The folders whose tests wait on real processes, servers and browsers (a minute or two each,
# some of them): they start first, so that the two xdist workers share them out at the start of
# a run instead of one worker finishing them alone at its end.
_LONG_FIRST = ("tests/faults/", "tests/e2e/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid
        return next((i for i, prefix in enumerate(_LONG_FIRST) if path.startswith(prefix)), 99)

    items.sort(key=rank)  # (stable: each folder keeps its own order)
