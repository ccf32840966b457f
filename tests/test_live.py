"""Live RTSP sources against a real RTSP server (GStreamer, tests/rtsp_server.py) and a real Redis."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
import structlog
from prometheus_client import generate_latest

from forensics import cli
from forensics.config import LiveSourceSettings
from forensics.logs import configure_logging
from forensics.streams import Keys, ack, read_group
from forensics.wire import decode
from tests.conftest import ROOT, free_port
from tests.media import write_test_video
from workers.live import (
    Backoff,
    IllegalTransition,
    LiveSampler,
    LiveSupervisor,
    PendingSamples,
    Sample,
    SourceState,
    SourceStateMachine,
)

SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(autouse=True)
def _plain_logging():
    # Tests here configure logging onto pytest's captured stderr; do not leave it pointing there.
    yield
    structlog.reset_defaults()


SERVER = ROOT / "tests" / "rtsp_server.py"


def _gst_rtsp_missing() -> str | None:
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    try:
        subprocess.run([SYSTEM_PYTHON, "-c", probe], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return (
            f"GStreamer's RTSP server is not importable by {SYSTEM_PYTHON} "
            "(apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-good "
            "gstreamer1.0-plugins-bad, or run deploy/bootstrap.sh)"
        )
    return None


needs_rtsp = pytest.mark.skipif(bool(_gst_rtsp_missing()), reason=_gst_rtsp_missing() or "")


class RtspServer:
    """tests/rtsp_server.py as a child process: start, kill, restart on the same port."""

    def __init__(self, media: Path, mounts: tuple[str, ...] = ("/live",)):
        self.media, self.mounts = media, mounts
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.events: queue.Queue = queue.Queue()

    def start(self) -> RtspServer:
        args = [SYSTEM_PYTHON, str(SERVER), "--file", str(self.media), "--port", str(self.port)]
        for m in self.mounts:
            args += ["--mount", m]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.events = queue.Queue()
        self.reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self.reader.start()
        ready = self.events.get(timeout=20)
        assert ready["event"] == "ready", ready
        self.port = ready["port"]
        return self

    def _read(self, proc: subprocess.Popen) -> None:
        with proc.stdout:
            for line in proc.stdout:
                self.events.put(json.loads(line))

    def url(self, mount: str = "/live") -> str:
        return f"rtsp://127.0.0.1:{self.port}{mount}"

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self.reader.join(10)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)


@pytest.fixture
def rtsp_server(pattern_clip):
    servers: list[RtspServer] = []

    def make(media: Path | None = None, mounts: tuple[str, ...] = ("/live",)) -> RtspServer:
        srv = RtspServer(media or pattern_clip, mounts).start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        if srv.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                srv.proc.send_signal(signal.SIGCONT)
        srv.kill()


@pytest.fixture(scope="session")
def pattern_clip(tmp_path_factory) -> Path:
    """2 s of 160x120 H.264 at 25 fps (keyframe every second): cheap to serve and decode."""
    return write_test_video(tmp_path_factory.mktemp("live") / "pattern.mp4", frames=50, fps=25, width=160, height=120,
                            gop=25)  # fmt: skip


@pytest.fixture(scope="session")
def face_clip(tmp_path_factory) -> Path:
    """4 s of 320x240 at 25 fps with a real (Haar-detectable) face."""
    from trainer.synth import render_sample_clip

    path = tmp_path_factory.mktemp("live") / "face.mp4"
    render_sample_clip(path, fake=False, seed=0, width=320, height=240, fps=25, seconds=4)
    return path


def live(source_id: str, url: str, **kw) -> LiveSourceSettings:
    """A live source with test-sized timeouts."""
    knobs = {"fps": 2.0, "open_timeout": 2.0, "read_timeout": 1.0, "stall_timeout": 1.5, "backoff_initial": 0.2,
             "backoff_max": 1.0, "backoff_jitter": 0.2, "stable_after": 1.0, "down_after": 1.0, **kw}  # fmt: skip
    return LiveSourceSettings(id=source_id, url=url, **knobs)


@contextlib.contextmanager
def supervising(settings, r, sources: list[LiveSourceSettings]):
    sup = LiveSupervisor(settings, r, sources)
    stop = threading.Event()
    t = threading.Thread(target=sup.run, args=(stop,), daemon=True)
    t.start()
    try:
        yield sup
    finally:
        stop.set()
        t.join(15)
        assert not t.is_alive(), "supervisor did not stop"


def wait_for(what: str, fn, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def batches(r, settings, source: str | None = None):
    out = [decode(f) for _id, f in r.xrange(Keys(settings.redis.prefix).frames)]
    return [b for b in out if source is None or b.source == source]


def source_hash(r, settings, source_id: str) -> dict[str, str]:
    return {
        k.decode(): v.decode() for k, v in r.hgetall(Keys(settings.redis.prefix).source(source_id)).items()
    }


def source_alerts(r, settings) -> list[dict]:
    events = [json.loads(f[b"event"]) for _id, f in r.xrange(Keys(settings.redis.prefix).alerts)]
    return [e for e in events if e["kind"] == "source"]


def closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


class ToyServer:
    """A TCP server on 127.0.0.1 that is not RTSP: a web server's answer (then it hangs up), or none."""

    def __init__(self, mode: str):
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.mode == "garbage":
                with contextlib.suppress(OSError):
                    conn.recv(4096)
                    conn.sendall(
                        b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/html\r\n\r\n<html>no</html>\x00\xff"
                    )
                    conn.close()

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


# -- unit-sized pieces -----------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_with_bounded_jitter_and_resets():
    b = Backoff(0.2, 1.0, 0.0)
    assert [round(b.next_delay(), 3) for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.next_delay() == pytest.approx(0.2)
    j = Backoff(1.0, 30.0, 0.25, random.Random(1))
    delays = [j.next_delay() for _ in range(8)]
    for k, d in enumerate(delays):
        base = min(30.0, 2.0**k)
        assert min(30.0, base * 0.75) <= d <= min(30.0, base * 1.25)
    assert len({round(d, 6) for d in delays[:5]}) == 5  # jittered, not lockstep


def test_sampler_keeps_one_frame_per_tick_and_places_a_frame_without_pts_by_arrival():
    s = LiveSampler(fps=2.0)
    kept = []
    # First frame has no pts (as RTSP's often does), then 25 fps pts starting at 0.12 s.
    for i in range(100):
        pts = None if i == 0 else 0.08 + 0.04 * i
        t = s.clock(pts, 100.0 + 0.04 * i)
        if s.keep(t):
            kept.append(i)
    assert kept[0] == 0
    assert len(kept) == 8  # 4 s at 2 fps
    assert all(11 <= b - a <= 14 for a, b in itertools.pairwise(kept))
    # The camera restarts its clock: sampling goes on at the same rate, without a burst or a gap.
    kept2 = []
    for i in range(50):
        t = s.clock(0.04 * i, 104.0 + 0.04 * i)
        if s.keep(t):
            kept2.append(i)
    assert len(kept2) == 4 and all(11 <= b - a <= 14 for a, b in itertools.pairwise(kept2))


def test_state_machine_allows_only_the_named_transitions():
    seen = []
    m = SourceStateMachine(lambda old, new, reason: seen.append((old.value, new.value)))
    m.to(SourceState.CONNECTING)
    m.to(SourceState.STREAMING)
    with pytest.raises(IllegalTransition):
        m.to(SourceState.CONNECTING)
    assert m.to(SourceState.BACKING_OFF, expect={SourceState.CONNECTING}) is False
    m.to(SourceState.STALLED, "no frame")
    m.to(SourceState.BACKING_OFF)
    m.to(SourceState.STOPPED)
    assert seen == [("stopped", "connecting"), ("connecting", "streaming"), ("streaming", "stalled"),
                    ("stalled", "backing_off"), ("backing_off", "stopped")]  # fmt: skip


def test_pending_samples_drop_the_oldest_when_full():
    p = PendingSamples(2)
    dropped = [p.put(Sample(None, i, None, 0.0, 1)) for i in range(5)]  # type: ignore[arg-type]
    assert [d.index for d in dropped if d is not None] == [0, 1, 2]
    assert [p.get().index, p.get().index, p.get()] == [3, 4, None]


# -- against a real RTSP server ----------------------------------------------------------------


@needs_rtsp
def test_stream_yields_face_crops_at_the_sampled_rate(r, settings, rtsp_server, face_clip):
    settings.faces.detector = "haar"
    srv = rtsp_server(face_clip)
    with supervising(settings, r, [live("cam", srv.url(), fps=2.0)]) as sup:
        first = wait_for("a first batch", lambda: batches(r, settings, "cam"), 10)[0]
        decoded0 = sup.source("cam").stats.snapshot()["frames_decoded"]
        window_start = first.wall[0]
        time.sleep(5.2)
        decoded = sup.source("cam").stats.snapshot()["frames_decoded"] - decoded0
        metrics = generate_latest(sup.registry).decode()
    stats = sup.source("cam").stats.snapshot()
    got = [b for b in batches(r, settings, "cam") if window_start <= b.wall[0] < window_start + 5.0]
    assert 9 <= len(got) <= 11, len(got)  # 5 s at 2 fps
    assert decoded == pytest.approx(5.2 * 25, rel=0.15)  # every frame decoded
    assert stats["no_face_frames"] <= 1
    everything = batches(r, settings, "cam")
    assert [b.seq for b in everything] == list(range(len(everything)))
    idx = [b.frame_index[0] for b in everything]
    assert idx == sorted(set(idx)) and all(10 <= b - a <= 15 for a, b in itertools.pairwise(idx[1:]))
    pts = [b.pts[0] for b in everything if b.pts[0] is not None]
    assert pts == sorted(pts) and len(pts) >= len(everything) - 1
    for b in everything:
        assert b.source_kind == "live" and b.kind == "frames" and b.frame_size == (320, 240)
        assert b.images.shape[1:] == (64, 64, 3)
        x0, y0, x1, y1 = b.box[0]
        assert 30 <= x1 - x0 <= 200 and 30 <= y1 - y0 <= 200  # a face, not the whole 320x240 frame
        assert b.track[0] is not None
    h = source_hash(r, settings, "cam")
    assert h["state"] == "stopped" and h["kind"] == "live" and h["reason"] == ""
    assert int(h["batches_sent"]) == len(everything) == stats["batches_sent"]
    assert (
        int(h["frames_decoded"]) == stats["frames_decoded"]
        and int(h["frames_sampled"]) == stats["frames_sampled"]
    )
    assert int(h["frames_dropped"]) == 0 and int(h["reconnects"]) == 0 and int(h["seq"]) == len(everything)
    assert 'forensics_live_batches_sent_total{source="cam"} ' in metrics
    assert 'forensics_live_source_state{source="cam",state="streaming"} 1.0' in metrics


@needs_rtsp
def test_killed_server_raises_down_alert_and_restarted_server_raises_up_alert(r, settings, rtsp_server):
    srv = rtsp_server()
    cfg = live("cam", srv.url(), down_after=1.0, backoff_initial=0.2, backoff_max=1.0)
    with supervising(settings, r, [cfg]) as sup:
        src = sup.source("cam")
        wait_for("batches", lambda: len(batches(r, settings, "cam")) >= 2, 10)
        srv.kill()
        t_kill = time.monotonic()
        wait_for(
            "stalled or backing off",
            lambda: src.machine.state in (SourceState.STALLED, SourceState.BACKING_OFF),
            3,
        )
        assert time.monotonic() - t_kill < 2.0
        down = wait_for(
            "the down alert", lambda: [a for a in source_alerts(r, settings) if a["state"] == "down"], 5
        )
        assert time.monotonic() - t_kill >= cfg.down_after
        h = source_hash(r, settings, "cam")
        assert h["state"] in ("stalled", "backing_off", "connecting") and h["down"] == "1" and h["reason"]
        srv.start()  # same port
        t_up = time.monotonic()
        wait_for("streaming again", lambda: src.machine.state is SourceState.STREAMING, 5)
        # Within the backoff cap (1.0 s + 20% jitter) plus one connection set-up.
        assert time.monotonic() - t_up < cfg.backoff_max * 1.2 + 1.5
        up = wait_for(
            "the up alert", lambda: [a for a in source_alerts(r, settings) if a["state"] == "up"], 3
        )
        n_before = len(batches(r, settings, "cam"))
        wait_for(
            "batches from the new connection", lambda: len(batches(r, settings, "cam")) >= n_before + 2, 5
        )
    assert [a["alert_id"] for a in down] == ["cam:source:down:1"]
    assert [a["alert_id"] for a in up] == ["cam:source:up:1"]
    assert down[0]["source"] == "cam" and down[0]["reason"] and down[0]["outage"] == 1
    assert up[0]["down_for_s"] >= cfg.down_after
    h = source_hash(r, settings, "cam")
    assert int(h["reconnects"]) >= 1 and h["outages"] == "1" and h["down"] == "0"
    everything = batches(r, settings, "cam")
    assert [b.seq for b in everything] == list(range(len(everything)))
    assert {b.info["connection"] for b in everything} == {1, 2}


@needs_rtsp
def test_frozen_camera_times_out_and_reconnects_when_it_thaws(r, settings, rtsp_server):
    srv = rtsp_server()
    cfg = live("cam", srv.url(), read_timeout=1.0, stall_timeout=3.0, down_after=30)
    with supervising(settings, r, [cfg]) as sup:
        src = sup.source("cam")
        wait_for("streaming", lambda: src.machine.state is SourceState.STREAMING, 10)
        srv.signal(signal.SIGSTOP)  # the camera hangs: the TCP connection stays open, no data
        t0 = time.monotonic()
        wait_for("stalled", lambda: src.machine.state is not SourceState.STREAMING, 4)
        assert time.monotonic() - t0 < cfg.read_timeout + 0.5
        reason = wait_for("a reason in the hash", lambda: source_hash(r, settings, "cam").get("reason"), 2)
        assert reason == "no data for 1 s (read timeout)"
        srv.signal(signal.SIGCONT)
        wait_for("streaming again", lambda: src.machine.state is SourceState.STREAMING and src.stats.counts["reconnects"] >= 1, 6)  # fmt: skip
    assert source_alerts(r, settings) == []  # back before down_after: no alert


@needs_rtsp
def test_watchdog_restarts_a_stream_that_yields_no_frame(r, settings, rtsp_server, tmp_path):
    # Keyframes only, on a camera with a keyframe every 4 s: packets flow but no frame comes.
    clip = write_test_video(tmp_path / "longgop.mp4", frames=100, fps=25, width=160, height=120, gop=100)
    srv = rtsp_server(clip)
    cfg = live("cam", srv.url(), keyframes_only=True, read_timeout=1.0, stall_timeout=1.5, down_after=30)
    with supervising(settings, r, [cfg]) as sup:
        src = sup.source("cam")
        wait_for("streaming", lambda: src.machine.state is SourceState.STREAMING, 10)
        t0 = time.monotonic()
        wait_for("stalled", lambda: src.machine.state is not SourceState.STREAMING, 4)
        assert cfg.stall_timeout - 0.2 <= time.monotonic() - t0 <= cfg.stall_timeout + 0.7
        wait_for("a reconnect", lambda: src.stats.counts["reconnects"] >= 1, 3)
    assert (SourceState.STALLED, "no frame for 1.5 s (watchdog)") in src.machine.history
    assert source_hash(r, settings, "cam")["reason"] == "no frame for 1.5 s (watchdog)"


@needs_rtsp
def test_unreachable_and_non_rtsp_urls_fail_fast_with_a_clear_reason(r, settings, rtsp_server, capfd):
    configure_logging("ingest", "info", "json")
    srv = rtsp_server()
    garbage, silent = ToyServer("garbage"), ToyServer("silent")
    cases = {
        "refused": (
            f"rtsp://admin:s3cret@127.0.0.1:{closed_port()}/cam",
            "connection refused by 127.0.0.1",
            1.0,
        ),
        "garbage": (f"rtsp://127.0.0.1:{garbage.port}/cam", "does not speak RTSP", 1.5),
        "silent": (
            f"rtsp://127.0.0.1:{silent.port}/cam",
            "no usable answer within 1.5 s (open timeout)",
            2.5,
        ),
        "wrongpath": (srv.url("/nope"), "the server answered 404 Not Found (check the path)", 1.5),
    }
    sources = [live(k, url, open_timeout=1.5, down_after=60) for k, (url, _, _) in cases.items()]
    try:
        t0 = time.monotonic()
        with supervising(settings, r, sources) as sup:
            failed_after: dict[str, float] = {}

            def all_failed() -> bool:
                for k in cases:
                    if k not in failed_after and sup.source(k).reason:
                        failed_after[k] = time.monotonic() - t0
                return len(failed_after) == len(cases)

            wait_for("every source to fail", all_failed, 5, interval=0.01)
            wait_for("hashes", lambda: all(source_hash(r, settings, k).get("reason") for k in cases), 2)
            hashes = {k: source_hash(r, settings, k) for k in cases}
    finally:
        garbage.close()
        silent.close()
    for k, (_url, reason, within) in cases.items():
        assert failed_after[k] < within, (k, failed_after[k])
        assert reason in hashes[k]["reason"], (k, hashes[k]["reason"])
        assert hashes[k]["state"] in ("backing_off", "connecting"), k
        assert int(hashes[k]["batches_sent"]) == 0
    assert batches(r, settings) == []
    assert hashes["refused"]["url"].startswith("rtsp://admin:***@127.0.0.1:")
    assert not any("s3cret" in v for h in hashes.values() for v in h.values())
    err = capfd.readouterr().err
    assert "Traceback" not in err and "s3cret" not in err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    for k in cases:
        mine = [ln for ln in lines if ln.get("source") == k and ln["level"] == "warning"]
        assert mine and "cannot stream: " in mine[0]["event"] and mine[0]["role"] == "ingest", k


@needs_rtsp
def test_three_streams_one_dead_the_live_two_keep_their_rate(r, settings, rtsp_server):
    srv = rtsp_server(mounts=("/a", "/b"))
    sources = [
        live("a", srv.url("/a")),
        live("b", srv.url("/b")),
        live("dead", f"rtsp://127.0.0.1:{closed_port()}/x"),
    ]
    with supervising(settings, r, sources) as sup:
        wait_for("both live streams", lambda: {b.source for b in batches(r, settings)} >= {"a", "b"}, 10)
        t_start = time.time()
        time.sleep(4.2)
        dead = sup.source("dead")
        assert dead.machine.state in (SourceState.BACKING_OFF, SourceState.CONNECTING)
        assert dead.stats.counts["reconnects"] >= 2
    for sid in ("a", "b"):
        got = [b for b in batches(r, settings, sid) if t_start <= b.wall[0] < t_start + 4.0]
        assert 7 <= len(got) <= 9, (sid, len(got))  # 4 s at 2 fps
    assert batches(r, settings, "dead") == []
    assert source_alerts(r, settings)[0]["alert_id"] == "dead:source:down:1"


@needs_rtsp
def test_backlog_over_the_limit_drops_the_oldest_samples_and_sends_the_newest(r, settings, rtsp_server):
    srv = rtsp_server()
    keys = Keys(settings.redis.prefix)
    cfg = live("cam", srv.url(), fps=4.0, max_backlog=3, max_pending=2)
    with supervising(settings, r, [cfg]) as sup:
        src = sup.source("cam")
        wait_for("the stream to reach the limit", lambda: r.xlen(keys.frames) >= 3, 10)
        decoded0 = src.stats.snapshot()["frames_decoded"]
        most = 0
        t_end = time.monotonic() + 3.0
        while time.monotonic() < t_end:  # nobody consumes for 3 s
            most = max(most, r.xlen(keys.frames))
            time.sleep(0.02)
        held = src.stats.snapshot()
        assert most <= cfg.max_backlog  # never over the limit
        assert held["frames_decoded"] - decoded0 >= 3.0 * 25 * 0.85  # decoding went on
        assert held["dropped_backlog"] >= 3.0 * 4 - 2 - 2  # 12 samples in 3 s, 2 may wait
        before = batches(r, settings, "cam")
        # A consumer catches up: what comes next is the newest frames, not the oldest held ones.
        entries = read_group(r, keys.frames, "c1", count=100, block_ms=10)
        ack(r, keys.frames, [e.id for e in entries])
        t_catch = time.time()
        wait_for("sending again", lambda: len(batches(r, settings, "cam")) > len(before), 3)
    after = batches(r, settings, "cam")[len(before)]
    assert after.wall[0] >= t_catch - cfg.max_pending / cfg.fps - 0.3  # at most max_pending samples old
    assert after.frame_index[0] - before[-1].frame_index[0] >= 2.5 * 25  # the held seconds were skipped
    assert after.seq == before[-1].seq + 1
    h = source_hash(r, settings, "cam")
    stats = src.stats.snapshot()
    # Every sample is accounted for: sent, dropped, or still waiting when the source stopped.
    assert stats["frames_sampled"] == stats["frames_sent"] + stats["frames_dropped"] + len(src.pending)
    assert int(h["frames_dropped"]) == stats["frames_dropped"] == stats["dropped_backlog"] > 0
    assert stats["dropped_overload"] == stats["dropped_redis"] == stats["dropped_error"] == 0


@needs_rtsp
def test_keyframes_only_decodes_one_frame_per_keyframe_interval(r, settings, rtsp_server):
    srv = rtsp_server()  # keyframe every 25 frames = 1 s
    with supervising(
        settings, r, [live("cam", srv.url(), keyframes_only=True, fps=2.0, stall_timeout=2.5)]
    ) as sup:
        wait_for("a first batch", lambda: batches(r, settings, "cam"), 10)
        time.sleep(3.1)
        src = sup.source("cam")
    got = batches(r, settings, "cam")
    stats = src.stats.snapshot()
    assert 3 <= stats["frames_decoded"] <= 5 and stats["frames_sampled"] == stats["frames_decoded"]
    assert len(got) == stats["batches_sent"] == stats["frames_decoded"]
    pts = [b.pts[0] for b in got if b.pts[0] is not None]
    assert all(d == pytest.approx(1.0, abs=0.05) for d in (b - a for a, b in itertools.pairwise(pts)))
    assert src.stats.counts["reconnects"] == 0  # 1 s between frames does not trip a 2.5 s watchdog


@needs_rtsp
def test_sequence_numbers_and_counters_continue_across_ingest_restarts(r, settings, rtsp_server):
    srv = rtsp_server()
    for run in range(2):
        with supervising(settings, r, [live("cam", srv.url(), fps=4.0)]):
            wait_for("3 batches", lambda run=run: len(batches(r, settings, "cam")) >= 3 * (run + 1), 10)
    everything = batches(r, settings, "cam")
    assert [b.seq for b in everything] == list(range(len(everything)))
    h = source_hash(r, settings, "cam")
    assert int(h["batches_sent"]) == len(everything) == int(h["seq"])
    assert int(h["connections"]) == 2


@needs_rtsp
def test_cli_ingests_rtsp_streams_and_lists_sources(r, settings, rtsp_server, redis_url, monkeypatch, capsys):
    srv = rtsp_server()
    prefix = settings.redis.prefix
    env = {**os.environ, "FORENSICS_REDIS__URL": redis_url, "FORENSICS_REDIS__PREFIX": prefix,
           "FORENSICS_FACES__DETECTOR": "none", "FORENSICS_INGEST__FRAME_SIZE": "32", "FORENSICS_LOG_FORMAT": "json",
           "FORENSICS_INGEST__METRICS_PORT": str(free_port())}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "forensics.cli", "ingest", "--rtsp", f"cam={srv.url()}",
         "--rtsp", f"dead=rtsp://127.0.0.1:{closed_port()}/x"],
        env=env, cwd=settings.state_dir.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for("batches from the CLI", lambda: len(batches(r, settings, "cam")) >= 2, 20)
        for k in ("FORENSICS_REDIS__URL", "FORENSICS_REDIS__PREFIX"):
            monkeypatch.setenv(k, env[k])
        assert cli.main(["sources", "--json"]) == 0
        rows = {row["id"]: row for row in json.loads(capsys.readouterr().out)}
        assert rows["cam"]["state"] == "streaming" and rows["cam"]["frames_sent"] >= 2
        assert (
            rows["dead"]["state"] in ("backing_off", "connecting")
            and "connection refused" in rows["dead"]["reason"]
        )
        assert cli.main(["sources"]) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].split()[:3] == ["ID", "KIND", "STATE"] and len(table) == 3
        assert table[1].split()[:3] == ["cam", "live", "streaming"]
        port = env["FORENSICS_INGEST__METRICS_PORT"]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'forensics_live_frames_decoded_total{source="cam"}' in metrics
        assert 'forensics_live_source_state{source="dead",state="backing_off"}' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err
    assert source_hash(r, settings, "cam")["state"] == "stopped"


def test_cli_rejects_a_malformed_rtsp_spec_in_one_line(capsys):
    assert cli.main(["ingest", "--rtsp", "cam1 rtsp://host/stream"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "forensics: error: --rtsp 'cam1 rtsp://host/stream': expected ID=URL, e.g. --rtsp cam1=rtsp://10.0.0.5:554/stream"
    ]


@needs_rtsp
def test_redis_restart_under_a_live_source_keeps_decoding_counts_drops_and_resumes_sending(settings, rtsp_server,
                                                                                            tmp_path, capfd):  # fmt: skip
    from forensics.redisconn import connect
    from tests.redis_process import RedisProcess

    server = RedisProcess(tmp_path / "redis", free_port())
    server.start()
    settings.redis.url = server.url
    settings.redis.retry_cap_s = 1.0
    configure_logging("ingest", "info", "json")
    r = connect(server.url, connect_timeout=1, socket_timeout=2)
    srv = rtsp_server()
    try:
        with supervising(settings, r, [live("cam", srv.url(), fps=4.0)]) as sup:
            src = sup.source("cam")
            wait_for("batches", lambda: src.stats.counts["batches_sent"] >= 3, 10)
            killed = time.time()
            server.kill()
            decoded_at_kill = src.stats.counts["frames_decoded"]
            time.sleep(3.0)
            during = dict(src.stats.counts)
            assert src.machine.state is SourceState.STREAMING  # the camera side does not notice
            assert during["frames_decoded"] > decoded_at_kill + 30  # kept decoding (25 fps)
            assert during["dropped_redis"] > 0  # and counted what it could not send
            sent_before = during["batches_sent"]
            restarting = time.time()
            back = server.start()
            wait_for("sending again", lambda: src.stats.counts["batches_sent"] >= sent_before + 3, 10)
            resumed = time.time() - back
        h = source_hash(r, settings, "cam")
        assert int(h["dropped_redis"]) >= during["dropped_redis"]
        assert resumed < 10
    finally:
        r.close()
        server.stop()
    lines = [json.loads(x) for x in capfd.readouterr().err.splitlines() if x.startswith("{")]
    lost = [x for x in lines if x["event"].startswith("lost the connection to Redis") and x.get("source") == "cam"]
    again = [x for x in lines if x["event"] == "connected to Redis again" and x.get("source") == "cam"]
    assert len(lost) == 1 and len(again) == 1  # one outage, logged once
    # With its length: from the first failed send after the kill (the next batch, not the kill itself) to the
    # first send after the restart, as the two lines' timestamps say.
    lost_at, again_at = (datetime.fromisoformat(x["timestamp"]).timestamp() for x in (lost[0], again[0]))
    assert killed <= lost_at < restarting <= again_at
    assert abs(again[0]["down_s"] - (again_at - lost_at)) < 0.05, (again[0], lost_at, again_at)
