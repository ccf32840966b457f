"""What every request handler needs: the :class:`Console` (settings, Redis, registry, access rules,
live feed) and the checks and replies they share."""

from __future__ import annotations

import json
import threading
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from forensics.config import Settings
from forensics.registry import Registry
from forensics.streams import Keys
from forensics.web.access import Access, Principal
from forensics.web.backends import RedisHandle, redis_url
from forensics.web.feed import AlertFeed


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


def console_of(request: Request) -> Console:
    return request.app.state.console


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers={"cache-control": "no-store"})


def json_reply(data: Any) -> JSONResponse:
    return JSONResponse(data, headers={"cache-control": "no-store"})


def need(request: Request, role: str = "viewer") -> Principal:
    """The signed-in principal with at least ``role``; 401 (nobody) or 403 (too low) otherwise."""
    p = console_of(request).access.principal(request)
    if p is None:
        raise HTTPException(401, "sign in first (or send a valid API token)")
    if not p.may(role):
        raise HTTPException(403, f"{p.name} is a {p.role}; this needs the {role} role")
    return p


def need_change(request: Request, role: str) -> Principal:
    """:func:`need` plus the CSRF rules of :mod:`forensics.web.access` for a state change."""
    p = need(request, role)
    if not console_of(request).access.csrf_ok(request, p):
        raise HTTPException(403, "refused: missing or wrong CSRF token, or a request from another site")
    return p


async def json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise HTTPException(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return body


def alert_id_param(request: Request) -> str:
    aid = request.query_params.get("id", "")
    if not aid or len(aid) > 512:
        raise HTTPException(400, "give an alert id (?id=...)")
    return aid
