"""feed marks: also moved when a ready post's media renditions change (feed/kept_pages.py)

A kept first page lists each post's renditions and their URLs. They change after a post is ready
when its AVIF copies are added, or when a processing job runs again (jobs run at least once) and
replaces renditions whose bytes came out otherwise, purging the old ones: a page kept from before
would link files that are gone. So a rendition added, replaced or removed moves its author's
mark, as a post made ready does (migration 0013). Renditions of a post still processing, or of a
story, move nothing: no feed shows them yet, or ever (the post made ready moves the mark then).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (trigger, event, the row whose media's author moves)
_TRIGGERS = [
    ("feed_marks_rendition_added", "INSERT", "NEW"),
    ("feed_marks_rendition_changed", "UPDATE", "NEW"),
    ("feed_marks_rendition_removed", "DELETE", "OLD"),
]
TRIGGER_NAMES = [name for name, *_ in _TRIGGERS]

# (An INSERT ... SELECT, not VALUES: media gone already, in a cascade, moves nothing rather than
# inserting a NULL. The WHERE clause also keeps SQLite from reading ON CONFLICT as a join's ON.)
_BUMP = (
    "INSERT INTO feed_marks (user_id, mark)"
    " SELECT media.author_id, 1 FROM media JOIN posts ON posts.id = media.post_id"
    " WHERE media.id = {row}.media_id AND posts.kind = 'post' AND posts.status = 'ready'"
    " ON CONFLICT (user_id) DO UPDATE SET mark = feed_marks.mark + 1"
)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name, event, row in _TRIGGERS:
        bump = _BUMP.format(row=row)
        if postgres:
            op.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS"
                f" $$ BEGIN {bump}; RETURN NULL; END $$"
            )
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON media_variants"
                f" FOR EACH ROW EXECUTE FUNCTION {name}()"
            )
        else:
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON media_variants FOR EACH ROW"
                f" BEGIN {bump}; END"
            )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name, *_ in _TRIGGERS:
        if postgres:
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON media_variants")
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
