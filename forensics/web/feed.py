"""Live alerts for every open page from ONE Redis reader.

A thread follows ``<prefix>:alerts`` with XREAD (1 s block) and hands each entry to the event
loop, which copies it into every subscriber's bounded queue (one per SSE connection). A
subscriber that falls ``QUEUE_SIZE`` events behind is dropped; its browser reconnects with
``Last-Event-ID`` and catches up from the stream, so nothing is lost. While Redis is unreachable
the reader retries with backoff and subscribers get ``status`` events (down, then up again).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from forensics.alerts import parse_alert
from forensics.errors import RedisUnavailable
from forensics.streams import Keys
from forensics.web.backends import RedisHandle

QUEUE_SIZE = 1000
_BACKOFF_MAX_S = 5.0


def id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(eq=False)
class Subscriber:
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    dropped: bool = False


class AlertFeed:
    def __init__(self, handle: RedisHandle, keys: Keys):
        self.handle = handle
        self.keys = keys
        self.subscribers: set[Subscriber] = set()
        self.status: dict[str, Any] = {"redis": None, "error": None}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle (called on the event loop) ------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop.clear()
        self._thread = threading.Thread(target=self._follow, name="web-alert-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def subscribe(self) -> Subscriber:
        sub = Subscriber()
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    # -- fan-out (on the event loop) ---------------------------------------------------------
    def _deliver(self, message: dict[str, Any]) -> None:
        for sub in list(self.subscribers):
            try:
                sub.queue.put_nowait(message)
            except asyncio.QueueFull:
                # Too slow: end its stream (the browser reconnects and catches up with Last-Event-ID).
                sub.dropped = True
                self.subscribers.discard(sub)
                while not sub.queue.empty():
                    sub.queue.get_nowait()
                sub.queue.put_nowait({"type": "overflow"})

    def _post(self, message: dict[str, Any]) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._deliver, message)

    def _set_status(self, up: bool, error: str | None) -> None:
        if self.status["redis"] is not up:
            self.status = {"redis": up, "error": error}
            self._post({"type": "status", **self.status})

    # -- the one reader (its own thread) -----------------------------------------------------
    def _follow(self) -> None:
        last: str | None = None
        delay = 0.25
        while not self._stop.is_set():
            try:
                if last is None:
                    newest = self.handle.run(lambda r: r.xrevrange(self.keys.alerts, count=1))
                    last = newest[0][0].decode() if newest else "0-0"
                read = self.handle.run(lambda r, since=last: r.xread({self.keys.alerts: since}, count=100, block=1000))
            except RedisUnavailable as err:
                self._set_status(False, str(err))
                self._stop.wait(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)
                continue
            delay = 0.25
            self._set_status(True, None)
            for _name, entries in read or []:
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    try:
                        alert = parse_alert(fields.get(b"event", b""))
                    except ValueError:
                        continue
                    self._post({"type": "alert", "id": last, "alert": alert})
