"""The app factory: routes, error handlers, static assets, security headers, and the lifespan that
opens the database pool and the jishi_live listener."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI
from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES, GZipMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from protocols.derive import Params
from server.config import DeriveSettings, WebSettings
from server.evaluation import privacy
from server.web import errors, openapi, templating, vendor
from server.web.api import (
    agents,
    audit,
    checkin,
    evaluation,
    evidence,
    imports,
    instruments,
    lists,
    live,
    people,
    periods,
    plausibility,
    proposals,
    public,
    quarantine,
    registrations,
    registry,
    service_records,
    session,
    timeline,
)
from server.web.api import alerts as alert_routes
from server.web.api import bookings as booking_routes
from server.web.db import Database
from server.web.limits import BodyLimit
from server.web.middleware import AppDone, ResponseHeaders
from server.web.pages import alerts as pages_alerts
from server.web.pages import bookings as pages_bookings
from server.web.pages import checkin as pages_checkin
from server.web.pages import login as pages_login
from server.web.pages import main as pages
from server.web.pages import ops as pages_ops
from server.web.pages import registry as pages_registry
from server.web.pages import setup as pages_setup
from server.web.services.board import LiveHub
from server.web.services.results import Results

DESCRIPTION = """\
Jishi (机时): verified machine-hours of shared research instruments.

Authentication: people log in (`POST /api/v1/auth/login`) and get a session cookie; changes made
with the cookie need the `X-CSRF-Token` header (returned by login and `/auth/me`). Scripts use
`Authorization: Bearer jst_…` tokens (`POST /api/v1/tokens`). Agents enrol once with a one-time
`jse_…` token issued by the platform operator.

Roles: platform operator (everything), unit manager (own unit only), evaluator (reads every unit;
people only as stable pseudonyms, art. 17). Every change is recorded in the audit log.

Errors: `{"error": {"code", "message", "fields"?}}`; the message is Chinese, or English with
`Accept-Language: en` or `?lang=en`.
"""

# Never compressed: the live stream (a compressor buffers; each event must leave at once) and what is
# compressed already. Starlette's list has the stream; it is named here so that stays true.
_NO_GZIP = tuple(sorted({*DEFAULT_EXCLUDED_CONTENT_TYPES, "text/event-stream"}))


def create_app(settings: WebSettings, derive: Params | None = None) -> FastAPI:
    """The app of one web process: `settings` and `derive` (the derivation parameters, for evidence of
    agents whose stored rows do not record their own) come from the entry point, loaded once there."""
    vendor.plotly_path()  # the chart library must be installed before anything starts
    db = Database(settings.dsn, settings.pool_min, settings.pool_max, read_dsn=settings.read_dsn or None)
    hub = LiveHub(settings.dsn, stale_s=settings.live_stale_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Page handlers run in threads; more of them than twice the pool only wait for a connection
        # while each holds its request and its own malloc arena (anyio's default is 40 threads).
        to_thread.current_default_thread_limiter().total_tokens = max(4, 2 * settings.pool_max)
        db.open()
        if settings.read_dsn:  # what a read would otherwise create on first use must exist before reads go to a replica
            with db.write(None) as conn:
                privacy.load(conn)
        hub.start()
        try:
            yield
        finally:
            await hub.stop()
            db.close()

    app = FastAPI(title="Jishi 机时", version="1", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.render_error = templating.render_error  # errors.py renders error pages through it
    app.state.derive = derive if derive is not None else DeriveSettings().params()
    app.state.db = db
    app.state.hub = hub
    app.state.results = Results(settings.report_cache_s, settings.report_cache_entries, settings.report_cache_past_s,
                                shared=settings.report_cache_shared, computing=settings.report_compute_slots)
    errors.install(app)
    # request bodies: 413 above the limit, before they are read (server/web/limits.py)
    app.add_middleware(BodyLimit, default=settings.max_body_bytes, overrides={"/api/v1/imports": None})
    if settings.trusted_proxies:  # proxy headers from these addresses only (issue 13)
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=[
            h.strip() for h in settings.trusted_proxies.split(",") if h.strip()])
    openapi.install(app)
    for module in (session, registry, instruments, people, service_records, proposals, lists, imports, agents, live,
                   timeline, evidence, plausibility, periods, evaluation, public, audit, quarantine, registrations,
                   checkin):
        app.include_router(module.router)
    app.include_router(pages_login.router)
    app.include_router(pages_registry.router)
    app.include_router(pages_setup.router)
    app.include_router(pages_ops.router)
    app.include_router(alert_routes.router)
    app.include_router(pages_alerts.router)
    app.include_router(booking_routes.router)
    app.include_router(pages_bookings.router)
    app.include_router(pages_checkin.router)
    app.include_router(pages.router)
    app.include_router(vendor.router)
    app.mount("/static", vendor.StaticAssets(directory=str(vendor.STATIC_DIR)), name="static")
    app.add_middleware(AppDone)  # just inside the compressor: its time apart in Server-Timing
    # pages, JSON and static files gzipped when asked for and worth it; never the live stream
    app.add_middleware(GZipMiddleware, minimum_size=1000, compresslevel=6, exclude_content_types=_NO_GZIP)
    app.add_middleware(ResponseHeaders)  # outermost: security headers, Server-Timing, X-Worker

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, bool]:
        with db.read() as conn:
            conn.execute("SELECT 1")
        return {"ok": True, "live_listening": hub.listening.is_set()}

    return app
