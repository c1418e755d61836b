"""`glimpse media backfill-avif` as an operator runs it, in a process of its own, on the data
folder of a Glimpse whose posts were made before AVIF copies were."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from glimpse.posts.models import Media
from tests.conftest import Glimpse, testdata

pytestmark = pytest.mark.embedded  # the command and the test share the data folder's SQLite


def backfill(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "glimpse.cli", "media", "backfill-avif", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GLIMPSE_SECRET_KEY": "", "GLIMPSE_LOG_FORMAT": "text", **env}
        | {"GLIMPSE_DATA_DIR": str(data_dir)},
    )


async def test_the_command_queues_old_photos_in_batches_and_a_second_run_finds_none(
    glimpse: Glimpse,
) -> None:
    headers = await glimpse.signup()
    post_ids = []
    for n in range(3):
        response = await glimpse.upload(
            headers,
            files=[("p.jpg", testdata("camera/DSCN0010.jpg").read_bytes())],
            caption=str(n),
        )
        assert response.status_code == 202, response.text
        post_ids.append(response.json()["id"])
    await glimpse.run_jobs()  # AVIF copies off here (conftest): posts made before them
    async with glimpse.container.db.read() as session:
        media_ids = sorted((await session.execute(select(Media.id))).scalars())
    data_dir = glimpse.container.settings.data_dir

    off = backfill(data_dir, GLIMPSE_AVIF_ENABLED="false")
    assert off.returncode == 1 and "switched off" in off.stderr, off.stderr
    assert "Traceback" not in off.stderr

    done = backfill(data_dir, "--batch-size", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"queued 2 (through media id {media_ids[1]})",
        f"queued 3 (through media id {media_ids[2]})",
        "3 photo(s) queued for AVIF copies",
    ]
    glimpse.container.settings.avif_enabled = True  # this worker now makes them
    assert await glimpse.run_jobs() == 3
    for post_id in post_ids:
        post = (await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=headers)).json()
        assert sorted(
            v["name"] for v in post["media"][0]["variants"] if v["content_type"] == "image/avif"
        ) == ["w1080", "w640"]

    again = backfill(data_dir)
    assert again.returncode == 0 and again.stdout.strip() == "0 photo(s) queued for AVIF copies"
