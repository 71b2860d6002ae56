"""JSON API routes, one module per resource, all under /api/v1."""
