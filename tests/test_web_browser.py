"""The console end to end in a real headless Chromium: Redis, a detect worker (and file ingest) on a
trained model, and `forensics web` as its own process. A generated FAKE clip is dropped; its verdict
appears live on the open Live alerts page with its face crop; clicking FAKE records the label in Redis."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from forensics.config import load_settings
from forensics.streams import Keys
from tests.browser import artifacts_dir, chromium
from tests.conftest import free_port


def start_console(settings, log: Path) -> tuple[subprocess.Popen, str]:
    """`forensics web` as a child process on a free loopback port; returns (process, base URL)."""
    port = free_port()
    env = {**os.environ, "FORENSICS_REDIS__URL": settings.redis.url, "FORENSICS_REDIS__PREFIX": settings.redis.prefix,
           "FORENSICS_MODELS_DIR": str(settings.models_dir), "FORENSICS_STATE_DIR": str(settings.state_dir),
           "FORENSICS_WEB__PORT": str(port), "FORENSICS_LOG_FORMAT": "json"}  # fmt: skip
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, "-m", "forensics.cli", "web"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/api/me", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"forensics web did not start: {log.read_text()[-2000:]}")
        time.sleep(0.2)


def wait_for(driver, script: str, timeout: float, poll: float = 0.25):
    """Poll a JS expression in the page until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return ({script});")
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for: {script}")


def run_console_e2e(settings, clip_dir: Path, shot_prefix: str = "web", *, explain: bool = False) -> dict:
    """The scenario, on any settings with a promoted model; returns what it saw (for tests and docs)."""
    import redis

    from trainer.synth import render_sample_clip
    from workers.detect import DetectWorker
    from workers.ingest import FileIngest

    r = redis.Redis.from_url(settings.redis.url)
    keys = Keys(settings.redis.prefix)
    watch = Path(settings.ingest.watch_dir)
    watch.mkdir(parents=True, exist_ok=True)
    proc, base = start_console(settings, clip_dir / "web.log")
    stop = threading.Event()
    ingest, worker = FileIngest(settings, r), DetectWorker(settings, r, consumer="e2e")
    threads = [threading.Thread(target=t, args=(stop,), daemon=True) for t in (ingest.run, worker.run)]
    for t in threads:
        t.start()
    out: dict = {}
    try:
        with chromium() as driver:
            driver.get(f"{base}/alerts")
            wait_for(driver, "document.getElementById('live').textContent === 'live'", 30)
            clip = clip_dir / "dropped_fake.mp4"
            render_sample_clip(clip, fake=True, seed=4242, seconds=2.0, difficulty=0.0)
            t_drop = time.monotonic()
            shutil.move(str(clip), watch / clip.name)
            # The card arrives over SSE (class "new": prepended live, not part of the initial page).
            card = "document.querySelector('article.alert.kind-verdict.new')"
            wait_for(driver, card, 180)
            out["appeared_after_s"] = time.monotonic() - t_drop
            wait_for(driver, f"{card}.querySelector('img.crop') && {card}.querySelector('img.crop').naturalWidth > 0", 20)
            out["alert_id"] = driver.execute_script(f"return {card}.dataset.alertId")
            out["crop_px"] = driver.execute_script(f"return {card}.querySelector('img.crop').naturalWidth")
            out["card_text"] = driver.execute_script(f"return {card}.innerText")
            driver.save_screenshot(str(artifacts_dir() / f"{shot_prefix}-alert-live.png"))
            driver.execute_script(f"{card}.querySelector('button.fake').click()")
            wait_for(driver, f"{card}.querySelector('.label-status').textContent.startsWith('labelled FAKE')", 20)
            out["label_text"] = driver.execute_script(f"return {card}.querySelector('.label-status').textContent")
            driver.save_screenshot(str(artifacts_dir() / f"{shot_prefix}-alerts.png"))
            raw = r.hget(keys.labels, out["alert_id"])
            out["label_record"] = json.loads(raw) if raw else None
            # The verdict page: the per-track timeline is drawn (uPlot canvas) with the evidence crops.
            driver.get(f"{base}/verdict?id={out['alert_id']}")
            wait_for(driver, "document.querySelector('#chart canvas')", 30)
            wait_for(driver, "[...document.querySelectorAll('#crops img')].some(i => i.naturalWidth > 0)", 20)
            out["chart_note"] = driver.execute_script("return document.getElementById('chart-note').textContent")
            out["verdict_label_text"] = driver.execute_script("return document.querySelector('#summary .label-status').textContent")
            driver.save_screenshot(str(artifacts_dir() / f"{shot_prefix}-verdict.png"))
            if explain:  # forensics explain in a child process of the console (loads torch: slow)
                driver.execute_script("document.querySelector('#explain button').click()")
                wait_for(driver, "document.querySelector('img.saliency') && document.querySelector('img.saliency').naturalWidth > 0"
                         " || document.querySelector('#explain .error')", 300, poll=1.0)  # fmt: skip
                out["saliency_error"] = driver.execute_script(
                    "const e = document.querySelector('#explain .error'); return e && e.textContent")
                out["saliency_px"] = driver.execute_script(
                    "const i = document.querySelector('img.saliency'); return i && i.naturalWidth")
            driver.get(f"{base}/")
            wait_for(driver, "document.querySelector('#sources tbody tr')", 20)
            out["overview_sources"] = driver.execute_script("return document.querySelectorAll('#sources tbody tr').length")
            driver.save_screenshot(str(artifacts_dir() / f"{shot_prefix}-overview.png"))
            out["console_errors"] = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    finally:
        stop.set()
        for t in threads:
            t.join(20)
        proc.terminate()
        proc.wait(15)
    return out


@pytest.mark.slow
def test_dropped_fake_clip_appears_live_with_its_face_and_one_click_labels_it(tmp_path, redis_url, prefix, trained):
    models = tmp_path / "models"
    shutil.copytree(trained["models_dir"], models, symlinks=True)
    settings = load_settings(
        state_dir=tmp_path / "state", models_dir=models, log_format="json",
        redis={"url": redis_url, "prefix": prefix},
        ingest={"watch_dir": tmp_path / "watch", "stable_seconds": 0.1, "poll_interval": 0.05, "frame_size": 64,
                "sample": "fps", "fps": 5.0, "batch_size": 4},
        detect={"block_ms": 100},
    )  # fmt: skip
    seen = run_console_e2e(settings, tmp_path, explain=True)
    assert seen["crop_px"] == 64  # the evidence face crop, as detect kept it
    assert "dropped_fake.mp4" in seen["card_text"] and "verdict" in seen["card_text"].lower()  # CSS upper-cases badges
    assert seen["label_text"].startswith("labelled FAKE by local")
    rec = seen["label_record"]
    assert rec is not None and rec["label"] == "fake" and rec["by"] == "local" and rec["kind"] == "verdict"
    assert rec["crops"] >= 1 and rec["crop_status"] == "kept"  # the crop is kept for retraining
    assert seen["verdict_label_text"].startswith("labelled FAKE by local")
    assert "batches" in seen["chart_note"] and seen["overview_sources"] >= 1
    assert seen["console_errors"] == [], seen["console_errors"]  # no CSP violation, no script error
    assert (artifacts_dir() / "web-alerts.png").stat().st_size > 10_000
    assert seen["saliency_error"] is None and seen["saliency_px"] > 100  # the trainer extra is installed here
