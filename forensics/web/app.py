"""The console's ASGI app (Starlette): pages, the JSON API, the SSE alert feed, report files.

Pages are static HTML with ES modules (``static/``), which read the JSON API; no template
renders user data, and the Content-Security-Policy allows scripts from this origin only.
Blocking Redis and registry reads run in Starlette's thread pool (plain ``def`` endpoints).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import secrets
import subprocess
import sys
import threading
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from forensics.alerts import AlertNotFound, evidence_png, find_alert
from forensics.announce import promote_announced, rollback_announced
from forensics.config import Settings
from forensics.errors import ForensicsError, ModelError, RedisUnavailable
from forensics.labels import LABELS, record_label
from forensics.registry import Registry
from forensics.streams import Keys
from forensics.web.access import Access, Principal, allowed_hosts
from forensics.web.backends import RedisHandle, redis_url
from forensics.web.feed import AlertFeed, id_tuple
from forensics.web.listing import crop_fields, crop_png, list_alerts, list_labels
from forensics.web.overview import overview, serving_model
from forensics.web.reports import explain_cache_dir, explain_cache_name, report_file, valid_version, versions
from forensics.web.timeline import timeline

STATIC = resources.files("forensics.web") / "static"
PAGES = {"/": "overview.html", "/alerts": "alerts.html", "/verdict": "verdict.html", "/labels": "labels.html",
         "/models": "models.html"}  # fmt: skip
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")  # fmt: skip
# Reports are self-contained HTML from the trainer (inline styles, data: images): no scripts at all.
REPORT_CSP = "default-src 'none'; img-src data: 'self'; style-src 'unsafe-inline'; sandbox"
_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"), (b"cross-origin-opener-policy", b"same-origin")]  # fmt: skip
_HOWTO_EXPLAIN = "saliency figures need the trainer extra: pip install 'video-forensics[train]' (then reload)"


class SecurityHeaders:
    """Pure ASGI (streams pass through): CSP and hardening headers on every response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in _HEADERS if k not in names]
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", CSP.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Console:
    """What every request needs: settings, the Redis handle, the registry, access rules, the feed."""

    def __init__(self, settings: Settings, *, config: str | None = None):
        self.settings = settings
        self.config = config
        self.keys = Keys(settings.redis.prefix)
        self.redis = RedisHandle(redis_url(settings))
        self.registry = Registry(settings.models_dir)
        self.access = Access(settings.web)
        self.feed = AlertFeed(self.redis, self.keys)
        self.explain_lock = threading.Lock()


def _console(request: Request) -> Console:
    return request.app.state.console


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers={"cache-control": "no-store"})


def _json(data: Any) -> JSONResponse:
    return JSONResponse(data, headers={"cache-control": "no-store"})


def need(request: Request, role: str = "viewer") -> Principal:
    """The signed-in principal with at least ``role``; 401 (nobody) or 403 (too low) otherwise."""
    p = _console(request).access.principal(request)
    if p is None:
        raise HTTPException(401, "sign in first (or send a valid API token)")
    if not p.may(role):
        raise HTTPException(403, f"{p.name} is a {p.role}; this needs the {role} role")
    return p


def need_change(request: Request, role: str) -> Principal:
    """:func:`need` plus the CSRF rules of :mod:`forensics.web.access` for a state change."""
    p = need(request, role)
    if not _console(request).access.csrf_ok(request, p):
        raise HTTPException(403, "refused: missing or wrong CSRF token, or a request from another site")
    return p


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise HTTPException(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return body


# ---- pages -------------------------------------------------------------------------------------


async def page(request: Request) -> Response:
    if _console(request).access.principal(request) is None:
        return RedirectResponse("/login", status_code=303)
    return FileResponse(str(STATIC / PAGES[request.url.path]), headers={"cache-control": "no-store"})


async def login_page(request: Request) -> Response:
    return FileResponse(str(STATIC / "login.html"), headers={"cache-control": "no-store"})


# ---- session -----------------------------------------------------------------------------------


async def api_me(request: Request) -> JSONResponse:
    c = _console(request)
    p = c.access.principal(request)
    return _json({"user": p.name if p else None, "role": p.role if p else None, "via": p.via if p else None,
                  "csrf": c.access.csrf_token(request), "open": c.access.open})  # fmt: skip


async def api_login(request: Request) -> JSONResponse:
    c = _console(request)
    if not c.access.same_origin(request) or request.headers.get("content-type", "").split(";")[0] != "application/json":
        return _error(403, "refused: sign in from the console's own page")
    body = await _body(request)
    name, password = body.get("name"), body.get("password")
    if not isinstance(name, str) or not isinstance(password, str):
        return _error(400, "give a user name and a password")
    user = await run_in_threadpool(c.access.login, name, password)  # argon2 takes tens of ms
    if user is None:
        return _error(401, "wrong user name or password")
    request.session.clear()
    request.session.update({"user": user.name, "csrf": secrets.token_urlsafe(24)})
    return _json({"user": user.name, "role": user.role})


async def api_logout(request: Request) -> JSONResponse:
    need_change(request, "viewer")
    request.session.clear()
    return _json({"ok": True})


# ---- reads ---------------------------------------------------------------------------------------


def api_overview(request: Request) -> JSONResponse:
    need(request)
    c = _console(request)
    out: dict[str, Any] = {"model": serving_model(c.registry), "redis": {"ok": True}}
    try:
        out.update(c.redis.run(lambda r: overview(r, c.settings)))
    except RedisUnavailable as err:
        out["redis"] = {"ok": False, "error": str(err)}
    return _json(out)


def api_alerts(request: Request) -> JSONResponse:
    need(request)
    c = _console(request)
    q = request.query_params
    try:
        limit = int(q.get("limit", "100"))
    except ValueError:
        raise HTTPException(400, "limit must be a number") from None
    before = q.get("before") or None
    if before is not None:
        try:
            id_tuple(before)
        except ValueError:
            raise HTTPException(400, "before must be a stream id like 1700000000000-0") from None
    data = c.redis.run(lambda r: list_alerts(r, c.keys, kind=q.get("kind") or None, source=q.get("source") or None,
                                             before=before, limit=limit))  # fmt: skip
    return _json(data)


def _alert_id(request: Request) -> str:
    aid = request.query_params.get("id", "")
    if not aid or len(aid) > 512:
        raise HTTPException(400, "give an alert id (?id=...)")
    return aid


def api_alert(request: Request) -> JSONResponse:
    need(request)
    c = _console(request)
    aid = _alert_id(request)

    def read(r):
        alert = find_alert(r, c.keys, aid)
        from forensics.web.listing import labels_for

        return {"alert": alert, "label": labels_for(r, c.keys, [aid]).get(aid),
                "crops": crop_fields(r, c.keys, str(alert.get("source")))}  # fmt: skip

    data = c.redis.run(read)
    data["explain"] = {"available": _explain_available(), "howto": None if _explain_available() else _HOWTO_EXPLAIN}
    return _json(data)


def api_timeline(request: Request) -> JSONResponse:
    need(request)
    c = _console(request)
    aid = _alert_id(request)
    return _json(c.redis.run(lambda r: timeline(r, c.keys, find_alert(r, c.keys, aid))))


def api_crop(request: Request) -> Response:
    need(request)
    c = _console(request)
    aid = _alert_id(request)
    field = request.query_params.get("field")

    def read(r):
        alert = find_alert(r, c.keys, aid)
        if field is None:
            return evidence_png(r, c.keys, alert)
        png = crop_png(r, c.keys, str(alert.get("source")), field)
        if png is None:
            raise AlertNotFound(f"no evidence crop {field!r} is kept for alert {aid!r}")
        return png

    png = c.redis.run(read)
    # Crops are stored by detect as PNG; served as such, never re-encoded or interpreted here.
    return Response(png, media_type="image/png", headers={"cache-control": "private, max-age=3600"})


def api_labels(request: Request) -> JSONResponse:
    need(request)
    c = _console(request)
    return _json({"labels": c.redis.run(lambda r: list_labels(r, c.keys))})


def api_models(request: Request) -> JSONResponse:
    need(request)
    c = _console(request)
    if not c.registry.root.is_dir():
        return _error(503, f"model registry {c.registry.root} does not exist or is not a folder", registry=False)
    try:
        return _json(versions(c.registry))
    except (OSError, ValueError) as err:
        return _error(503, f"cannot read the model registry {c.registry.root}: {err}", registry=False)


def report(request: Request) -> Response:
    need(request)
    c = _console(request)
    found = report_file(c.registry, request.path_params["version"], request.path_params["path"])
    if found is None:
        return _error(404, "no such report file in this version's manifest")
    data, media = found
    return Response(data, media_type=media, headers={"content-security-policy": REPORT_CSP, "cache-control": "no-store"})


# ---- state changes -----------------------------------------------------------------------------


async def api_label(request: Request) -> JSONResponse:
    p = need_change(request, "analyst")
    c = _console(request)
    body = await _body(request)
    aid, label = body.get("id"), body.get("label")
    if not isinstance(aid, str) or not aid or label not in LABELS:
        return _error(400, "give {\"id\": ALERT_ID, \"label\": \"real\"|\"fake\"}")
    rec = await run_in_threadpool(c.redis.run, lambda r: record_label(
        r, c.keys, aid, label, by=p.name, crop_ttl_s=c.settings.retrain.label_crop_ttl_s))  # fmt: skip
    return _json(rec)


async def api_promote(request: Request) -> JSONResponse:
    p = need_change(request, "admin")
    c = _console(request)
    body = await _body(request)
    version = body.get("version")
    if not valid_version(version) or body.get("confirm") != version:
        return _error(400, "give {\"version\": V, \"confirm\": V} (the same version twice, to confirm)")
    art = await run_in_threadpool(c.redis.run, lambda r: promote_announced(
        c.registry, r, c.keys, version, reason=f"manual (console, {p.name})"))  # fmt: skip
    return _json({"current": art.version})


async def api_rollback(request: Request) -> JSONResponse:
    need_change(request, "admin")
    c = _console(request)
    body = await _body(request)
    if body.get("confirm") != "rollback":
        return _error(400, "give {\"confirm\": \"rollback\"} to confirm")
    art = await run_in_threadpool(c.redis.run, lambda r: rollback_announced(c.registry, r, c.keys))
    return _json({"current": art.version})


# ---- saliency (the trainer extra, in a child process: forensics/ never imports trainer/) --------


def _explain_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "matplotlib", "trainer"))


def api_explain(request: Request) -> Response:
    need(request)
    c = _console(request)
    aid = _alert_id(request)
    if not _explain_available():
        return _error(501, _HOWTO_EXPLAIN)
    c.redis.run(lambda r: find_alert(r, c.keys, aid))  # 404 for an unknown id before any work
    out = explain_cache_dir(c.settings.state_dir) / explain_cache_name(aid)
    with c.explain_lock:  # one torch process at a time on a shared machine
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, "FORENSICS_REDIS__URL": c.redis.url, "FORENSICS_REDIS__PREFIX": c.keys.prefix,
                   "FORENSICS_MODELS_DIR": str(c.settings.models_dir), "FORENSICS_STATE_DIR": str(c.settings.state_dir)}  # fmt: skip
            argv = [sys.executable, "-m", "forensics.cli", *(["--config", c.config] if c.config else []),
                    "explain", aid, "--out", str(out)]  # fmt: skip
            try:
                done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False,
                                      timeout=c.settings.web.explain_timeout_s)  # fmt: skip
            except subprocess.TimeoutExpired:
                return _error(504, f"the saliency figure took over {c.settings.web.explain_timeout_s:.0f} s")
            if done.returncode != 0 or not out.exists():
                line = (done.stderr.strip().splitlines() or ["explain failed"])[-1]
                return _error(422, line.removeprefix("forensics: error: "))
    return FileResponse(str(out), media_type="image/png")


# ---- live feed -----------------------------------------------------------------------------------


async def api_stream(request: Request) -> Response:
    need(request)
    c = _console(request)
    kind = request.query_params.get("kind") or None
    source = request.query_params.get("source") or None
    last_id = request.headers.get("last-event-id") or request.query_params.get("since")
    try:
        floor = id_tuple(last_id) if last_id else None
    except ValueError:
        floor = None
    sub = c.feed.subscribe()

    def wanted(alert: dict) -> bool:
        return (not kind or alert["kind"] == kind) and (not source or source in str(alert.get("source")))

    def alert_event(entry_id: str, alert: dict) -> dict[str, str]:
        return {"event": "alert", "id": entry_id, "data": json.dumps(alert, separators=(",", ":"))}

    async def events():
        nonlocal floor
        try:
            yield {"event": "status", "data": json.dumps(c.feed.status)}
            if floor is not None:  # a reconnecting page: catch up from the stream first
                try:
                    missed = await run_in_threadpool(c.redis.run, lambda r: list_alerts(
                        r, c.keys, kind=kind, source=source, limit=500))  # fmt: skip
                except RedisUnavailable:
                    missed = {"alerts": []}
                newer = [a for a in missed["alerts"] if id_tuple(a["id"]) > floor][::-1]
                for a in newer:
                    yield alert_event(a["id"], a["alert"])
                if newer:
                    floor = id_tuple(newer[-1]["id"])
            while True:
                msg = await sub.queue.get()
                if msg["type"] == "overflow":
                    return
                if msg["type"] == "status":
                    yield {"event": "status", "data": json.dumps({k: msg[k] for k in ("redis", "error")})}
                elif (floor is None or id_tuple(msg["id"]) > floor) and wanted(msg["alert"]):
                    yield alert_event(msg["id"], msg["alert"])
        finally:
            c.feed.unsubscribe(sub)

    return EventSourceResponse(events(), ping=15, headers={"cache-control": "no-store"})


# ---- errors and assembly -------------------------------------------------------------------------


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if request.url.path.startswith("/api/") or exc.status_code not in (401,):
        return _error(exc.status_code, str(exc.detail))
    return RedirectResponse("/login", status_code=303)


async def _forensics_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, RedisUnavailable):
        return _error(503, str(exc), redis=False)
    if isinstance(exc, AlertNotFound):
        return _error(404, str(exc))
    if isinstance(exc, ModelError):
        return _error(409, str(exc))
    return _error(400, str(exc))


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
        Route("/api/me", api_me),
        Route("/api/login", api_login, methods=["POST"]),
        Route("/api/logout", api_logout, methods=["POST"]),
        Route("/api/overview", api_overview),
        Route("/api/alerts", api_alerts),
        Route("/api/alerts/stream", api_stream),
        Route("/api/alert", api_alert),
        Route("/api/alert/timeline", api_timeline),
        Route("/api/alert/crop", api_crop),
        Route("/api/alert/explain", api_explain),
        Route("/api/alert/label", api_label, methods=["POST"]),
        Route("/api/labels", api_labels),
        Route("/api/models", api_models),
        Route("/api/models/promote", api_promote, methods=["POST"]),
        Route("/api/models/rollback", api_rollback, methods=["POST"]),
        Route("/models/{version}/{path:path}", report),
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


def static_dir() -> Path:
    return Path(str(STATIC))
