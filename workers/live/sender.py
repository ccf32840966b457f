"""The sender thread of a live source: pending samples -> face crops -> one FrameBatch per sampled
frame -> XADD <prefix>:frames, holding while the detect group's backlog is over the limit."""

from __future__ import annotations

import contextlib
import time

import numpy as np
import redis

from forensics.outage import Outage
from forensics.streams import backlog, ensure_group
from forensics.video import DecodedFrame
from forensics.wire import FrameBatch, encode
from workers.live.sampling import Sample

HOLD_POLL_S = 0.1


class SampleSender:
    """Mixin of :class:`~workers.live.source.LiveSource`: the sender thread."""

    def _send_loop(self) -> None:
        frames_key = self.keys.frames_for(self.id)
        conf = self.settings.redis
        # Lost Redis: logged once per outage with its duration; retries back off (capped, jittered);
        # decoding goes on and the samples that do not fit the pending queue are counted as drops.
        outage = Outage(f"live source {self.id}", self.log, base_s=conf.retry_base_s, cap_s=conf.retry_cap_s)
        while not self._stop.is_set():
            if not self.pending.wait(0.25):
                continue
            try:
                if backlog(self.r, frames_key) >= self.cfg.max_backlog:
                    self.hold = "backlog"
                    self._stop.wait(HOLD_POLL_S)
                    continue
                self.hold = None
                sample = self.pending.get()
                if sample is not None:
                    self._send_or_drop(sample)
            except redis.RedisError as err:
                self.hold = "redis"
                if isinstance(err, redis.ResponseError) and ("no such key" in str(err) or "NOGROUP" in str(err)):
                    with contextlib.suppress(redis.RedisError):
                        ensure_group(self.r, frames_key)  # the stream was deleted under us
                outage.wait(err, self._stop)
                continue
            outage.ok()

    def _send_or_drop(self, sample: Sample) -> None:
        try:
            self._send(sample)
        except redis.RedisError:
            self.stats.drop("redis")
            raise
        except Exception:  # a bug in cropping or encoding: say so loudly, drop this sample, keep going
            self.log.exception("cannot send a sample")
            self.stats.drop("error")

    def _send(self, s: Sample) -> None:
        crops = self.cropper.crops(DecodedFrame(index=s.index, pts=s.pts, frame=s.frame))
        if not crops:
            self.stats.add("no_face_frames")
            return
        seq = int(self.r.hincrby(self.key, "seq", 1)) - 1
        n = len(crops)
        batch = FrameBatch(
            source=self.id,
            seq=seq,
            source_kind="live",
            images=np.stack([c.image for c in crops]),
            frame_index=[s.index] * n,
            pts=[s.pts] * n,
            wall=[s.wall] * n,
            box=[list(map(int, c.box)) for c in crops],
            track=[c.track for c in crops],
            landmarks=[c.wire_landmarks() for c in crops],
            region=[list(map(int, c.region)) for c in crops],
            frame_size=(s.frame.width, s.frame.height),
            info={"connection": s.connection},
        )
        pipe = self.r.pipeline(transaction=True)
        pipe.xadd(self.keys.frames_for(self.id), encode(batch))
        pipe.hincrby(self.key, "batches_sent", 1)
        pipe.hincrby(self.key, "frames_sent", 1)
        pipe.hincrby(self.key, "images_sent", n)
        pipe.hset(self.key, mapping={"last_seq": seq, "last_sent_at": time.time()})
        pipe.execute()
        self.stats.add("batches_sent")
        self.stats.add("frames_sent")
        self.stats.add("images_sent", n)

