"""Names of the feed's jobs, apart from their handlers so that the slices that enqueue them
(graph, posts) need not import the feed's machinery."""

FAN_OUT_JOB = "fan_out_post"
UNFAN_OUT_JOB = "remove_post_from_feeds"
MERGE_AUTHOR_JOB = "merge_author_into_feed"
REMOVE_AUTHOR_JOB = "remove_author_from_feed"
EXPIRE_FEEDS_JOB = "expire_inactive_feeds"
