"""stories and highlights

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "highlights",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("owner_id", sa.BigInteger(), nullable=False),
        sa.Column("title", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_highlights_owner_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_highlights")),
    )
    with op.batch_alter_table("highlights", schema=None) as batch_op:
        batch_op.create_index("ix_highlights_owner_id_id", ["owner_id", "id"], unique=False)

    op.create_table(
        "stories",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("author_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("archived", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name=op.f("fk_stories_author_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["id"], ["posts.id"], name=op.f("fk_stories_id_posts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stories")),
    )
    with op.batch_alter_table("stories", schema=None) as batch_op:
        batch_op.create_index(
            "ix_stories_archived_expires_at", ["archived", "expires_at"], unique=False
        )
        batch_op.create_index(
            "ix_stories_author_id_expires_at", ["author_id", "expires_at"], unique=False
        )

    op.create_table(
        "highlight_stories",
        sa.Column("highlight_id", sa.BigInteger(), nullable=False),
        sa.Column("story_id", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["highlight_id"],
            ["highlights.id"],
            name=op.f("fk_highlight_stories_highlight_id_highlights"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["story_id"],
            ["stories.id"],
            name=op.f("fk_highlight_stories_story_id_stories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("highlight_id", "story_id", name=op.f("pk_highlight_stories")),
    )
    with op.batch_alter_table("highlight_stories", schema=None) as batch_op:
        batch_op.create_index("ix_highlight_stories_story_id", ["story_id"], unique=False)

    op.create_table(
        "story_views",
        sa.Column("story_id", sa.BigInteger(), nullable=False),
        sa.Column("viewer_id", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("viewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["story_id"],
            ["stories.id"],
            name=op.f("fk_story_views_story_id_stories"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["viewer_id"],
            ["users.id"],
            name=op.f("fk_story_views_viewer_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("story_id", "viewer_id", name=op.f("pk_story_views")),
    )
    with op.batch_alter_table("story_views", schema=None) as batch_op:
        batch_op.create_index("ix_story_views_story_id_id", ["story_id", "id"], unique=False)

    with op.batch_alter_table("posts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=8), server_default="post", nullable=False)
        )
        batch_op.drop_index(batch_op.f("ix_posts_author_status_id"))
        batch_op.create_index(
            "ix_posts_author_kind_status_id", ["author_id", "kind", "status", "id"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("posts", schema=None) as batch_op:
        batch_op.drop_index("ix_posts_author_kind_status_id")
        batch_op.create_index(
            batch_op.f("ix_posts_author_status_id"), ["author_id", "status", "id"], unique=False
        )
        batch_op.drop_column("kind")

    with op.batch_alter_table("story_views", schema=None) as batch_op:
        batch_op.drop_index("ix_story_views_story_id_id")

    op.drop_table("story_views")
    with op.batch_alter_table("highlight_stories", schema=None) as batch_op:
        batch_op.drop_index("ix_highlight_stories_story_id")

    op.drop_table("highlight_stories")
    with op.batch_alter_table("stories", schema=None) as batch_op:
        batch_op.drop_index("ix_stories_author_id_expires_at")
        batch_op.drop_index("ix_stories_archived_expires_at")

    op.drop_table("stories")
    with op.batch_alter_table("highlights", schema=None) as batch_op:
        batch_op.drop_index("ix_highlights_owner_id_id")

    op.drop_table("highlights")
