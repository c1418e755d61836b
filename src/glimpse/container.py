"""The composition root: builds every backend from the settings, once per process.

The API (app.py), the workers (worker.py) and the CLI all build the same container; nothing in
the package connects to anything at import time.
"""

from __future__ import annotations

import os
import random
import socket
from dataclasses import dataclass

from glimpse.accounts.passwords import PasswordHasher
from glimpse.backends.queue import JobConsumer, queue_from_url
from glimpse.backends.storage import Storage, storage_from_url
from glimpse.config import Settings
from glimpse.db.database import Database
from glimpse.ids import MAX_NODE, IdGenerator


def _load_job_handlers() -> None:
    # Importing a slice's jobs module registers its handlers (see backends/queue/registry.py).
    import glimpse.posts.jobs  # noqa: F401


@dataclass
class Container:
    settings: Settings
    db: Database
    storage: Storage
    queue: JobConsumer
    ids: IdGenerator
    passwords: PasswordHasher
    secret_key: bytes

    async def close(self) -> None:
        await self.queue.close()
        await self.db.dispose()


def build_container(settings: Settings, *, node_id: int | None = None) -> Container:
    _load_job_handlers()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    node = node_id if node_id is not None else settings.node_id
    if node is None:
        node = random.SystemRandom().randint(0, MAX_NODE)
    db = Database(settings.resolved_database_url, busy_timeout_ms=settings.database_busy_timeout_ms)
    worker_name = f"{socket.gethostname()}:{os.getpid()}:{node}"
    return Container(
        settings=settings,
        db=db,
        storage=storage_from_url(settings.resolved_storage_url),
        queue=queue_from_url(
            settings.resolved_queue_url,
            db,
            worker_name=worker_name,
            lease_seconds=settings.job_lease_seconds,
            poll_seconds=settings.worker_poll_seconds,
        ),
        ids=IdGenerator(node),
        passwords=PasswordHasher(settings.password_hash_concurrency),
        secret_key=settings.resolved_secret_key().encode(),
    )
