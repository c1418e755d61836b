"""feed marks: a counter per account, moved on by triggers at every change that can alter what a
home feed's first page shows of it, or to it (feed/kept_pages.py)

Triggers, not application code, so that no path is missed: the API's routes, the jobs, the
admin commands, account erasure, and foreign-key cascades alike (SQLite and PostgreSQL both fire
row triggers for cascaded deletes). Each counts in the transaction that made the change, so a
reader that sees the new mark also sees the change.

A later migration that makes SQLite rebuild one of these tables (Alembic's batch mode copies a
table to change a column) drops its triggers and must create them again:
tests/integration/test_feed_marks.py checks that each one is there at head.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (trigger, table, event, condition or "", the accounts whose mark moves): a follow made or
# ended moves its follower's (their feed gains or loses an account); a block or unblock both
# accounts'; a post made ready, its status changing (ready, or gone from ready) or its deletion
# its author's; the viewer's own like or comment their own (liked_by_me, and the ranking's
# affinity); a change of name or privacy the account's (the page shows names, and media URLs
# plain or signed).
_TRIGGERS: list[tuple[str, str, str, str, tuple[str, ...]]] = [
    ("feed_marks_follow_made", "follows", "INSERT", "", ("NEW.follower_id",)),
    ("feed_marks_follow_ended", "follows", "DELETE", "", ("OLD.follower_id",)),
    ("feed_marks_block_made", "blocks", "INSERT", "", ("NEW.blocker_id", "NEW.blocked_id")),
    ("feed_marks_block_ended", "blocks", "DELETE", "", ("OLD.blocker_id", "OLD.blocked_id")),
    ("feed_marks_post_ready", "posts", "INSERT", "NEW.status = 'ready'", ("NEW.author_id",)),
    (
        "feed_marks_post_status",
        "posts",
        "UPDATE OF status",
        "OLD.status IS DISTINCT FROM NEW.status",
        ("NEW.author_id",),
    ),
    ("feed_marks_post_deleted", "posts", "DELETE", "", ("OLD.author_id",)),
    ("feed_marks_like_made", "likes", "INSERT", "", ("NEW.user_id",)),
    ("feed_marks_like_ended", "likes", "DELETE", "", ("OLD.user_id",)),
    ("feed_marks_comment_made", "comments", "INSERT", "", ("NEW.author_id",)),
    ("feed_marks_comment_ended", "comments", "DELETE", "", ("OLD.author_id",)),
    (
        "feed_marks_account_shown",
        "users",
        "UPDATE OF username, display_name, is_private",
        "OLD.username IS DISTINCT FROM NEW.username"
        " OR OLD.display_name IS DISTINCT FROM NEW.display_name"
        " OR OLD.is_private IS DISTINCT FROM NEW.is_private",
        ("NEW.id",),
    ),
]
TRIGGER_NAMES = [name for name, *_ in _TRIGGERS]

_BUMP = (
    "INSERT INTO feed_marks (user_id, mark) VALUES ({account}, 1)"
    " ON CONFLICT (user_id) DO UPDATE SET mark = feed_marks.mark + 1"
)


def upgrade() -> None:
    # No foreign key: a cascade deleting an account's rows moves its mark as the account itself
    # goes; a row left for an account that is gone is a few bytes, never read.
    op.create_table(
        "feed_marks",
        sa.Column("user_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("mark", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_feed_marks")),
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    for name, table, event, condition, accounts in _TRIGGERS:
        bumps = [_BUMP.format(account=account) for account in accounts]
        if postgres:
            when = f" WHEN ({condition})" if condition else ""
            body = "; ".join(bumps)
            op.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS"
                f" $$ BEGIN {body}; RETURN NULL; END $$"
            )
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON {table}"
                f" FOR EACH ROW{when} EXECUTE FUNCTION {name}()"
            )
        else:
            when = f" WHEN {condition.replace('IS DISTINCT FROM', 'IS NOT')}" if condition else ""
            body = "".join(f"{bump}; " for bump in bumps)
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW{when} BEGIN {body}END"
            )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name, table, *_ in _TRIGGERS:
        if postgres:
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("feed_marks")
