"""Security tests: hostile input against the real ingest, the broker ACL deliberately open."""
