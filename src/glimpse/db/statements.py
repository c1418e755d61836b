"""Statements whose SQL differs between the engines we run on."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession


async def insert_ignoring_duplicates(session: AsyncSession, model: Any, **values: Any) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING; True when the row was new. The database decides,
    so two requests racing to add the same row (two taps on "like") add it once, and the
    counter that goes with it moves once."""
    dialect = (await session.connection()).dialect.name
    insert = sqlite_insert if dialect == "sqlite" else pg_insert
    result = await session.execute(insert(model).values(**values).on_conflict_do_nothing())
    return bool(result.rowcount)  # type: ignore[attr-defined]
