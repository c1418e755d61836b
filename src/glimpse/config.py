"""One settings object, read from `GLIMPSE_*` environment variables (a CLI flag wins over its variable)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from glimpse.db.urls import async_database_url
from glimpse.throttling import parse_rate_limits


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GLIMPSE_", extra="ignore")

    data_dir: Path = Path("./data")
    # Where `glimpse serve` listens and how many worker processes it starts (0: one per core).
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int | None = Field(default=None, ge=0)
    # Empty means "the embedded default under data_dir"; see the *_url properties below.
    database_url: str = ""
    # PostgreSQL read replicas (comma-separated URLs) for read-only queries; db/replicas.py.
    database_replica_urls: str = ""
    storage_url: str = ""
    # How long a SQLite writer waits for another's transaction before giving up with a 503.
    database_busy_timeout_ms: int = 5000
    # SQLite in WAL mode: FULL syncs every commit, so an answered request survives a power cut;
    # NORMAL syncs at checkpoints only (a process crash loses nothing, a power cut the last commits).
    database_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    # How much of the SQLite file the hot reads map into memory (db/database.py: a quarter to
    # a third less CPU a statement). On a disk that fails reads a mapped page ends the process
    # with SIGBUS where a read() would be a 503: 0 trades that CPU for staying up.
    database_mmap_bytes: int = Field(default=2**31, ge=0)
    queue_url: str = ""
    # Where materialised feeds live: empty for tables in the database (sql://).
    cache_url: str = ""
    # Post summaries (the media of public ready posts, backends/summaries): how long Redis keeps
    # one (they change only by gaining AVIF copies, which drops them, so this bounds memory), and
    # how many each process keeps in memory in front of it (0: none).
    post_summary_ttl_seconds: int = Field(default=86_400, ge=1)
    post_summary_local_posts: int = Field(default=20_000, ge=0)

    # Mixed into cursor signatures. Empty: a random key is made once and kept in data_dir.
    secret_key: str = ""

    # Where browsers fetch media: empty for this server's own /media/ origin, or a CDN's URL.
    media_base_url: str = ""
    # Media only some may see gets URLs signed for between one and two of these periods.
    private_media_url_ttl_seconds: int = Field(default=3600, ge=60)
    # The origin remembers who may see a media key this long (so deleting a post or going
    # private reaches it within this time), and keeps up to this many bytes of small files.
    origin_cache_ttl_seconds: float = 10.0
    origin_cache_bytes: int = 64 * 1024 * 1024
    # How long the shipped nginx edge (`glimpse edge-config`) keeps a public variant before it
    # asks the origin again (a conditional request: a 304 if it may still be shown). Deleting a
    # post or going private reaches the edge within this plus origin_cache_ttl_seconds; browsers
    # keep their `immutable` copies regardless (the URL of a deleted post's media is unknown to
    # anyone who had not seen it already). The origin sends it as X-Accel-Expires, which nginx
    # obeys and never passes on.
    edge_cache_seconds: int = Field(default=600, ge=1)
    # With a store that has URLs of its own (S3), the origin may answer a media request with a
    # redirect there once it has checked who may see it: "presigned" (a URL signed for a few
    # minutes, for any media), or "public" (the object's plain URL, for public media only: the
    # bucket is readable by anyone). Empty: the origin streams the bytes itself.
    storage_redirect: Literal["", "presigned", "public"] = ""
    # "public" redirects go here + "/" + key (a bucket website or a CDN in front of the bucket);
    # empty for the store's own URL of the object.
    storage_public_url: str = ""

    token_ttl_seconds: int = 30 * 24 * 3600
    # How long a story lives (API.md); tests and demos set it to seconds.
    story_ttl_seconds: int = Field(default=86_400, ge=1)
    # argon2id hashing is deliberately slow; more concurrent hashes than cores only queue up.
    password_hash_concurrency: int = 2
    # argon2id's cost: RFC 9106's second recommendation (3 passes over 64 MiB), about 0.12 s of a
    # core here. A small machine may lower it; the test suite does (every sign-up costs two).
    password_hash_time_cost: int = Field(default=3, ge=1)
    password_hash_memory_kib: int = Field(default=64 * 1024, ge=64)

    # Upload limits (API.md).
    max_image_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 50_000_000
    max_files_per_post: int = 20
    max_caption_chars: int = 2200
    # An upload whose body stops arriving for this long is dropped (its connection and spooled
    # files would otherwise be held for as long as the client cares to wait).
    upload_idle_timeout_seconds: float = 60.0
    # Per-account quotas; 0 = unlimited.
    quota_uploads_per_day: int = 0
    quota_bytes_per_day: int = 0
    quota_bytes_stored: int = 0

    # Request limits (hardening). A JSON (or any non-upload) body over this gets 413 before
    # the rest of it is read.
    max_json_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # An upload must finish within this, and after its first `upload_min_rate_grace_seconds`
    # keep up this many bytes a second averaged over `upload_min_rate_window_seconds`.
    upload_deadline_seconds: float = Field(default=1800.0, gt=0)
    upload_min_rate_bytes_per_second: int = Field(default=10 * 1024, ge=0)
    upload_min_rate_window_seconds: float = Field(default=60.0, gt=0)
    upload_min_rate_grace_seconds: float = Field(default=10.0, ge=0)
    # Open connections one API process accepts, and uploads it receives at once; past them a
    # request gets 503 with Retry-After (file descriptors can never run out).
    max_connections: int = Field(default=1000, ge=1)
    max_concurrent_uploads: int = Field(default=64, ge=1)
    # ... of which one account may hold this many (0: no cap of its own), so that a few accounts
    # trickling uploads just above the minimum rate cannot hold every slot.
    max_concurrent_uploads_per_account: int = Field(default=4, ge=0)
    # Request headers (the HTTP server's phase, before any route runs): at most this many bytes,
    # complete within this many seconds of the request's first byte; and at most this many open
    # connections from one client address (0: no cap; not applied behind a trusted proxy, where
    # every connection comes from the proxy).
    max_header_bytes: int = Field(default=64 * 1024, ge=4096)
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    max_connections_per_client: int = Field(default=256, ge=0)
    # Sign-ins and sign-ups waiting for a password-hash slot; past this they get 503.
    password_hash_queue: int = Field(default=16, ge=0)

    # Throttling: budgets in the `limits` library's notation, or "off" (see glimpse/throttling.py:
    # a budget left out keeps its default, NAME=off lifts one, `reads`/`writes` split `api`).
    rate_limits: str = "api=300/5minute;upload=30/30minute;signin_failures=5/minute;signup=100/hour"
    # Logs: `json` (one object a line) or `text`; unset, json unless stderr is a terminal.
    log_format: Literal["json", "text", ""] = ""
    # One line per request (id, route, status, time, caller, bytes) in the glimpse.access log.
    access_log: bool = True

    # How many reverse proxies in front append to X-Forwarded-For: the client address is the
    # hop that many from the right. 0 means the socket's peer is the client.
    trusted_proxy_hops: int = Field(default=0, ge=0)

    # /metrics: with a token, it needs `Authorization: Bearer <token>`; without one it answers
    # only to loopback clients.
    metrics_token: str = ""
    # `glimpse worker` serves its own /metrics here (0: not at all), so that workers on other
    # hosts can be scraped; with metrics_token set it asks for it too, without it it answers
    # loopback clients only (as the API does).
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    worker_metrics_host: str = "127.0.0.1"

    # Decoding budget of the child process that decodes each image.
    decode_cpu_seconds: int = Field(default=60, ge=1)
    decode_memory_bytes: int = Field(default=2 * 1024 * 1024 * 1024, ge=64 * 1024 * 1024)
    decode_timeout_seconds: float = Field(default=120.0, gt=0)

    # AVIF copies of `w1080` and `w640` (posts/avif.py), made by a job that follows a post
    # becoming ready, in a decoding child under the photo's budget. Quality 60 at speed 9: 24 %
    # fewer bytes than WebP q80 at -1.6..+0.8 dB PSNR, about 2x its encode time; speed 8 took
    # about 4x as long again for 3 % fewer bytes (bench/bench_avif.py, BENCHMARKS.md).
    avif_enabled: bool = True
    avif_quality: int = Field(default=60, ge=0, le=100)
    avif_speed: int = Field(default=9, ge=0, le=10)

    # Videos (API.md): the largest file, the longest post and story, and the budget of the
    # child process that transcodes each one (one encoder thread: minutes of CPU for a long 4K
    # clip). Transcoding jobs run in lanes of their own, `video_worker_concurrency` per worker
    # process, under a lease of `video_job_lease_seconds`, so photos never wait behind them.
    max_video_bytes: int = Field(default=200 * 1024 * 1024, ge=1024)
    max_video_seconds: float = Field(default=90.0, gt=0)
    max_story_video_seconds: float = Field(default=60.0, gt=0)
    video_decode_cpu_seconds: int = Field(default=1200, ge=1)
    video_decode_memory_bytes: int = Field(default=2 * 1024 * 1024 * 1024, ge=256 * 1024 * 1024)
    video_decode_timeout_seconds: float = Field(default=1500.0, gt=0)
    video_worker_concurrency: int = Field(default=1, ge=0)
    # A lease is renewed every third of it while the transcode runs; it only matters when the
    # worker died, and then it is how long its post waits (unless a worker on the same machine
    # notices the death first: holders.py).
    video_job_lease_seconds: float = Field(default=180.0, gt=0)
    # Upload-time video checks (a decoding child each, waited on by the API process): this many
    # at once, this many more waiting; past that an upload with a video gets 503 `busy`.
    video_check_concurrency: int = Field(default=2, ge=1)
    video_check_queue: int = Field(default=8, ge=0)

    # Storage: below this much free space the store is "unavailable" in /readyz, and
    # transient storage faults (full or read-only disk, I/O errors) are retried for at least
    # `storage_retry_window_seconds`, at most `storage_retry_max_delay_seconds` apart.
    storage_free_bytes_floor: int = Field(default=100 * 1024 * 1024, ge=0)
    storage_retry_window_seconds: float = Field(default=1800.0, ge=0)
    storage_retry_max_delay_seconds: float = Field(default=60.0, gt=0)

    # Queue behaviour.
    job_max_attempts: int = 5
    # Runs cut short by their worker's death on the same machine (a kill, a deploy, the OOM
    # killer) are not attempts; after this many of them a job is buried all the same, as the
    # likely cause. Each death after the first delays the job like a retry (queue/base.py).
    job_max_worker_deaths: int = Field(default=20, ge=1)
    job_lease_seconds: float = 120.0
    # A running job's lease is renewed for this long at most: a handler hung past it (a stuck
    # decoder, a dead mount) lets its lease lapse, so the job is retried and, in the end, buried.
    job_max_run_seconds: float = 1800.0
    job_retry_base_seconds: float = 2.0
    job_retry_max_seconds: float = 600.0
    # How often an idle worker looks for new jobs: this bounds the queue's share of upload latency.
    worker_poll_seconds: float = 0.05
    # On SIGTERM: how long the API finishes the requests under way, and a worker the jobs under
    # way, before it stops anyway (a worker gives the jobs it did not finish back to the queue
    # at once, for another worker).
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    # On SIGTERM, `glimpse serve` first answers /readyz with 503 for this long while still
    # serving, so that a proxy checking /readyz takes it out of rotation before it stops
    # accepting connections (deploy/README.md: rolling restarts). 0: stop accepting at once.
    shutdown_drain_seconds: float = Field(default=0.0, ge=0)
    # Deleted posts' media go after this grace period, so a processing job that is storing
    # the same content-addressed bytes at that moment cannot lose them (see posts/jobs.py).
    media_gc_delay_seconds: float = 30.0

    # Erasure and export (privacy/): an erased account's username cannot be taken for this many
    # days (nobody inherits the trust of the person just gone); an export's zip is kept this
    # long, and its download URL works for `export_url_ttl_seconds` from when it is shown.
    erased_username_hold_days: float = Field(default=30.0, ge=0)
    # Rows of a kind an erasure deletes per transaction: each batch holds the write lock for
    # milliseconds, and a crash costs at most one batch's work (redone by the next run).
    erasure_batch_size: int = Field(default=200, ge=1)
    export_ttl_seconds: float = Field(default=7 * 86400.0, gt=0)
    export_url_ttl_seconds: int = Field(default=86400, ge=60)

    # Feeds: how many post ids a materialised feed keeps (older posts are read from the
    # database); accounts with more followers than this are not fanned out on write but merged
    # into feeds when they are read; a feed not read for this long is dropped (rebuilt on the
    # next read), so fan-out spends nothing on inactive users.
    feed_cap: int = Field(default=1000, ge=100)
    feed_fanout_max_followers: int = Field(default=10_000, ge=0)
    feed_idle_ttl_seconds: float = Field(default=14 * 86400.0, gt=0)
    # How old the read path's per-viewer answers may be (feed/memo.py): the large accounts a
    # viewer follows, and their affinity to authors.
    feed_viewer_memo_seconds: float = Field(default=5.0, ge=0)
    # How long a viewer's first page of the feed may be served again as it was made
    # (feed/kept_pages.py) while nothing it depends on has changed: others' likes and comments
    # (the counts) show within this. 0 turns keeping off. (At most half the shortest life of a
    # signed media URL, so that a kept page never links one about to expire.)
    feed_kept_page_seconds: float = Field(default=10.0, ge=0, le=30)
    # The memory those pages may take in each API process, at most (the oldest go first).
    feed_kept_pages_bytes: int = Field(default=64 * 1024 * 1024, ge=0)

    @field_validator("rate_limits")
    @classmethod
    def _rate_limits_parse(cls, value: str) -> str:
        # Refused at start-up with the part that is wrong, not at the first request.
        parse_rate_limits(value)
        return value

    @property
    def resolved_database_url(self) -> str:
        return async_database_url(
            self.database_url or f"sqlite+aiosqlite:///{(self.data_dir / 'glimpse.db').resolve()}"
        )

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or f"file://{(self.data_dir / 'media').resolve()}"

    @property
    def resolved_queue_url(self) -> str:
        # The embedded queue lives in the database: the outbox and the queue are one table.
        return self.queue_url or "sql://"

    @property
    def resolved_cache_url(self) -> str:
        return self.cache_url or "sql://"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    def resolved_secret_key(self) -> str:
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = os.urandom(32).hex()
        # O_EXCL: when several processes start at once, the first one's key wins.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text().strip()
        with os.fdopen(fd, "w") as f:
            f.write(key)
        return key
