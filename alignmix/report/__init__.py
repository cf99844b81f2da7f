"""Reports: the per-run HTML page."""
