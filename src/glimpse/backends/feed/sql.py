"""The embedded feed store: two tables in the SQL database (shared by the API and the worker
processes, and surviving restarts).

`feeds` has one row per materialised feed; `feed_entries` (user, post) rows, a WITHOUT ROWID
table on SQLite so that one user's entries sit together in primary-key order and a page is one
range read. Pushing a post to 10,000 feeds is one INSERT ... SELECT per batch of followers,
which inserts only into feeds that exist. Caps are kept loosely: each feed counts its entries,
and only one that passes the cap by a tenth is trimmed (so a push costs no per-feed queries).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence

from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.backends.feed.base import Entry, FeedWindow
from glimpse.db.database import Database

# Ids per IN (...) list: well under SQLite's limit on bound variables.
_BATCH = 1000


def _push_statements(ids_in: str) -> tuple[TextClause, TextClause, TextClause]:
    """Add the post to the feeds among the ids that exist; count it in their sizes; read back
    the feeds now past the cap. `ids_in` is how the statements name the set of ids."""
    return (
        text(
            "INSERT INTO feed_entries (user_id, post_id, author_id)"
            f" SELECT user_id, :p, :a FROM feeds WHERE user_id IN {ids_in} ON CONFLICT DO NOTHING"
        ),
        text(f"UPDATE feeds SET size = size + 1 WHERE user_id IN {ids_in}"),
        text(f"SELECT user_id FROM feeds WHERE user_id IN {ids_in} AND size > :past"),
    )


_PUSH_JSON = _push_statements("(SELECT value FROM json_each(:ids))")
_PUSH_IN = tuple(
    statement.bindparams(bindparam("ids", expanding=True)) for statement in _push_statements(":ids")
)
# The feed's row, and its entries below `below` (none: one row of NULLs), newest first.
_WINDOW = text(
    "SELECT f.horizon_id, f.built_at, f.read_at, e.post_id, e.author_id, f.size FROM feeds AS f"
    " LEFT JOIN feed_entries AS e ON e.user_id = f.user_id AND e.post_id < :below"
    " AND e.post_id >= f.horizon_id WHERE f.user_id = :u ORDER BY e.post_id DESC LIMIT :limit"
)


class SqlFeedStore:
    # A read marks the feed active at most this often (a write per read would cost every read).
    TOUCH_SECONDS = 3600.0
    IN_DATABASE = True

    def __init__(self, db: Database, *, cap: int) -> None:
        self._db = db
        self.cap = cap
        self._trim_past = cap + max(1, cap // 10)

    async def window(self, user_id: int, below: int | None, limit: int) -> FeedWindow | None:
        # Every feed read starts here: one statement on the quick path (Database.fetch), so the
        # entries and the horizon they are complete above come from one snapshot (a trim in
        # between would otherwise hide what it removed from both).
        rows = await self._db.fetch(
            _WINDOW,
            {"u": user_id, "below": below if below is not None else 2**63 - 1, "limit": limit},
        )
        if not rows or rows[0][1] == 0:
            return None
        horizon_id, _, read_at = rows[0][:3]
        entries = [(row[3], row[4]) for row in rows if row[3] is not None]
        return FeedWindow(entries=entries, horizon_id=horizon_id, read_at=read_at, size=rows[0][5])

    async def begin_rebuild(self, user_id: int, now: float) -> None:
        async with self._db.write() as session:
            await session.execute(
                text(
                    "INSERT INTO feeds (user_id, horizon_id, size, built_at, read_at)"
                    " VALUES (:u, 0, 0, 0, :now) ON CONFLICT (user_id) DO NOTHING"
                ),
                {"u": user_id, "now": now},
            )

    async def finish_rebuild(
        self, user_id: int, entries: Sequence[Entry], horizon_id: int, now: float
    ) -> None:
        async with self._db.write() as session:
            if entries:
                await session.execute(
                    text(
                        "INSERT INTO feed_entries (user_id, post_id, author_id)"
                        " VALUES (:u, :p, :a) ON CONFLICT DO NOTHING"
                    ),
                    [{"u": user_id, "p": p, "a": a} for p, a in entries],
                )
            await session.execute(
                text(
                    "UPDATE feeds SET horizon_id = :h, built_at = :now, read_at = :now,"
                    " size = (SELECT count(*) FROM feed_entries WHERE user_id = :u)"
                    " WHERE user_id = :u"
                ),
                {"u": user_id, "h": horizon_id, "now": now},
            )

    async def push(self, post_id: int, author_id: int, user_ids: Collection[int]) -> int:
        ids = sorted(set(user_ids))
        pushed = 0
        # One transaction for the whole call (the caller hands over a few thousand followers at
        # a time): every commit costs an fsync, and ten of them cost more than the rows.
        statements: tuple[TextClause, ...]
        if self._db.is_sqlite:
            # One JSON array for all the ids: SQLAlchemy renders an IN list parameter by
            # parameter (20 ms of a 10,000-follower fan-out), and SQLite's json_each reads it
            # as a table at C speed, with no limit on bound variables.
            statements = _PUSH_JSON
            batches: list[str | list[int]] = [json.dumps(ids)] if ids else []
        else:
            statements = _PUSH_IN
            batches = [ids[start : start + _BATCH] for start in range(0, len(ids), _BATCH)]
        insert, count, past_cap = statements
        async with self._db.write() as session:
            for batch in batches:
                values = {"p": post_id, "a": author_id, "ids": batch}
                await session.execute(insert, values)
                pushed += (await session.execute(count, values)).rowcount  # type: ignore[attr-defined]
                # Only the few feeds now past their cap come back, not a row per feed.
                for (user_id,) in await session.execute(
                    past_cap, {**values, "past": self._trim_past}
                ):
                    await self._trim(session, user_id)
        return int(pushed)

    async def _trim(self, session: AsyncSession, user_id: int) -> None:
        # The cap-th newest entry becomes the horizon: it and everything newer stay.
        kth = (
            await session.execute(
                text(
                    "SELECT post_id FROM feed_entries WHERE user_id = :u"
                    " ORDER BY post_id DESC LIMIT 1 OFFSET :k"
                ),
                {"u": user_id, "k": self.cap - 1},
            )
        ).scalar_one_or_none()
        if kth is None:
            await session.execute(
                text(
                    "UPDATE feeds SET size = (SELECT count(*) FROM feed_entries"
                    " WHERE user_id = :u) WHERE user_id = :u"
                ),
                {"u": user_id},
            )
            return
        await session.execute(
            text("DELETE FROM feed_entries WHERE user_id = :u AND post_id < :k"),
            {"u": user_id, "k": kth},
        )
        await session.execute(
            text(
                "UPDATE feeds SET size = :cap,"
                " horizon_id = CASE WHEN horizon_id > :k THEN horizon_id ELSE :k END"
                " WHERE user_id = :u"
            ),
            {"u": user_id, "k": kth, "cap": self.cap},
        )

    async def merge(self, user_id: int, entries: Sequence[Entry], complete_above: int = 0) -> None:
        async with self._db.write() as session:
            horizon = (
                await session.execute(
                    text(
                        "UPDATE feeds SET horizon_id = CASE WHEN horizon_id > :c"
                        " THEN horizon_id ELSE :c END WHERE user_id = :u RETURNING horizon_id"
                    ),
                    {"u": user_id, "c": complete_above},
                )
            ).scalar_one_or_none()
            if horizon is None:
                return  # no feed: its rebuild will read these from the database
            kept = [{"u": user_id, "p": p, "a": a} for p, a in entries if p >= horizon]
            if not kept:
                return
            await session.execute(
                text(
                    "INSERT INTO feed_entries (user_id, post_id, author_id)"
                    " VALUES (:u, :p, :a) ON CONFLICT DO NOTHING"
                ),
                kept,
            )
            size = (
                await session.execute(
                    text("UPDATE feeds SET size = size + :n WHERE user_id = :u RETURNING size"),
                    {"u": user_id, "n": len(kept)},
                )
            ).scalar_one()
            if size > self._trim_past:
                await self._trim(session, user_id)

    async def remove_author(self, user_ids: Collection[int], author_id: int) -> None:
        ids = sorted(set(user_ids))
        statement = text(
            "DELETE FROM feed_entries WHERE author_id = :a AND user_id IN :ids"
        ).bindparams(bindparam("ids", expanding=True))
        for start in range(0, len(ids), _BATCH):
            async with self._db.write() as session:
                await session.execute(
                    statement, {"a": author_id, "ids": ids[start : start + _BATCH]}
                )

    async def remove_post(self, post_id: int, user_ids: Collection[int]) -> None:
        ids = sorted(set(user_ids))
        statement = text(
            "DELETE FROM feed_entries WHERE post_id = :p AND user_id IN :ids"
        ).bindparams(bindparam("ids", expanding=True))
        for start in range(0, len(ids), _BATCH):
            async with self._db.write() as session:
                await session.execute(statement, {"p": post_id, "ids": ids[start : start + _BATCH]})

    async def touch(self, user_id: int, now: float) -> None:
        async with self._db.write() as session:
            await session.execute(
                text("UPDATE feeds SET read_at = :now WHERE user_id = :u AND read_at < :now"),
                {"u": user_id, "now": now},
            )

    async def expire(self, idle_since: float, limit: int) -> int:
        async with self._db.write() as session:
            users = list(
                (
                    await session.execute(
                        text("SELECT user_id FROM feeds WHERE read_at < :t LIMIT :n"),
                        {"t": idle_since, "n": limit},
                    )
                ).scalars()
            )
            for user_id in users:
                await self._drop(session, user_id)
            return len(users)

    async def drop(self, user_id: int) -> None:
        async with self._db.write() as session:
            await self._drop(session, user_id)

    @staticmethod
    async def _drop(session: AsyncSession, user_id: int) -> None:
        await session.execute(text("DELETE FROM feeds WHERE user_id = :u"), {"u": user_id})
        await session.execute(text("DELETE FROM feed_entries WHERE user_id = :u"), {"u": user_id})

    async def check(self) -> None:
        async with self._db.read() as session:
            await session.execute(text("SELECT 1 FROM feeds LIMIT 1"))

    async def close(self) -> None:
        return None
