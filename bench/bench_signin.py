"""Sign-in timing: a wrong password for an existing user vs an unknown username, side by side.

Alternating requests to POST /api/v1/auth/token through the real app (in-process, over httpx's
ASGI transport, throttling off), one at a time; medians per path and their ratio. The goal is
within 10%: response times must not tell which usernames exist.

    python bench/bench_signin.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from glimpse.app import create_app
from glimpse.config import Settings
from glimpse.db.migrate import upgrade_to_head


async def measure(rounds: int, data_dir: Path) -> dict[str, list[float]]:
    settings = Settings(data_dir=data_dir, secret_key="bench", rate_limits="off")
    upgrade_to_head(settings.resolved_database_url)
    app = create_app(settings)
    timings: dict[str, list[float]] = {"wrong password": [], "unknown user": []}
    bodies = {
        "wrong password": {"username": "alice", "password": "wrong horse battery"},
        "unknown user": {"username": "nobody_here", "password": "wrong horse battery"},
    }
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            response = await client.post(
                "/api/v1/accounts", json={"username": "alice", "password": "correct horse"}
            )
            assert response.status_code == 201, response.text
            for body in bodies.values():  # warm up both paths
                await client.post("/api/v1/auth/token", json=body)
            for i in range(rounds):
                # Alternate which goes first, so drift in the machine's speed hits both alike.
                order = list(bodies) if i % 2 == 0 else list(reversed(bodies))
                for label in order:
                    started = time.perf_counter()
                    response = await client.post("/api/v1/auth/token", json=bodies[label])
                    timings[label].append(time.perf_counter() - started)
                    assert response.status_code == 401, response.text
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        timings = asyncio.run(measure(args.rounds, Path(tmp)))
    medians = {label: statistics.median(ts) for label, ts in timings.items()}
    for label, ts in timings.items():
        print(
            f"{label:15} median {medians[label] * 1000:7.2f} ms"
            f"  p10 {statistics.quantiles(ts, n=10)[0] * 1000:7.2f} ms"
            f"  p90 {statistics.quantiles(ts, n=10)[-1] * 1000:7.2f} ms  ({len(ts)} requests)"
        )
    ratio = medians["unknown user"] / medians["wrong password"]
    verdict = "within 10%" if abs(ratio - 1) <= 0.10 else "NOT within 10%"
    print(f"unknown user / wrong password: {ratio:.3f} ({verdict})")


if __name__ == "__main__":
    main()
