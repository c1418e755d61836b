"""The composition root: builds every backend from the settings, once per process.

The API (app.py), the workers (worker.py) and the CLI all build the same container; nothing in
the package connects to anything at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from glimpse.accounts.passwords import PasswordHasher
from glimpse.accounts.token_memo import TokenMemo
from glimpse.backends.feed import FeedStore, feed_store_from_url
from glimpse.backends.queue import JobConsumer, queue_from_url
from glimpse.backends.redis_client import is_redis_url, open_redis, parse_redis_url
from glimpse.backends.storage import Storage, storage_from_url
from glimpse.backends.summaries import PostSummaryCache, summary_cache_from_url
from glimpse.config import Settings
from glimpse.db.database import Database
from glimpse.db.failures import waiting_out_outages
from glimpse.db.node_leases import acquire_node, release_node, renew_node
from glimpse.db.urls import replica_urls
from glimpse.db.write_notes import MemoryWriteNotes, WriteNotes
from glimpse.errors import StorageUnavailable
from glimpse.feed.kept_pages import KeptPages, renewal_bound
from glimpse.feed.memo import ViewerMemo
from glimpse.holders import new_holder
from glimpse.ids import MAX_NODE, IdGenerator
from glimpse.media.origin_cache import OriginCache
from glimpse.media.urls import MediaUrls
from glimpse.ops.request_ids import stamp_log_records
from glimpse.posts.avif import avif_wanted
from glimpse.posts.video_checks import VideoCheckSlots
from glimpse.throttling import SignInGuard, Throttle

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("glimpse")


def _load_job_handlers() -> None:
    # Importing a slice's jobs module registers its handlers (see glimpse/jobs.py).
    import glimpse.feed.jobs
    import glimpse.posts.jobs
    import glimpse.privacy.jobs
    import glimpse.stories.jobs  # noqa: F401


# A crashed process's node comes free after this long; a live one renews well before.
NODE_LEASE_SECONDS = 600.0
NODE_RENEW_SECONDS = 60.0
# How long a starting process waits out a busy or unreachable database (db/failures.py).
START_WAIT_SECONDS = 60.0


@dataclass
class Container:
    settings: Settings
    db: Database
    storage: Storage
    queue: JobConsumer
    feed_store: FeedStore
    ids: IdGenerator
    passwords: PasswordHasher
    secret_key: bytes
    media_urls: MediaUrls
    origin_cache: OriginCache
    throttle: Throttle
    sign_ins: SignInGuard
    viewer_memo: ViewerMemo
    kept_pages: KeptPages
    # The media of public ready posts, between requests: in memory, or in Redis behind it.
    post_summaries: PostSummaryCache
    video_checks: VideoCheckSlots
    # Lease the ids' node from the database at start(), unless build_container fixed it.
    lease_node: bool = True
    # Live tokens, while the database is quiet (accounts/token_memo.py).
    token_memo: TokenMemo = field(default_factory=TokenMemo)
    holder: str = ""
    # The one Redis client (and pool) of this process, when GLIMPSE_CACHE_URL names a Redis.
    redis: Redis | None = None
    # Seconds since the epoch. Whatever expires (stories) asks this, so that a test can move
    # time instead of sleeping; media_urls keeps a clock of its own, set to the same one.
    clock: Callable[[], float] = field(default=time.time)
    _renewal: asyncio.Task[None] | None = None

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def start(self) -> None:
        """Take what needs the database: the lease on this process's id node."""
        try:
            await self.storage.start()
        except StorageUnavailable:
            # Serve what needs no media meanwhile: /readyz reports the store, and it is
            # connected on first use once it answers.
            log.warning("the media store does not answer yet", exc_info=True)
        if self.lease_node:
            node = await self._acquire_node_at_start()
            self._hold_node(node)
            self._renewal = asyncio.create_task(self._keep_node())

    async def _acquire_node_at_start(self) -> int:
        """The node lease, waiting out a database that is busy or not answering yet for up to
        START_WAIT_SECONDS: on a loaded machine an embedded database's write lock can be
        held past its busy timeout (a sibling's commits waiting on fsync), and a process being
        restarted must not die of that, nor of a PostgreSQL that is still starting."""
        return await waiting_out_outages(
            lambda: acquire_node(self.db, self.holder, NODE_LEASE_SECONDS),
            "at start-up",
            START_WAIT_SECONDS,
            # (Nothing else uses the database yet: its connections may all go.)
            after_disk_fault=self.db.dispose,
        )

    def _hold_node(self, node: int) -> None:
        self.ids.use_node(node)
        # Stop making ids a little before the lease could pass to another process.
        leased_ms = int((time.time() + NODE_LEASE_SECONDS - NODE_RENEW_SECONDS) * 1000)
        self.ids.hold_until(leased_ms)

    async def _keep_node(self) -> None:
        while True:
            await asyncio.sleep(NODE_RENEW_SECONDS)
            try:
                node = self.ids.node
                if not await renew_node(self.db, node, self.holder, NODE_LEASE_SECONDS):
                    # Lost it (say, the process was suspended past the lease): take another.
                    log.warning("id node %d was lost; leasing another", node)
                    node = await acquire_node(self.db, self.holder, NODE_LEASE_SECONDS)
                self._hold_node(node)
            except Exception:
                log.exception("renewing the id node lease failed; trying again")

    async def close(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
            with contextlib.suppress(Exception):
                await release_node(self.db, self.ids.node, self.holder)
        self.video_checks.close()
        await self.throttle.close()
        await self.queue.close()
        await self.feed_store.close()
        await self.post_summaries.close()
        await self.storage.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.db.dispose()


def _write_notes(redis: Redis | None, cache_url: str) -> WriteNotes:
    """Where read-your-own-writes notes live: in Redis, every API process sees a caller's
    writes through any of them (db/replicas.py); otherwise in this process's memory."""
    if redis is None:
        return MemoryWriteNotes()
    from glimpse.backends.redis_write_notes import RedisWriteNotes

    return RedisWriteNotes(redis, parse_redis_url(cache_url).prefix)


def build_container(settings: Settings, *, node_id: int | None = None) -> Container:
    """Everything a process needs, unconnected; `await container.start()` before use.
    `node_id` fixes the ids' node instead of leasing one (for tests and tools)."""
    _load_job_handlers()
    stamp_log_records()  # every log line written for a request or a job carries its id
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    fixed_node = node_id
    holder = new_holder()
    cache_url = settings.resolved_cache_url
    redis = open_redis(parse_redis_url(cache_url)) if is_redis_url(cache_url) else None
    db = Database(
        settings.resolved_database_url,
        busy_timeout_ms=settings.database_busy_timeout_ms,
        synchronous=settings.database_synchronous,
        mmap_bytes=settings.database_mmap_bytes,
        replica_urls=replica_urls(settings.database_replica_urls),
        replica_notes=_write_notes(redis, cache_url),
    )
    secret_key = settings.resolved_secret_key().encode()
    # Counts kept in this process's memory, or in Redis, shared by every API process.
    throttle = (
        Throttle(settings.rate_limits, "async+memory://")
        if redis is None
        else Throttle.in_redis(settings.rate_limits, redis, parse_redis_url(cache_url).prefix)
    )
    return Container(
        settings=settings,
        db=db,
        storage=storage_from_url(
            settings.resolved_storage_url,
            free_bytes_floor=settings.storage_free_bytes_floor,
            staging_dir=settings.data_dir / "staging",
        ),
        queue=queue_from_url(
            settings.resolved_queue_url,
            db,
            worker_name=holder,
            lease_seconds=settings.job_lease_seconds,
            poll_seconds=settings.worker_poll_seconds,
            retry_base_seconds=settings.job_retry_base_seconds,
            retry_max_seconds=settings.job_retry_max_seconds,
        ),
        feed_store=feed_store_from_url(
            cache_url,
            db,
            cap=settings.feed_cap,
            idle_ttl=settings.feed_idle_ttl_seconds,
            redis=redis,
        ),
        # Until start() leases a node, a random one (only tests make ids before start()).
        ids=IdGenerator(
            fixed_node if fixed_node is not None else random.SystemRandom().randint(0, MAX_NODE)
        ),
        passwords=PasswordHasher(
            settings.password_hash_concurrency,
            settings.password_hash_queue,
            time_cost=settings.password_hash_time_cost,
            memory_kib=settings.password_hash_memory_kib,
        ),
        secret_key=secret_key,
        media_urls=MediaUrls(
            settings.media_base_url, secret_key, settings.private_media_url_ttl_seconds
        ),
        origin_cache=OriginCache(
            ttl_seconds=settings.origin_cache_ttl_seconds, max_bytes=settings.origin_cache_bytes
        ),
        throttle=throttle,
        sign_ins=SignInGuard(throttle),
        viewer_memo=ViewerMemo(ttl_seconds=settings.feed_viewer_memo_seconds),
        kept_pages=KeptPages(
            settings.feed_kept_page_seconds,
            settings.feed_kept_pages_bytes,
            renew_for=renewal_bound(settings.private_media_url_ttl_seconds),
        ),
        post_summaries=summary_cache_from_url(
            cache_url,
            expect_avif=avif_wanted(settings),
            ttl_seconds=settings.post_summary_ttl_seconds,
            local_posts=settings.post_summary_local_posts,
            redis=redis,
        ),
        video_checks=VideoCheckSlots(settings.video_check_concurrency, settings.video_check_queue),
        lease_node=fixed_node is None,
        holder=holder,
        redis=redis,
    )
