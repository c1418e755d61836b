"""The collector of what crashed uploads left, run now: `python -m tests.faults.collector DIR`.

It is the hourly job's own code (`sweep_abandoned_uploads`: spooled uploads, then originals no
media row records), over the settings of the environment, with its age thresholds at zero: the
test runs it once the API it killed is restarted and every upload it sends has been answered,
so nothing younger is still on its way to being recorded.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from glimpse.backends.storage import staging
from glimpse.cli_options import settings_for
from glimpse.container import build_container
from glimpse.posts import jobs


async def collect(data_dir: Path) -> None:
    container = build_container(settings_for(data_dir))
    await container.start()
    try:
        await jobs.sweep_abandoned_uploads(container, {})
    finally:
        await container.close()


if __name__ == "__main__":
    staging.STALE_STAGING_SECONDS = 0
    jobs.ABANDONED_UPLOAD_SECONDS = 0
    asyncio.run(collect(Path(sys.argv[1])))
