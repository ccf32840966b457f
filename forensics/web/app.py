"""The console's ASGI app (Starlette): pages, the JSON API (``api``), the SSE alert feed, report files.

Pages are static HTML with ES modules (``static/``), which read the JSON API; no template
renders user data, and the Content-Security-Policy allows scripts from this origin only.
"""

from __future__ import annotations

import asyncio
import secrets
from contextlib import asynccontextmanager
from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from forensics.alerts import AlertNotFound
from forensics.config import Settings
from forensics.errors import ForensicsError, ModelError, RedisUnavailable
from forensics.web import api
from forensics.web.access import allowed_hosts
from forensics.web.console import Console, console_of, error
from forensics.web.headers import SecurityHeaders
from forensics.web.saliency import api_explain

STATIC = resources.files("forensics.web") / "static"
PAGES = {"/": "overview.html", "/alerts": "alerts.html", "/verdict": "verdict.html", "/labels": "labels.html",
         "/models": "models.html"}  # fmt: skip


# ---- pages -------------------------------------------------------------------------------------


async def page(request: Request) -> Response:
    if console_of(request).access.principal(request) is None:
        return RedirectResponse("/login", status_code=303)
    return FileResponse(str(STATIC / PAGES[request.url.path]), headers={"cache-control": "no-store"})


async def healthz(request: Request) -> Response:
    """Liveness for container healthchecks and Kubernetes probes: the process answers (no sign-in,
    nothing disclosed; Redis being down is shown on the pages, not here)."""
    return PlainTextResponse("ok\n", headers={"cache-control": "no-store"})


async def login_page(request: Request) -> Response:
    return FileResponse(str(STATIC / "login.html"), headers={"cache-control": "no-store"})


# ---- errors and assembly -------------------------------------------------------------------------


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if request.url.path.startswith("/api/") or exc.status_code not in (401,):
        return error(exc.status_code, str(exc.detail))
    return RedirectResponse("/login", status_code=303)


async def _forensics_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, RedisUnavailable):
        return error(503, str(exc), redis=False)
    if isinstance(exc, AlertNotFound):
        return error(404, str(exc))
    if isinstance(exc, ModelError):
        return error(409, str(exc))
    return error(400, str(exc))


def create_app(settings: Settings, *, config: str | None = None) -> Starlette:
    """The console for ``settings`` (call :func:`forensics.web.access.check_bind` before serving it)."""
    console = Console(settings, config=config)
    cfg = settings.web

    @asynccontextmanager
    async def lifespan(app: Starlette):
        console.feed.start()
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, console.feed.stop)
            console.redis.close()

    secret = cfg.session_secret.get_secret_value() if cfg.session_secret else secrets.token_hex(32)
    routes = [
        *(Route(path, page) for path in PAGES),
        Route("/login", login_page),
        Route("/healthz", healthz),
        Route("/api/me", api.api_me),
        Route("/api/login", api.api_login, methods=["POST"]),
        Route("/api/logout", api.api_logout, methods=["POST"]),
        Route("/api/overview", api.api_overview),
        Route("/api/alerts", api.api_alerts),
        Route("/api/alerts/stream", api.api_stream),
        Route("/api/alert", api.api_alert),
        Route("/api/alert/timeline", api.api_timeline),
        Route("/api/alert/crop", api.api_crop),
        Route("/api/alert/explain", api_explain),
        Route("/api/alert/report", api.api_case_report),
        Route("/api/alert/label", api.api_label, methods=["POST"]),
        Route("/api/labels", api.api_labels),
        Route("/api/models", api.api_models),
        Route("/api/models/promote", api.api_promote, methods=["POST"]),
        Route("/api/models/rollback", api.api_rollback, methods=["POST"]),
        Route("/models/{version}/{path:path}", api.report),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(cfg)),
        Middleware(SessionMiddleware, secret_key=secret, session_cookie="forensics_session",
                   max_age=cfg.session_max_age_s, same_site="strict", https_only=cfg.secure_cookies),
    ]  # fmt: skip
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={HTTPException: _http_error, ForensicsError: _forensics_error})  # fmt: skip
    app.state.console = console
    return app

