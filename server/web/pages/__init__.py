"""Server-rendered pages (Chinese first, English switch): the main views, the registry forms and
the operator pages. Pages call the services the API calls and never import API routes."""
