"""Every slice's models, imported in one place so that Alembic and tests see the whole schema."""

from glimpse.accounts.models import AccessToken, User
from glimpse.backends.queue.models import Job
from glimpse.db.base import Base
from glimpse.db.node_leases import NodeLease
from glimpse.posts.models import Media, MediaVariant, Post, UploadUsage

__all__ = [
    "AccessToken",
    "Base",
    "Job",
    "Media",
    "MediaVariant",
    "NodeLease",
    "Post",
    "UploadUsage",
    "User",
]
