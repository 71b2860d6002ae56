"""The web side: JSON API by resource, server-rendered pages (Chinese first, English switch), the
live board over server-sent events, and the public catalog. `app.create_app` builds it;
`serve.main` runs it under uvicorn. Nothing is imported here, so a backend job can use the web's
basics (i18n, db) without building the app."""
