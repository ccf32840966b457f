"""The supervisor side of a live source: watchdog, state and counters to the source hash,
``source`` alerts for outages (numbered in the hash, so alert ids are stable across restarts)."""

from __future__ import annotations

import time

from forensics.alerts import make_alert
from forensics.sources import COUNTERS
from forensics.timestamps import now_iso
from workers.live.state import SourceState


class SourceWatch:
    """Mixin of :class:`~workers.live.source.LiveSource`: called from the supervisor thread."""

    def watchdog(self, now: float) -> None:
        """Mark a streaming source that produced no frame for stall_timeout as stalled, and have
        its decoder drop the connection (at once if it is reading, else when its read times out)."""
        last = self.stats.last_frame_mono
        if (
            self.machine.state is SourceState.STREAMING
            and last is not None
            and now - last > self.cfg.stall_timeout
        ):
            reason = f"no frame for {self.cfg.stall_timeout:g} s (watchdog)"
            self._restart_reason = reason
            if self.machine.to(SourceState.STALLED, reason, expect={SourceState.STREAMING}):
                self._failed(reason)
                self._restart.set()
                self.log.warning(f"stalled: {reason}")

    def status(self) -> dict[str, str | int | float]:
        """The absolute fields of the source hash (counters are added separately)."""
        st = self.stats
        fields: dict[str, str | int | float] = {
            "state": self.machine.state.value,
            "state_since": now_iso(self.machine.since_wall),
            "reason": self.reason,
            "reason_at": now_iso(self.reason_at) if self.reason_at else "",
            "pending": len(self.pending),
            "holding": self.hold or "",
            "lag_s": round(st.lag, 3),
            "retry_in_s": round(self.retry_in, 3) if self.retry_in is not None else "",
            "width": st.width,
            "height": st.height,
            "codec": st.codec,
            "updated_at": now_iso(),
        }
        if st.last_frame_wall is not None:
            fields["last_frame_at"] = round(st.last_frame_wall, 3)
        return fields

    def publish(self, now: float) -> None:
        """Write state and counter increments to the source hash, and raise/clear outages.

        Raises redis.RedisError (the supervisor logs it and tries again on its next tick).
        """
        counts = self.stats.snapshot()
        deltas = {k: counts[k] - self._flushed[k] for k in COUNTERS if counts[k] != self._flushed[k]}
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.key, mapping=self.status())
        for k, d in deltas.items():
            pipe.hincrby(self.key, k, d)
        pipe.execute()
        for k in deltas:
            self._flushed[k] = counts[k]
        self._track_outage(now)
        while self._alert_queue:
            self.alerts.emit(self._alert_queue[0])  # idempotent: safe to retry after a failure
            self._alert_queue.pop(0)

    def _track_outage(self, now: float) -> None:
        state = self.machine.state
        if state is SourceState.STREAMING and self._outage is not None:
            n = self._outage
            self.r.hset(self.key, mapping={"down": 0, "up_at": now_iso()})
            self._alert_queue.append(self._outage_alert("up", n, "streaming again"))
            self.log.info("source up", outage=n)
            self._outage = None
        elif (
            state is not SourceState.STOPPED
            and self._outage is None
            and self._not_streaming_since is not None
            and now - self._not_streaming_since >= self.cfg.down_after
        ):
            pipe = self.r.pipeline(transaction=True)
            pipe.hincrby(self.key, "outages", 1)
            since = time.time() - (now - self._not_streaming_since)
            pipe.hset(self.key, mapping={"down": 1, "down_at": now_iso(), "down_since": round(since, 3)})
            n = int(pipe.execute()[0])
            self._outage, self._outage_started = n, since
            self._alert_queue.append(
                self._outage_alert("down", n, self.reason or f"not streaming ({state.value})")
            )
            self.log.warning(f"source down: {self.reason or state.value}", outage=n)

    def _outage_alert(self, what: str, n: int, reason: str) -> dict:
        started = self._outage_started
        return make_alert(
            "source",
            self.id,
            f"{self.id}:source:{what}:{n}",
            state=what,
            reason=reason,
            outage=n,
            source_state=self.machine.state.value,
            url=self.url_shown,
            down_since=now_iso(started) if started is not None else None,
            down_for_s=round(time.time() - started, 3) if started is not None else None,
            reconnects=self.stats.counts["reconnects"],
            last_frame_at=self.stats.last_frame_wall,
        )
