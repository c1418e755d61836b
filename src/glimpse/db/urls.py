"""Database URLs as operators write them, turned into the async drivers SQLAlchemy runs.

`postgresql://user@host:5432/db` (or `postgres://`, as Heroku-style services hand them out) is
driven by asyncpg; a URL that already names a driver (`postgresql+asyncpg://`,
`sqlite+aiosqlite://`) is kept as written, and plain `sqlite://` gets aiosqlite."""

from __future__ import annotations

_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}


def async_database_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    return f"{_DRIVERS.get(scheme, scheme)}://{rest}"


def replica_urls(value: str) -> list[str]:
    """GLIMPSE_DATABASE_REPLICA_URLS: comma-separated, blanks ignored."""
    return [async_database_url(part.strip()) for part in value.split(",") if part.strip()]
