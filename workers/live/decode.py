"""The decoder thread of a live source: PyAV over TCP with open/read timeouts, reconnects with
backoff, decode every frame (or keyframes), sample at the source's fps into the pending queue.

It never talks to Redis, so a slow or unreachable Redis never delays decoding."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import av

from workers.live.sampling import LiveSampler, Sample
from workers.live.state import RUNNING, SourceState


def _ffmpeg_message(err: BaseException) -> str:
    return str(getattr(err, "strerror", None) or err).strip()


class RtspDecoder:
    """Mixin of :class:`~workers.live.source.LiveSource`: the decoder thread."""

    def _decode_loop(self) -> None:
        attempts = 0
        while not self._stop.is_set():
            if attempts:
                self.stats.add("reconnects")
            attempts += 1
            self._restart.clear()
            self.retry_in = None
            self.machine.to(SourceState.CONNECTING, expect={SourceState.STOPPED, SourceState.BACKING_OFF})
            try:
                reason = self._connect_and_stream()
            except Exception as err:  # a bug here, not the camera: say so loudly, keep the source alive
                self.log.exception("live source failed unexpectedly; will reconnect")
                reason = f"internal error: {type(err).__name__}: {err}"
            if self._stop.is_set():
                break
            was_streaming = self.machine.to(SourceState.STALLED, reason, expect={SourceState.STREAMING})
            self._failed(reason)
            delay = self.backoff.next_delay()
            self.retry_in = delay
            self.machine.to(
                SourceState.BACKING_OFF, reason, expect={SourceState.CONNECTING, SourceState.STALLED}
            )
            level = "warning" if reason != self._logged_reason else "debug"
            what = "stream lost" if was_streaming else "cannot stream"
            getattr(self.log, level)(
                f"{what}: {reason}; retrying", retry_in_s=round(delay, 2), url=self.url_shown
            )
            self._logged_reason = reason
            self._stop.wait(delay)
        self.machine.to(SourceState.STOPPED, "stopped", expect=RUNNING)

    def _open_options(self) -> dict[str, str]:
        scheme = urlsplit(self.cfg.url).scheme.lower()
        if scheme not in ("rtsp", "rtsps"):
            return {}
        # TCP: no lost packets (and no smeared frames) on lossy links, and it passes NAT and
        # firewalls. fpsprobesize=0: sampling goes by timestamps, so opening does not wait ~1 s
        # of stream to estimate a frame rate.
        return {
            "rtsp_transport": "tcp",
            # Socket I/O timeout (microseconds), a backstop: the open/read timeouts given to
            # av.open are the ones meant to fire, so this must not be shorter than either.
            "timeout": str(int(max(self.cfg.open_timeout, self.cfg.read_timeout) * 1e6)),
            "fpsprobesize": "0",
        }

    def _connect_and_stream(self) -> str:
        """Open the URL and decode until the stream ends or stalls; returns why it ended."""
        cfg = self.cfg
        t0 = time.monotonic()
        try:
            container = av.open(
                cfg.url, options=self._open_options(), timeout=(cfg.open_timeout, cfg.read_timeout)
            )
        except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
            return self._open_failure(err, time.monotonic() - t0)
        try:
            if not container.streams.video:
                return "the URL has no video stream"
            stream = container.streams.video[0]
            cc = stream.codec_context
            cc.thread_count = cfg.decode_threads
            cc.thread_type = "AUTO" if cfg.decode_threads != 1 else "NONE"
            self._connection += 1
            self._last_progress = time.monotonic()
            self.stats.add("connections")
            self.stats.width, self.stats.height, self.stats.codec = cc.width, cc.height, cc.name
            return self._stream(container, stream)
        except (av.FFmpegError, OSError) as err:
            if (
                isinstance(err, av.error.ExitError)
                or time.monotonic() - self._last_progress >= cfg.read_timeout * 0.9
            ):
                return f"no data for {cfg.read_timeout:g} s (read timeout)"
            return f"stream broke: {_ffmpeg_message(err)}"
        finally:
            container.close()

    def _open_failure(self, err: BaseException, elapsed: float) -> str:
        msg = _ffmpeg_message(err)
        if isinstance(err, ConnectionRefusedError):
            return f"cannot connect: connection refused by {urlsplit(self.cfg.url).netloc.rsplit('@', 1)[-1]}"
        if isinstance(err, av.error.ExitError) or elapsed >= self.cfg.open_timeout * 0.9:
            return f"cannot connect: no usable answer within {self.cfg.open_timeout:g} s (open timeout)"
        answer = msg.replace("Server returned ", "")
        if isinstance(err, av.error.HTTPClientError):
            hint = "check user:password in the URL" if "401" in msg or "403" in msg else "check the path"
            return f"cannot open: the server answered {answer} ({hint})"
        if isinstance(err, av.error.HTTPServerError):
            return f"cannot open: the server answered {answer} (a fault on the camera's side)"
        if isinstance(err, av.error.InvalidDataError):
            protocol = urlsplit(self.cfg.url).scheme.upper()
            return f"cannot open: the server does not speak {protocol} or sent no usable stream ({msg})"
        host = urlsplit(self.cfg.url).hostname
        if host:
            try:
                socket.getaddrinfo(host, None)
            except OSError:
                return f"cannot connect: host {host!r} does not resolve"
        return f"cannot open: {msg}"

    def _stream(self, container, stream) -> str:
        cfg = self.cfg
        sampler = LiveSampler(cfg.fps)
        streaming = False
        self._last_progress = time.monotonic()
        lag_base: float | None = None
        cc = stream.codec_context
        keyframes_only = cfg.keyframes_only
        tb = stream.time_base
        last_packet = time.monotonic()
        for packet in container.demux(stream):
            now = time.monotonic()
            if self._stop.is_set():
                return "stopped"
            if self._restart.is_set():
                return self._restart_reason
            if now - last_packet >= cfg.read_timeout * 0.95:
                # PyAV's read timeout fired: FFmpeg's RTSP reader then hands back a bogus packet
                # (and would wait a second read_timeout) instead of raising. Do not decode it.
                return f"no data for {cfg.read_timeout:g} s (read timeout)"
            last_packet = now
            if packet.size == 0:
                continue  # end-of-stream flush: the frames it would drain are stale for a live source
            frames = []
            if not keyframes_only or packet.is_keyframe:
                try:
                    frames = cc.decode(packet)
                    if keyframes_only:
                        # A keyframe decodes on its own; draining makes the decoder hand it over now
                        # instead of holding it for reordering until the next keyframe.
                        frames += cc.decode(None)
                        cc.flush_buffers()
                except av.FFmpegError:
                    self.stats.add("decode_errors")  # a damaged packet: skip it, keep the connection
            now = time.monotonic()
            if not frames:
                if now - self._last_progress > cfg.stall_timeout:
                    return f"no frame for {cfg.stall_timeout:g} s (watchdog)"
                continue
            self._last_progress = now
            for frame in frames:
                wall = time.time()
                index = self._index
                self._index += 1
                self.stats.add("frames_decoded")
                self.stats.last_frame_mono, self.stats.last_frame_wall = now, wall
                if not streaming:
                    streaming = True
                    self._streaming_since = now
                    self.machine.to(SourceState.STREAMING, expect={SourceState.CONNECTING})
                    self.log.info("streaming", width=frame.width, height=frame.height, codec=stream.codec_context.name,
                                  connection=self._connection)  # fmt: skip
                    self._logged_reason = ""
                if self.backoff.failures and now - self._streaming_since >= cfg.stable_after:
                    self.backoff.reset()
                # frame.time is NaN for frames drained from the decoder: use the stream's time base.
                pts = float(frame.pts * tb) if frame.pts is not None and tb is not None else None
                t = sampler.clock(pts, now)
                lag_base = (now - t) if lag_base is None else min(lag_base, now - t)
                self.stats.lag = (now - t) - lag_base
                if sampler.keep(t):
                    self.stats.add("frames_sampled")
                    dropped = self.pending.put(Sample(frame, index, pts, wall, self._connection))
                    if dropped is not None:
                        self.stats.drop(self.hold or "overload")
        return "the stream ended (the camera closed it)"
