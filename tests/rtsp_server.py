"""A small RTSP server for tests and benchmarks: serves an H.264 mp4 in a loop, like a camera.

Runs with the SYSTEM python3 (it needs python3-gi and GStreamer's RTSP server library, not
the venv):

    /usr/bin/python3 tests/rtsp_server.py --file clip.mp4 --port 8554 [--mount /live ...]

It binds 127.0.0.1 only. The file's H.264 access units are read once into memory and pushed
into ``appsrc ! h264parse ! rtph264pay`` with timestamps that keep growing across loops, so
a stream lasts as long as the client stays. Every client gets its own pipeline starting at
the file's first frame (the factory is not shared), paced in real time by the RTSP server's
clock-synchronised sinks.

On stdout it writes JSON lines: ``{"event": "ready", "port": P, "mounts": [...]}`` once
listening, and ``{"event": "play", "mount": M, "t0": T}`` when a client's stream starts
playing, where T is the wall clock (unix seconds) at which the stream's running time was 0:
a frame with presentation time p (seconds, from the file's first frame) is sent at T + p.
Benchmarks use it for server-to-Redis latency.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
gi.require_version("GstRtspServer", "1.0")
# GstApp is imported for its side effect: it gives appsink its pull_sample() method.
from gi.repository import GLib, Gst, GstApp, GstRtspServer  # noqa: F401

_PAY = "h264parse ! rtph264pay name=pay0 pt=96 config-interval=1"


class AccessUnit:
    __slots__ = ("data", "delta", "dts", "duration", "pts")

    def __init__(self, data: bytes, pts: int, dts: int, duration: int, delta: bool):
        self.data, self.pts, self.dts, self.duration, self.delta = data, pts, dts, duration, delta


def read_access_units(path: str) -> tuple[list[AccessUnit], int, str]:
    """The file's H.264 access units (byte-stream, SPS/PPS before each keyframe), loop period (ns), caps."""
    pipe = Gst.parse_launch(
        f"filesrc location={json.dumps(path)} ! qtdemux ! h264parse config-interval=-1 "
        "! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink sync=false"
    )
    sink = pipe.get_by_name("sink")
    pipe.set_state(Gst.State.PLAYING)
    raw = []
    caps = None
    while True:
        sample = sink.pull_sample()
        if sample is None:
            break
        caps = caps or sample.get_caps().to_string()
        buf = sample.get_buffer()
        _ok, info = buf.map(Gst.MapFlags.READ)
        data = bytes(info.data)
        buf.unmap(info)
        pts = buf.pts if buf.pts != Gst.CLOCK_TIME_NONE else None
        dts = buf.dts if buf.dts != Gst.CLOCK_TIME_NONE else pts
        raw.append((data, pts, dts, buf.duration, bool(buf.get_flags() & Gst.BufferFlags.DELTA_UNIT)))
    bus = pipe.get_bus()
    err = bus.pop_filtered(Gst.MessageType.ERROR)
    pipe.set_state(Gst.State.NULL)
    if err is not None:
        raise SystemExit(f"rtsp_server: cannot read {path}: {err.parse_error()[0].message}")
    if not raw or raw[0][1] is None:
        raise SystemExit(f"rtsp_server: {path} has no timestamped H.264 video")
    # Shift so the earliest timestamp (a B-frame stream's first dts is negative in mp4) is 0.
    base = min(min(p for _, p, _, _, _ in raw), min(d for _, _, d, _, _ in raw))
    frame_ns = raw[0][3] if raw[0][3] not in (None, Gst.CLOCK_TIME_NONE) else 40_000_000
    aus = [AccessUnit(d, p - base, dt - base, frame_ns, delta) for d, p, dt, _, delta in raw]
    period = max(a.pts for a in aus) - min(a.pts for a in aus) + frame_ns
    return aus, period, caps or ""


class LoopingFactory(GstRtspServer.RTSPMediaFactory):
    def __init__(self, mount: str, aus: list[AccessUnit], period: int):
        super().__init__()
        self.mount, self.aus, self.period = mount, aus, period
        self.set_shared(False)
        self.set_launch(
            "( appsrc name=src is-live=false format=time block=true max-bytes=2000000 "
            f"caps=video/x-h264,stream-format=byte-stream,alignment=au ! {_PAY} )"
        )
        self.connect("media-configure", self._configure)

    def _configure(self, _factory, media) -> None:
        appsrc = media.get_element().get_child_by_name("src")
        threading.Thread(target=self._feed, args=(appsrc,), daemon=True).start()
        media.connect("new-state", self._new_state)

    def _new_state(self, media, state) -> None:
        if state == Gst.State.PLAYING:
            pipeline = media.get_element().get_parent() or media.get_element()
            threading.Thread(target=self._announce_play, args=(pipeline,), daemon=True).start()

    def _announce_play(self, pipeline) -> None:
        # new-state can fire before the pipeline has its clock and base time: wait for them.
        for _ in range(500):
            clock = pipeline.get_clock()
            _, current, _ = pipeline.get_state(0)
            if clock is not None and current == Gst.State.PLAYING and pipeline.get_base_time():
                running_ns = clock.get_time() - pipeline.get_base_time()
                emit({"event": "play", "mount": self.mount, "t0": time.time() - running_ns / 1e9})
                return
            time.sleep(0.01)

    def _feed(self, appsrc) -> None:
        loop = 0
        while True:
            offset = loop * self.period
            for au in self.aus:
                buf = Gst.Buffer.new_wrapped(au.data)
                buf.pts, buf.dts, buf.duration = au.pts + offset, au.dts + offset, au.duration
                if au.delta:
                    buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
                if appsrc.emit("push-buffer", buf) != Gst.FlowReturn.OK:
                    return  # client gone: the pipeline is flushing or stopped
            loop += 1


_OUT = threading.Lock()


def emit(event: dict) -> None:
    with _OUT:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", required=True, help="H.264 mp4 to serve in a loop")
    ap.add_argument("--port", type=int, default=0, help="TCP port (0: a free one, printed on stdout)")
    ap.add_argument("--mount", action="append", help="mount path, repeatable (default /live)")
    args = ap.parse_args()
    Gst.init(None)
    aus, period, _caps = read_access_units(args.file)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    names = args.mount or ["/live"]
    for m in names:
        mounts.add_factory(m, LoopingFactory(m, aus, period))
    if server.attach(None) == 0:
        raise SystemExit(f"rtsp_server: cannot listen on 127.0.0.1:{args.port}")
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    emit({"event": "ready", "port": server.get_bound_port(), "mounts": names, "frames": len(aus),
          "period": period / 1e9})  # fmt: skip
    loop.run()


if __name__ == "__main__":
    main()
