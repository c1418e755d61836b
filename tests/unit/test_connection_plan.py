"""The connection limits of an API process, planned from the open files it may hold."""

from __future__ import annotations

import resource

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glimpse.api import connections
from glimpse.api.connections import (
    FILES_PER_UPLOAD,
    RESERVED_FILE_DESCRIPTORS,
    plan_connections,
    raise_open_files_limit,
)


def test_with_files_to_spare_the_setting_is_taken_as_it_is() -> None:
    plan = plan_connections(1_000_000, 1000, 64)
    assert plan.app_limit == 1000
    assert plan.server_limit == 1100


def test_with_few_files_connections_are_clamped_below_them() -> None:
    plan = plan_connections(1024, 1000, 64)
    assert plan.server_limit == 1024 - RESERVED_FILE_DESCRIPTORS - FILES_PER_UPLOAD * 64
    assert plan.app_limit == plan.server_limit - 100


@given(
    st.integers(min_value=16, max_value=2_000_000),
    st.integers(min_value=1, max_value=100_000),
    st.integers(min_value=1, max_value=1000),
)
def test_connections_and_uploads_never_need_more_files_than_allowed(
    open_files: int, max_connections: int, max_uploads: int
) -> None:
    plan = plan_connections(open_files, max_connections, max_uploads)
    assert 1 <= plan.app_limit <= max_connections
    assert plan.app_limit < plan.server_limit
    reserve = RESERVED_FILE_DESCRIPTORS + FILES_PER_UPLOAD * max_uploads
    if open_files - reserve >= 2:  # (below that nothing can be promised)
        assert plan.server_limit + reserve <= open_files


class FakeLimits:
    def __init__(self, soft: int, hard: int, refuse: bool = False) -> None:
        self.limits = (soft, hard)
        self.refuse = refuse

    def getrlimit(self, kind: int) -> tuple[int, int]:
        assert kind == resource.RLIMIT_NOFILE
        return self.limits

    def setrlimit(self, kind: int, limits: tuple[int, int]) -> None:
        if self.refuse:
            raise ValueError("not allowed")
        self.limits = limits


@pytest.mark.parametrize(
    ("soft", "hard", "refuse", "expected"),
    [
        (1024, 20000, False, 20000),
        (1024, resource.RLIM_INFINITY, False, connections.MOST_OPEN_FILES),
        (20000, 20000, False, 20000),
        (1024, 20000, True, 1024),
    ],
)
def test_the_soft_open_files_limit_is_raised_to_the_hard_one(
    monkeypatch: pytest.MonkeyPatch, soft: int, hard: int, refuse: bool, expected: int
) -> None:
    fake = FakeLimits(soft, hard, refuse)
    monkeypatch.setattr(connections.resource, "getrlimit", fake.getrlimit)
    monkeypatch.setattr(connections.resource, "setrlimit", fake.setrlimit)
    assert raise_open_files_limit() == expected
    if not refuse:
        assert fake.limits[0] == expected
