"""Database URLs as operators write them become the async drivers' URLs."""

from __future__ import annotations

import pytest

from glimpse.config import Settings
from glimpse.db.locks import lock_number
from glimpse.db.urls import async_database_url, replica_urls


@pytest.mark.parametrize(
    ("given", "driven"),
    [
        ("postgresql://u@h:5432/db", "postgresql+asyncpg://u@h:5432/db"),
        ("postgres://u:p@h/db?sslmode=require", "postgresql+asyncpg://u:p@h/db?sslmode=require"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_plain_urls_get_the_async_driver(given: str, driven: str) -> None:
    assert async_database_url(given) == driven


def test_settings_resolve_the_database_url(tmp_path: object) -> None:
    settings = Settings(database_url="postgresql://u@h/db")
    assert settings.resolved_database_url == "postgresql+asyncpg://u@h/db"
    assert not settings.is_sqlite
    assert Settings().resolved_database_url.startswith("sqlite+aiosqlite:///")


def test_replica_urls_are_a_comma_separated_list() -> None:
    assert replica_urls("") == []
    assert replica_urls(" postgresql://a/db , ,postgres://b/db") == [
        "postgresql+asyncpg://a/db",
        "postgresql+asyncpg://b/db",
    ]


def test_lock_numbers_are_signed_64_bit_and_stable() -> None:
    numbers = {lock_number(f"key{n}") for n in range(1000)}
    assert len(numbers) == 1000
    assert all(-(2**63) <= n < 2**63 for n in numbers)
    assert lock_number("a") == lock_number("a")
