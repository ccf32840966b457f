"""The console's JSON API and its live alert stream (SSE). Blocking Redis and registry reads are plain
``def`` endpoints, which Starlette runs in its thread pool."""

from __future__ import annotations

import json
import secrets
from typing import Any

from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from forensics.alerts import AlertNotFound, evidence_png, find_alert
from forensics.casepage import render_html
from forensics.casereport import case_from_alert
from forensics.announce import promote_announced, rollback_announced
from forensics.errors import RedisUnavailable
from forensics.labels import LABELS, record_label
from forensics.web.console import alert_id_param, console_of, error, json_body, json_reply, need, need_change
from forensics.web.feed import id_tuple
from forensics.web.headers import REPORT_CSP
from forensics.web.listing import crop_fields, crop_png, labels_for, list_alerts, list_labels
from forensics.web.overview import overview, serving_model
from forensics.web.reports import report_file, valid_version, versions
from forensics.web.saliency import explain_status
from forensics.web.timeline import timeline

# ---- session -----------------------------------------------------------------------------------


async def api_me(request: Request) -> JSONResponse:
    c = console_of(request)
    p = c.access.principal(request)
    return json_reply({"user": p.name if p else None, "role": p.role if p else None, "via": p.via if p else None,
                  "csrf": c.access.csrf_token(request), "open": c.access.open})  # fmt: skip


async def api_login(request: Request) -> JSONResponse:
    c = console_of(request)
    if not c.access.same_origin(request) or request.headers.get("content-type", "").split(";")[0] != "application/json":
        return error(403, "refused: sign in from the console's own page")
    body = await json_body(request)
    name, password = body.get("name"), body.get("password")
    if not isinstance(name, str) or not isinstance(password, str):
        return error(400, "give a user name and a password")
    user = await run_in_threadpool(c.access.login, name, password)  # argon2 takes tens of ms
    if user is None:
        return error(401, "wrong user name or password")
    request.session.clear()
    request.session.update({"user": user.name, "csrf": secrets.token_urlsafe(24)})
    return json_reply({"user": user.name, "role": user.role})


async def api_logout(request: Request) -> JSONResponse:
    need_change(request, "viewer")
    request.session.clear()
    return json_reply({"ok": True})


# ---- reads ---------------------------------------------------------------------------------------


def api_overview(request: Request) -> JSONResponse:
    need(request)
    c = console_of(request)
    out: dict[str, Any] = {"model": serving_model(c.registry), "redis": {"ok": True}}
    try:
        out.update(c.redis.run(lambda r: overview(r, c.settings)))
    except RedisUnavailable as err:
        out["redis"] = {"ok": False, "error": str(err)}
    return json_reply(out)


def api_alerts(request: Request) -> JSONResponse:
    need(request)
    c = console_of(request)
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
    return json_reply(data)


def api_alert(request: Request) -> JSONResponse:
    need(request)
    c = console_of(request)
    aid = alert_id_param(request)

    def read(r):
        alert = find_alert(r, c.keys, aid)
        return {"alert": alert, "label": labels_for(r, c.keys, [aid]).get(aid),
                "crops": crop_fields(r, c.keys, str(alert.get("source")))}  # fmt: skip

    data = c.redis.run(read)
    data["explain"] = explain_status()
    return json_reply(data)


def api_timeline(request: Request) -> JSONResponse:
    need(request)
    c = console_of(request)
    aid = alert_id_param(request)
    return json_reply(c.redis.run(lambda r: timeline(r, c.keys, find_alert(r, c.keys, aid))))


def api_crop(request: Request) -> Response:
    need(request)
    c = console_of(request)
    aid = alert_id_param(request)
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
    c = console_of(request)
    return json_reply({"labels": c.redis.run(lambda r: list_labels(r, c.keys))})


def api_models(request: Request) -> JSONResponse:
    need(request)
    c = console_of(request)
    if not c.registry.root.is_dir():
        return error(503, f"model registry {c.registry.root} does not exist or is not a folder", registry=False)
    try:
        return json_reply(versions(c.registry))
    except (OSError, ValueError) as err:
        return error(503, f"cannot read the model registry {c.registry.root}: {err}", registry=False)


def api_case_report(request: Request) -> Response:
    """The alert's case report (``forensics report ALERT_ID``'s page), self-contained HTML, served
    sandboxed. The console reads only Redis and the registry, so the file's own facts and the saliency
    figure are left out (the page says so); ``forensics report`` on the daemon's machine adds them."""
    need(request)
    c = console_of(request)
    aid = alert_id_param(request)
    case = c.redis.run(lambda r: case_from_alert(r, c.keys, aid, c.registry, c.settings))
    return Response(render_html(case), media_type="text/html; charset=utf-8",
                    headers={"content-security-policy": REPORT_CSP, "cache-control": "no-store"})  # fmt: skip


def report(request: Request) -> Response:
    need(request)
    c = console_of(request)
    found = report_file(c.registry, request.path_params["version"], request.path_params["path"])
    if found is None:
        return error(404, "no such report file in this version's manifest")
    data, media = found
    return Response(data, media_type=media, headers={"content-security-policy": REPORT_CSP, "cache-control": "no-store"})


# ---- state changes -----------------------------------------------------------------------------


async def api_label(request: Request) -> JSONResponse:
    p = need_change(request, "analyst")
    c = console_of(request)
    body = await json_body(request)
    aid, label = body.get("id"), body.get("label")
    if not isinstance(aid, str) or not aid or label not in LABELS:
        return error(400, "give {\"id\": ALERT_ID, \"label\": \"real\"|\"fake\"}")
    rec = await run_in_threadpool(c.redis.run, lambda r: record_label(
        r, c.keys, aid, label, by=p.name, crop_ttl_s=c.settings.retrain.label_crop_ttl_s))  # fmt: skip
    return json_reply(rec)


async def api_promote(request: Request) -> JSONResponse:
    p = need_change(request, "admin")
    c = console_of(request)
    body = await json_body(request)
    version = body.get("version")
    if not valid_version(version) or body.get("confirm") != version:
        return error(400, "give {\"version\": V, \"confirm\": V} (the same version twice, to confirm)")
    art = await run_in_threadpool(c.redis.run, lambda r: promote_announced(
        c.registry, r, c.keys, version, reason=f"manual (console, {p.name})"))  # fmt: skip
    return json_reply({"current": art.version})


async def api_rollback(request: Request) -> JSONResponse:
    need_change(request, "admin")
    c = console_of(request)
    body = await json_body(request)
    if body.get("confirm") != "rollback":
        return error(400, "give {\"confirm\": \"rollback\"} to confirm")
    art = await run_in_threadpool(c.redis.run, lambda r: rollback_announced(c.registry, r, c.keys))
    return json_reply({"current": art.version})


# ---- live feed -----------------------------------------------------------------------------------


async def api_stream(request: Request) -> Response:
    need(request)
    c = console_of(request)
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
