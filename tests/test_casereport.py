"""Case reports (issue 21): a real FAKE clip, the session's trained model, real Redis, real headless Chromium."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from forensics.config import load_settings
from tests.conftest import SERVE_DETECTOR
from forensics.registry import Registry
from forensics.streams import Keys
from trainer.synth import render_sample_clip
from workers.detect import DetectWorker
from workers.ingest import FileIngest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def fake_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("case") / "suspect_fake.mp4"
    render_sample_clip(path, fake=True, seed=511, seconds=2.0, difficulty=0.0)
    return path


@pytest.fixture
def csettings(tmp_path, redis_url, prefix, trained, monkeypatch):
    """Settings on a copy of the trained registry, also exported to the environment for the CLI."""
    models = tmp_path / "models"
    shutil.copytree(trained["models_dir"], models, symlinks=True)
    env = {"REDIS__URL": redis_url, "REDIS__PREFIX": prefix, "MODELS_DIR": str(models), "LOG_FORMAT": "json",
           "LOG_LEVEL": "warning", "INGEST__WATCH_DIR": str(tmp_path / "watch"), "INGEST__SAMPLE": "fps",
           "INGEST__FPS": "5", "INGEST__BATCH_SIZE": "4", "INGEST__FRAME_SIZE": "64",
           "FACES__DETECTOR": SERVE_DETECTOR}  # fmt: skip
    for k, v in env.items():
        monkeypatch.setenv(f"FORENSICS_{k}", v)
    return load_settings()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _render_in_chromium(html: Path) -> dict:
    """Load the page in headless Chromium (Selenium + chromedriver); its console errors and images."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"):  # fmt: skip
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        driver.get(html.resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth]);")
        svg = driver.execute_script(
            "const s = document.querySelector('figure svg'); return s ? s.getBoundingClientRect().width : 0;")
        logs = driver.get_log("browser")
    finally:
        driver.quit()
    return {"images": images, "svg_width": svg, "errors": [e for e in logs if e["level"] in ("SEVERE", "WARNING")]}


def test_case_report_of_a_fake_clip_names_file_verdict_timeline_and_model(csettings, fake_clip, tmp_path, capsys):
    from forensics.cli import main
    from forensics.model import load_model
    from forensics.scan import scan_file

    out = tmp_path / "case.html"
    capsys.readouterr()
    assert main(["report", str(fake_clip), "--out", str(out), "--pdf"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out), str(out.with_suffix(".pdf"))]
    page = out.read_text()
    art = Registry(csettings.models_dir).load()
    verdict = scan_file(fake_clip, csettings, load_model(Registry(csettings.models_dir)))
    assert _sha256(fake_clip) in page and art.sha256 in page
    assert f'<div class="label">{verdict["label"]}</div>' in page
    assert verdict["label"] in ("FAKE", "REAL") and verdict["faces_scored"] > 0
    # The timeline is an inline SVG with one line per face track and the threshold.
    svg = re.search(r"<figure><svg.*?</svg></figure>", page, re.S).group(0)
    assert svg.count("<polyline") == len(verdict["tracks"]) >= 1 and "stroke-dasharray" in svg
    assert svg.count("<circle") >= verdict["faces_scored"]
    # Evidence crops and their frames are inlined; nothing is fetched from anywhere.
    assert page.count("data:image/png;base64,") >= 2
    assert not re.search(r"""(?:src|href)=["'](?!data:)""", page)
    assert "h264" in page and "320 × 240" in page
    # It renders in a real browser without console errors, every image decoded.
    shown = _render_in_chromium(out)
    assert shown["errors"] == []
    assert shown["images"] and all(ok and w > 0 for _alt, ok, w in shown["images"])
    assert shown["svg_width"] > 300
    # The PDF's first page carries the verdict.
    text = subprocess.run(["pdftotext", "-l", "1", str(out.with_suffix(".pdf")), "-"], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip
    assert verdict["label"] in text and "Case report" in text


def test_case_report_of_a_verdict_alert_from_redis(r, csettings, fake_clip, tmp_path, capsys):
    from forensics.cli import main

    watch = Path(csettings.ingest.watch_dir)
    watch.mkdir(parents=True)
    shutil.copy2(fake_clip, watch / "dropped.mp4")
    FileIngest(csettings, r).process(watch / "dropped.mp4")
    worker = DetectWorker(csettings, r, consumer="w1")
    worker.load_initial()
    while worker.step_new():
        pass
    keys = Keys(csettings.redis.prefix)
    (alert,) = [json.loads(f[b"event"]) for _i, f in r.xrange(keys.alerts) if b'"kind":"verdict"' in f[b"event"]]
    out = tmp_path / "alert.html"
    capsys.readouterr()
    assert main(["report", alert["alert_id"], "--out", str(out)]) == 0
    page = out.read_text()
    # The file was found in done/ and identified; the timeline came back from the results stream.
    assert _sha256(watch / "done" / "dropped.mp4") == _sha256(fake_clip) in page
    assert alert["alert_id"] in page and alert["model"]["sha256"] in page
    assert f'<div class="label">{alert["label"]}</div>' in page
    svg = re.search(r"<figure><svg.*?</svg></figure>", page, re.S).group(0)
    assert svg.count("<circle") >= alert["faces_scored"]
    assert 'alt="face crop 1"' in page  # the evidence crop the worker kept


def test_report_on_unknown_alert_or_unreadable_file_is_one_line_and_exit_2(csettings, tmp_path, capsys):
    from forensics.cli import main

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video" * 50)
    cases = [(["report", "nobody-1234:verdict"], "no alert 'nobody-1234:verdict'"),
             (["report", "no-such-alert"], "no alert 'no-such-alert'"),
             (["report", str(bad)], "broken.mp4: not a readable video"),
             (["report", str(tmp_path / "missing.mp4")], "missing.mp4: no such file")]  # fmt: skip
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)
    assert not list(Path.cwd().glob("case-*.html"))
