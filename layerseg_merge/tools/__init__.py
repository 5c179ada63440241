"""Tools that tell whether and how merging helps: analyze, sweep, recalibrate."""
