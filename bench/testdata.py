"""Where the benchmarks find the test photographs: the repo's tests/data/ (attributed in its
README.md). A missing one stops the benchmark with its name rather than a bare traceback."""

from __future__ import annotations

from pathlib import Path

TESTDATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def testdata(relative: str) -> Path:
    path = TESTDATA / relative
    if not path.is_file():
        raise SystemExit(f"test photograph {relative!r} is missing: expected at {path}")
    return path
