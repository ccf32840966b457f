"""The console's API and access rules, with Starlette's test client against a real redis-server and a
real (trained) model registry: roles, CSRF, report files and path traversal, unknown alert ids,
Redis going down and coming back, and the live SSE feed over a real socket."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time

import httpx
import numpy as np
import pytest
import redis
import uvicorn
from starlette.testclient import TestClient

from forensics.alerts import AlertWriter, encode_crop_png, evidence_field, make_alert
from forensics.config import load_settings
from forensics.errors import ConfigError
from forensics.redisconn import EmbeddedRedis
from forensics.registry import Registry
from forensics.streams import Keys
from forensics.web.access import check_bind, hash_password, token_digest
from forensics.web.app import create_app
from forensics.web.server import bind_socket
from tests.conftest import free_port
from tests.versions import write_version

BASE = "http://127.0.0.1:8080"
PASSWORDS = {"vera": "viewer-pass-1", "anna": "analyst-pass-1", "adam": "admin-pass-1"}
TOKENS = {"vera": "tok-viewer-0123456789", "anna": "tok-analyst-0123456789", "adam": "tok-admin-0123456789"}
ROLES = {"vera": "viewer", "anna": "analyst", "adam": "admin"}


@pytest.fixture(scope="module")
def password_hashes() -> dict[str, str]:
    return {name: hash_password(pw) for name, pw in PASSWORDS.items()}


@pytest.fixture(scope="module")
def registry_template(tmp_path_factory):
    """Two versions, v0001 promoted; made once per module (export takes seconds), tests use copies."""
    root = tmp_path_factory.mktemp("registry")
    reg = Registry(root)
    write_version(reg, 1, report_html=True)
    write_version(reg, 2, report_html=True, parent="v0001")
    reg.promote("v0001", reason="test")
    return root


@pytest.fixture
def registry_dir(tmp_path, registry_template):
    models = tmp_path / "models"
    shutil.copytree(registry_template, models, symlinks=True)
    return models


def _settings(tmp_path, redis_url, prefix, models, *, users=None, **web):
    return load_settings(
        state_dir=tmp_path / "state", models_dir=models, log_format="json",
        redis={"url": redis_url, "prefix": prefix},
        web={"users": users or [], **web},
    )  # fmt: skip


@pytest.fixture
def users(password_hashes):
    return [{"name": n, "role": ROLES[n], "password_hash": password_hashes[n], "token_sha256": token_digest(TOKENS[n])}
            for n in PASSWORDS]  # fmt: skip


@pytest.fixture
def app_with_users(tmp_path, redis_url, prefix, registry_dir, users):
    settings = _settings(tmp_path, redis_url, prefix, registry_dir, users=users)
    return create_app(settings), settings


def _seed_alert(r, prefix, source="clipA-1234abcd", kind="verdict", n=0, label="FAKE"):
    """A verdict alert as detect writes it, with its evidence crop and two results entries."""
    keys = Keys(prefix)
    crop = np.zeros((64, 64, 3), np.uint8)
    crop[16:48, 16:48] = (200, 120, 90)
    r.hset(keys.evidence(source), evidence_field(3, 0), encode_crop_png(crop))
    for seq, frames in ((0, [0, 1, 2]), (1, [3, 4])):
        crops = [[f, f / 5, 0, 0.2 + 0.1 * f, 10.0 + f, 0, [1, 2, 30, 30]] for f in frames]
        crops += [[f, f / 5, 1, 0.1, 9.0, 0, [40, 2, 30, 30]] for f in frames]
        r.xadd(keys.results, {"event": json.dumps({"source": source, "seq": seq, "source_kind": "file", "crops": crops},
                                                  separators=(",", ":"))})  # fmt: skip
    alert = make_alert(kind, source, f"{source}:{kind}:{n}", model={"version": "v0001", "sha256": "0" * 64},
                       file="clipA.mp4", label=label, score=0.61, threshold=0.5, anomaly_rate=0.1, anomalous_tracks=0,
                       frames_scored=5, faces_scored=10, tracks={"0": {"faces": 5, "score": 0.6, "anomaly_rate": 0.0}},
                       evidence={"frame": 3, "pts": 0.6, "box": [1, 2, 30, 30], "track": 0, "fake_prob": 0.5,
                                 "mahalanobis": 13.0, "mahalanobis_threshold": 20.0, "anomalous": False})  # fmt: skip
    AlertWriter(r, keys).emit(alert)
    return alert


def _login(client, name):
    res = client.post("/api/login", json={"name": name, "password": PASSWORDS[name]})
    assert res.status_code == 200, res.text
    return client.get("/api/me").json()["csrf"]


def test_without_users_only_loopback_is_served(tmp_path, redis_url, prefix, registry_dir, users, monkeypatch, capsys):
    with pytest.raises(ConfigError, match="not a loopback address"):
        check_bind(_settings(tmp_path, redis_url, prefix, registry_dir, host="0.0.0.0").web)
    check_bind(_settings(tmp_path, redis_url, prefix, registry_dir, host="127.0.0.1").web)
    check_bind(_settings(tmp_path, redis_url, prefix, registry_dir, host="0.0.0.0", users=users).web)
    # The CLI says so in one line, no traceback.
    from forensics.cli import main

    monkeypatch.setenv("FORENSICS_WEB__HOST", "0.0.0.0")
    monkeypatch.setenv("FORENSICS_REDIS__URL", redis_url)
    assert main(["web"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a loopback address" in err[0] and "web.users" in err[0]


def test_loopback_console_refuses_other_host_names(tmp_path, redis_url, prefix, registry_dir):
    app = create_app(_settings(tmp_path, redis_url, prefix, registry_dir))
    with TestClient(app, base_url="http://evil.example:8080") as c:
        assert c.get("/api/me").status_code == 400  # DNS rebinding: the Host header is checked
    with TestClient(app, base_url=BASE) as c:
        me = c.get("/api/me").json()
        assert me["user"] == "local" and me["role"] == "analyst" and me["open"] is True


def test_healthz_answers_without_a_sign_in_and_discloses_nothing(app_with_users):
    app, _ = app_with_users
    with TestClient(app, base_url=BASE) as c:
        res = c.get("/healthz")
        assert res.status_code == 200 and res.text == "ok\n"
        assert c.get("/api/overview").status_code == 401


def test_pages_and_api_need_a_sign_in(app_with_users):
    app, _ = app_with_users
    with TestClient(app, base_url=BASE) as c:
        res = c.get("/alerts", follow_redirects=False)
        assert res.status_code == 303 and res.headers["location"] == "/login"
        assert c.get("/api/overview").status_code == 401
        assert c.get("/api/alerts/stream").status_code == 401
        bad = c.post("/api/login", json={"name": "anna", "password": "wrong"})
        assert bad.status_code == 401 and bad.json() == {"error": "wrong user name or password"}
        assert c.post("/api/login", json={"name": "nobody", "password": "x"}).status_code == 401
        assert c.get("/api/overview", headers={"authorization": "Bearer nope"}).status_code == 401
        login = c.get("/login")
        assert login.status_code == 200 and "<form id=\"login\">" in login.text
        _login(c, "vera")
        assert c.get("/alerts").status_code == 200


def test_session_cookie_is_httponly_samesite_strict_and_headers_are_set(app_with_users):
    app, _ = app_with_users
    with TestClient(app, base_url=BASE) as c:
        res = c.post("/api/login", json={"name": "vera", "password": PASSWORDS["vera"]})
        cookie = res.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "forensics_session=" in cookie
        page = c.get("/")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff" and page.headers["x-frame-options"] == "DENY"
        # No inline script in any page (the CSP would block it anyway).
        for path in ("/", "/alerts", "/verdict", "/labels", "/models", "/login"):
            html = c.get(path).text
            assert "<script>" not in html and "onclick" not in html and 'type="module" src="/static/js/' in html


def test_roles_decide_who_may_label_and_promote(app_with_users, r, prefix):
    app, settings = app_with_users
    alert = _seed_alert(r, prefix)
    aid = alert["alert_id"]
    with TestClient(app, base_url=BASE) as c:
        csrf = _login(c, "vera")
        res = c.post("/api/alert/label", json={"id": aid, "label": "fake"}, headers={"x-csrf-token": csrf})
        assert res.status_code == 403 and "viewer" in res.json()["error"]
    with TestClient(app, base_url=BASE) as c:
        csrf = _login(c, "anna")
        res = c.post("/api/alert/label", json={"id": aid, "label": "fake"}, headers={"x-csrf-token": csrf})
        assert res.status_code == 200, res.text
        rec = json.loads(r.hget(Keys(prefix).labels, aid))
        assert rec["label"] == "fake" and rec["by"] == "anna" and rec["crops"] == 1 and rec["crop_status"] == "kept"
        assert c.get("/api/labels").json()["labels"][0]["alert_id"] == aid
        listed = c.get("/api/alerts").json()["alerts"]
        assert listed[0]["label"]["label"] == "fake"
        res = c.post("/api/models/promote", json={"version": "v0002", "confirm": "v0002"}, headers={"x-csrf-token": csrf})
        assert res.status_code == 403
    with TestClient(app, base_url=BASE) as c:
        csrf = _login(c, "adam")
        hdr = {"x-csrf-token": csrf}
        assert c.post("/api/models/promote", json={"version": "v0002"}, headers=hdr).status_code == 400  # unconfirmed
        res = c.post("/api/models/promote", json={"version": "v0002", "confirm": "v0002"}, headers=hdr)
        assert res.status_code == 200 and res.json() == {"current": "v0002"}
        assert Registry(settings.models_dir).current() == "v0002"
        announced = json.loads(r.get(Keys(prefix).model))
        assert announced["version"] == "v0002" and announced["previous"] == "v0001" and "adam" in announced["reason"]
        models = c.get("/api/models").json()
        assert models["current"] == "v0002" and models["versions"][0]["version"] == "v0002"
        assert models["history"][0]["version"] == "v0002"
        assert c.post("/api/models/rollback", json={}, headers=hdr).status_code == 400
        res = c.post("/api/models/rollback", json={"confirm": "rollback"}, headers=hdr)
        assert res.status_code == 200 and res.json() == {"current": "v0001"}
        res = c.post("/api/models/promote", json={"version": "v0099", "confirm": "v0099"}, headers=hdr)
        assert res.status_code == 409 and "v0099" in res.json()["error"]
    # Scripts use tokens (no cookie, so no CSRF token needed); the role still applies.
    with TestClient(app, base_url=BASE) as c:
        tok = {"authorization": f"Bearer {TOKENS['anna']}"}
        assert c.post("/api/alert/label", json={"id": aid, "label": "real"}, headers=tok).status_code == 200
        assert json.loads(r.hget(Keys(prefix).labels, aid))["label"] == "real"
        assert c.post("/api/models/rollback", json={"confirm": "rollback"}, headers=tok).status_code == 403


def test_state_changes_without_the_csrf_token_or_from_another_site_are_refused(app_with_users, r, prefix):
    app, _ = app_with_users
    aid = _seed_alert(r, prefix)["alert_id"]
    with TestClient(app, base_url=BASE) as c:
        csrf = _login(c, "anna")
        body = {"id": aid, "label": "fake"}
        assert c.post("/api/alert/label", json=body).status_code == 403  # no token
        assert c.post("/api/alert/label", json=body, headers={"x-csrf-token": "guess"}).status_code == 403
        res = c.post("/api/alert/label", json=body, headers={"x-csrf-token": csrf, "origin": "http://evil.example"})
        assert res.status_code == 403
        # A cross-site HTML form can only send form encodings: refused even with the right token.
        res = c.post("/api/alert/label", content=f"id={aid}&label=fake",
                     headers={"x-csrf-token": csrf, "content-type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert res.status_code == 403
        assert c.post("/api/login", json={"name": "anna", "password": PASSWORDS["anna"]},
                      headers={"origin": "http://evil.example"}).status_code == 403  # fmt: skip
        assert r.hget(Keys(prefix).labels, aid) is None
        ok = c.post("/api/alert/label", json=body, headers={"x-csrf-token": csrf, "origin": BASE})
        assert ok.status_code == 200


def test_unknown_alert_ids_are_404_and_nothing_is_labelled(app_with_users, r, prefix):
    app, _ = app_with_users
    _seed_alert(r, prefix)
    with TestClient(app, base_url=BASE) as c:
        csrf = _login(c, "anna")
        for path in ("/api/alert", "/api/alert/timeline", "/api/alert/crop"):
            res = c.get(path, params={"id": "no-such-alert"})
            assert res.status_code == 404 and "no-such-alert" in res.json()["error"], path
        assert c.get("/api/alert").status_code == 400
        res = c.post("/api/alert/label", json={"id": "no-such-alert", "label": "fake"}, headers={"x-csrf-token": csrf})
        assert res.status_code == 404
        res = c.post("/api/alert/label", json={"id": "x", "label": "maybe"}, headers={"x-csrf-token": csrf})
        assert res.status_code == 400
        res = c.get("/api/alert/crop", params={"id": "clipA-1234abcd:verdict:0", "field": "../../etc"})
        assert res.status_code == 404
        assert r.hlen(Keys(prefix).labels) == 0


def test_alert_detail_crop_and_per_track_timeline(app_with_users, r, prefix):
    app, _ = app_with_users
    alert = _seed_alert(r, prefix)
    _seed_alert(r, prefix, source="other-99", kind="deepfake", n=1)
    aid = alert["alert_id"]
    with TestClient(app, base_url=BASE) as c:
        _login(c, "vera")
        d = c.get("/api/alert", params={"id": aid}).json()
        assert d["alert"]["alert_id"] == aid and d["crops"] == ["3:0"] and d["label"] is None
        png = c.get("/api/alert/crop", params={"id": aid})
        assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
        assert c.get("/api/alert/crop", params={"id": aid, "field": "3:0"}).content == png.content
        tl = c.get("/api/alert/timeline", params={"id": aid}).json()
        assert tl["x"] == "pts" and tl["batches"] == 2 and tl["complete"] is True and tl["scores"] == "full"
        assert sorted(tl["tracks"]) == ["0", "1"]
        assert tl["tracks"]["0"]["frame"] == [0, 1, 2, 3, 4]
        assert tl["tracks"]["0"]["prob"] == pytest.approx([0.2, 0.3, 0.4, 0.5, 0.6])
        kinds = c.get("/api/alerts", params={"kind": "deepfake"}).json()["alerts"]
        assert [a["alert"]["source"] for a in kinds] == ["other-99"]
        assert [a["alert"]["source"] for a in c.get("/api/alerts", params={"source": "clipA"}).json()["alerts"]] == [
            "clipA-1234abcd"]  # fmt: skip
        ov = c.get("/api/overview").json()
        assert ov["redis"]["ok"] and ov["alerts"]["total"] == 2
        assert ov["alerts"]["recent_by_kind"] == {"verdict": 1, "deepfake": 1}
        assert ov["model"]["ok"] and ov["model"]["current"] == "v0001" and len(ov["model"]["sha256"]) == 64


def test_a_verdict_links_to_its_case_report(app_with_users, r, prefix):
    app, _ = app_with_users
    alert = _seed_alert(r, prefix)
    with TestClient(app, base_url=BASE) as c:
        _login(c, "vera")
        res = c.get("/api/alert/report", params={"id": alert["alert_id"]})
        assert res.status_code == 200 and res.headers["content-type"].startswith("text/html")
        assert "sandbox" in res.headers["content-security-policy"]
        page = res.text
        assert "clipA.mp4" in page and "FAKE" in page and "v0001" in page and "<svg" in page
        assert c.get("/api/alert/report", params={"id": "nope:verdict"}).status_code == 404
        assert 'id="case-report"' in c.get("/verdict").text  # the verdict page's link to it


def test_report_files_only_from_the_manifest_never_outside(app_with_users):
    app, settings = app_with_users
    models = settings.models_dir
    manifest = json.loads((models / "v0001" / "manifest.json").read_text())
    reports = [p for p in manifest["files"] if p.startswith("report/") and p.endswith(".html")]
    assert reports, manifest["files"].keys()
    (models / "secret.txt").write_text("outside the version")
    # A symlink planted in the report folder and even listed in the manifest, pointing outside it.
    (models / "v0001" / "report" / "planted.html").symlink_to(models / "secret.txt")
    manifest["files"]["report/planted.html"] = __import__("hashlib").sha256(b"outside the version").hexdigest()
    (models / "v0001" / "manifest.json").write_text(json.dumps(manifest))
    with TestClient(app, base_url=BASE) as c:
        _login(c, "vera")
        ok = c.get(f"/models/v0001/{reports[0]}")
        assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/html")
        assert "sandbox" in ok.headers["content-security-policy"]
        for path in ("/models/v0001/model.onnx", "/models/v0001/manifest.json", "/models/v0001/report/../manifest.json",
                     "/models/v0001/report/%2e%2e/manifest.json", "/models/v0001/report/..%2f..%2fsecret.txt",
                     "/models/..%2fsecret.txt/x", "/models/v0001/report/planted.html", "/models/v0001/../secret.txt",
                     "/models/current/" + reports[0], "/models/v0001/report/%2fetc%2fpasswd",
                     "/models/v0001//etc/passwd", "/models/v9999/" + reports[0]):  # fmt: skip
            res = c.get(path)
            assert res.status_code == 404, (path, res.status_code)
            assert b"outside the version" not in res.content and b"root:" not in res.content
        # A report changed after its manifest was written is not this version's report any more.
        target = models / "v0001" / reports[0]
        target.write_text(target.read_text() + "<p>tampered</p>")
        assert c.get(f"/models/v0001/{reports[0]}").status_code == 404
    with TestClient(app, base_url=BASE) as c:
        res = c.get(f"/models/v0001/{reports[0]}", follow_redirects=False)
        assert res.status_code == 303 and res.headers["location"] == "/login"


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's own, which the test stops and starts again on the same port."""
    server = EmbeddedRedis(tmp_path, port=free_port(), persist=False)
    server.start()
    yield server
    server.stop()


def test_redis_down_is_reported_and_the_console_recovers(tmp_path, own_redis, prefix, registry_dir):
    settings = _settings(tmp_path, own_redis.url, prefix, registry_dir)
    r = redis.Redis.from_url(own_redis.url)
    _seed_alert(r, prefix)
    app = create_app(settings)
    with TestClient(app, base_url=BASE) as c:
        assert c.get("/api/overview").json()["redis"]["ok"] is True
        own_redis.stop()
        ov = c.get("/api/overview")
        assert ov.status_code == 200
        body = ov.json()
        assert body["redis"]["ok"] is False and f"Redis at {own_redis.url}" in body["redis"]["error"]
        assert body["model"]["ok"] is True  # the registry half still shows
        res = c.get("/api/alerts")
        assert res.status_code == 503 and res.json()["redis"] is False and "Traceback" not in res.text
        assert c.get("/").status_code == 200  # the page itself loads and says so
        own_redis.start()
        _seed_alert(redis.Redis.from_url(own_redis.url), prefix)
        deadline = time.monotonic() + 10
        while c.get("/api/overview").json()["redis"]["ok"] is not True:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert len(c.get("/api/alerts").json()["alerts"]) == 1


def test_registry_down_is_reported(tmp_path, redis_url, prefix):
    app = create_app(_settings(tmp_path, redis_url, prefix, tmp_path / "no-models"))
    with TestClient(app, base_url=BASE) as c:
        ov = c.get("/api/overview").json()
        assert ov["redis"]["ok"] is True and ov["model"]["ok"] is False and "no-models" in ov["model"]["error"]
        res = c.get("/api/models")
        assert res.status_code == 503 and res.json()["registry"] is False


def test_sse_feed_delivers_new_alerts_filtered_and_resumes_after_last_event_id(tmp_path, redis_url, prefix, registry_dir, r):
    settings = _settings(tmp_path, redis_url, prefix, registry_dir)
    app = create_app(settings)
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)

        def read_events(url, n, headers=None, emit=None):
            got = []
            with httpx.Client(timeout=10) as client, client.stream("GET", url, headers=headers or {}) as res:
                assert res.status_code == 200 and res.headers["content-type"].startswith("text/event-stream")
                event, eid = None, None
                for line in res.iter_lines():
                    if line.startswith("event:"):
                        event = line.split(":", 1)[1].strip()
                        if event == "status" and emit is not None:
                            emit()
                            emit = None
                    elif line.startswith("id:"):
                        eid = line.split(":", 1)[1].strip()
                    elif line.startswith("data:") and event == "alert":
                        got.append((eid, json.loads(line.split(":", 1)[1])))
                        if len(got) == n:
                            return got
            return got

        def emit_two():
            time.sleep(0.3)
            _seed_alert(r, prefix, source="camA", kind="deepfake", n=1)
            _seed_alert(r, prefix, source="fileB", kind="verdict", n=2)

        got = read_events(f"{base}/api/alerts/stream?kind=verdict", 1, emit=emit_two)
        assert [a["source"] for _, a in got] == ["fileB"]
        # A browser that reconnects sends Last-Event-ID and gets what it missed.
        first_id = r.xrange(Keys(prefix).alerts)[0][0].decode()
        got = read_events(f"{base}/api/alerts/stream", 1, headers={"last-event-id": first_id})
        assert [a["source"] for _, a in got] == ["fileB"]
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.slow
def test_saliency_figure_failures_are_one_clear_line(app_with_users, r, prefix):
    """`forensics explain` runs in a child process; what it refuses comes back as its one-line reason."""
    app, _ = app_with_users
    aid = _seed_alert(r, prefix)["alert_id"]  # raised by a model whose sha256 is not the registry's v0001
    with TestClient(app, base_url=BASE) as c:
        _login(c, "vera")
        d = c.get("/api/alert", params={"id": aid}).json()
        assert d["explain"] == {"available": True, "howto": None}  # the trainer extra is installed here
        assert c.get("/api/alert/explain", params={"id": "no-such-alert"}).status_code == 404
        res = c.get("/api/alert/explain", params={"id": aid})
        assert res.status_code == 422, res.text
        err = res.json()["error"]
        assert "is not the one that raised alert" in err and "\n" not in err and "Traceback" not in err


def test_forensics_up_starts_the_console_and_stops_it(tmp_path, redis_url, prefix):
    import os
    import signal
    import sys

    from forensics.web.server import wait_for_console

    port = free_port()
    env = {**os.environ, "FORENSICS_REDIS__URL": redis_url, "FORENSICS_REDIS__PREFIX": prefix,
           "FORENSICS_STATE_DIR": str(tmp_path / "state"), "FORENSICS_MODELS_DIR": str(tmp_path / "models"),
           "FORENSICS_WEB__PORT": str(port), "FORENSICS_LOG_FORMAT": "json"}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "forensics.cli", "up", "--detect-workers", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/"
        assert wait_for_console(url, 60)
        me = httpx.get(url + "api/me").json()
        assert me["user"] == "local" and me["open"] is True
        ov = httpx.get(url + "api/overview").json()
        assert ov["redis"]["ok"] is True and ov["model"]["ok"] is False  # no registry yet: said, not fatal
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "forensics up: web on" in out and f"console at {url}" in out
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "api/me", timeout=2)
