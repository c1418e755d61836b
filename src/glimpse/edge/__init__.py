"""The shipped edge: an nginx configuration for the current settings (`glimpse edge-config`)."""
