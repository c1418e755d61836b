"""One settings object, read from `GLIMPSE_*` environment variables (a CLI flag wins over its variable)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GLIMPSE_", extra="ignore")

    data_dir: Path = Path("./data")
    # Empty means "the embedded default under data_dir"; see the *_url properties below.
    database_url: str = ""
    storage_url: str = ""
    # How long a SQLite writer waits for another's transaction before giving up with a 503.
    database_busy_timeout_ms: int = 5000
    # SQLite in WAL mode: FULL syncs every commit, so an answered request survives a power cut;
    # NORMAL syncs at checkpoints only (a process crash loses nothing, a power cut the last commits).
    database_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    queue_url: str = ""

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

    token_ttl_seconds: int = 30 * 24 * 3600
    # argon2id hashing is deliberately slow; more concurrent hashes than cores only queue up.
    password_hash_concurrency: int = 2

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

    # Queue behaviour.
    job_max_attempts: int = 5
    job_lease_seconds: float = 120.0
    # A running job's lease is renewed for this long at most: a handler hung past it (a stuck
    # decoder, a dead mount) lets its lease lapse, so the job is retried and, in the end, buried.
    job_max_run_seconds: float = 1800.0
    job_retry_base_seconds: float = 2.0
    job_retry_max_seconds: float = 600.0
    # How often an idle worker looks for new jobs: this bounds the queue's share of upload latency.
    worker_poll_seconds: float = 0.05
    # Deleted posts' media go after this grace period, so a processing job that is storing
    # the same content-addressed bytes at that moment cannot lose them (see posts/jobs.py).
    media_gc_delay_seconds: float = 30.0

    @property
    def resolved_database_url(self) -> str:
        return (
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
