"""Every slice's models, imported in one place so that Alembic and tests see the whole schema."""

from glimpse.accounts.models import AccessToken, User
from glimpse.backends.feed.models import FeedEntry, FeedRow
from glimpse.backends.queue.models import Job
from glimpse.db.base import Base
from glimpse.db.node_leases import NodeLease
from glimpse.engagement.models import Comment, Like
from glimpse.feed.models import FeedMark
from glimpse.graph.models import Block, Follow, FollowRequest
from glimpse.posts.models import Media, MediaVariant, Post, UploadUsage
from glimpse.privacy.models import AccountErasure, AccountExport
from glimpse.stories.models import Highlight, HighlightStory, Story, StoryView

__all__ = [
    "AccessToken",
    "AccountErasure",
    "AccountExport",
    "Base",
    "Block",
    "Comment",
    "FeedEntry",
    "FeedMark",
    "FeedRow",
    "Follow",
    "FollowRequest",
    "Highlight",
    "HighlightStory",
    "Job",
    "Like",
    "Media",
    "MediaVariant",
    "NodeLease",
    "Post",
    "Story",
    "StoryView",
    "UploadUsage",
    "User",
]
