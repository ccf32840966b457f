"""Detect worker: frame batches in, scores, verdicts and alerts out.

Loop: reclaim entries stale on dead consumers (XAUTOCLAIM), read new ones (XREADGROUP), score
every crop (ONNX Runtime + Mahalanobis), write results, update per-file or per-live-source
aggregates in Redis, emit alerts, then acknowledge. Any number of workers can share the group:
all aggregation state lives in Redis and is written idempotently (keyed by batch sequence), and
alerts carry deterministic ids that :class:`forensics.alerts.AlertWriter` publishes at most once.
What is written once a batch is scored is in :mod:`workers.publish`.

Poison isolation: every decode, validation, scoring or aggregation error of one entry is caught
for that entry alone (the good entries of the same read are scored and acknowledged), its message
is recorded on that delivery, the entry is left pending and retried when reclaimed, and after
``detect.max_deliveries`` deliveries it goes to ``<prefix>:dead`` with that error (meta, not
pixels). A file whose batch was dead-lettered still gets its verdict, counting the lost batch.

A lost Redis connection is a state (:class:`forensics.outage.Outage`): the loop waits with
capped exponential backoff and goes on where it was; unacknowledged entries stay pending.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import redis

from forensics.alerts import AlertWriter
from forensics.config import QualitySettings, Settings
from forensics.errors import ForensicsError, ModelError
from forensics.logs import get_logger
from forensics.model import CropScores, LoadedModel, load_model
from forensics.modelwatch import ModelWatch
from forensics.outage import REDIS_DOWN, Outage
from forensics.quality import face_check_on, face_checker, low_quality
from forensics.redact import redact
from forensics.registry import Registry
from forensics.streams import (
    Entry,
    Keys,
    ack,
    dead_letter,
    ensure_group,
    prune_idle_consumers,
    read_shards,
    reclaim_stale,
    total_backlog,
)
from forensics.verdicts import CropRecord
from forensics.wire import FrameBatch, decode
from workers.publish import MAX_ERROR_CHARS, Publishing, picks


@dataclass
class _Work:
    entry: Entry
    batch: FrameBatch | None
    error: str | None = None


class DetectWorker(Publishing):
    def __init__(self, settings: Settings, r: redis.Redis, *, consumer: str | None = None):
        self.settings = settings
        self.cfg = settings.detect
        self.r = r
        self.keys = Keys.for_settings(settings)
        self.consumer = consumer or self.cfg.consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.registry = Registry(settings.models_dir)
        self.alerts = AlertWriter(r, self.keys, disclosure=settings.alerts)
        self.log = get_logger(consumer=self.consumer)
        self.model: LoadedModel | None = None
        self.watch = ModelWatch(self.registry, r, self.keys.model, self.log)
        self.outage = Outage("detect", self.log, base_s=settings.redis.retry_base_s, cap_s=settings.redis.retry_cap_s)
        self.stats = {"batches": 0, "faces": 0, "alerts": 0, "dead": 0, "reloads": 0, "failures": 0, "outages": 0}
        self.metrics = None
        self._turn = 0  # which shard a cluster read blocks on next
        for stream in self.keys.frames_shards:
            ensure_group(r, stream)

    # -- model ----------------------------------------------------------------------------
    def load_initial(self) -> None:
        wanted = self.watch.wanted()
        self.model = load_model(self.registry, wanted.version if wanted else None, providers=self.cfg.providers,
                                intra_op_threads=self.cfg.intra_op_threads)  # fmt: skip
        if wanted is not None and wanted.sha256 and wanted.sha256 != self.model.artifact.sha256:
            raise ModelError(self.watch.mismatch(wanted, self.model.artifact.sha256))
        self.log.info("model loaded", version=self.model.artifact.version, provider=self.model.net.provider)
        if self.model.warning:
            print(f"forensics: warning: {self.model.warning}", file=sys.stderr, flush=True)

    def maybe_reload(self) -> bool:
        """Swap to a newly announced/promoted version between batches; keep serving on failure.

        The announcement is checked like the artifact (:class:`forensics.modelwatch.ModelWatch`):
        a refused version is tried again only when its files change or a new announcement comes.
        """
        wanted = self.watch.wanted()
        serving = self.model.artifact if self.model else None
        if wanted is None or (serving and wanted.version == serving.version and wanted.sha256 in (None, serving.sha256)):
            return False
        if self.watch.refused(wanted):
            return False
        try:
            new = load_model(self.registry, wanted.version, providers=self.cfg.providers,
                             intra_op_threads=self.cfg.intra_op_threads)  # fmt: skip
            if wanted.sha256 and wanted.sha256 != new.artifact.sha256:
                raise ModelError(self.watch.mismatch(wanted, new.artifact.sha256))
        except ModelError as err:
            self.watch.refuse(wanted)
            self.log.error("refusing new model; still serving the old one", version=wanted.version, error=str(err),
                           serving=serving.version if serving else None)  # fmt: skip
            return False
        old = serving.version if serving else None
        self.model = new
        self.stats["reloads"] += 1
        if self.metrics:
            self.metrics.set_model(wanted.version)
        self.log.info("model reloaded", version=wanted.version, previous=old)
        if new.warning:
            print(f"forensics: warning: {new.warning}", file=sys.stderr, flush=True)
        return True

    # -- loop -----------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        if self.model is None:
            self.load_initial()
        self.log.info("detect worker running", streams=self.keys.frames_shards)
        last_reclaim = last_reload = last_prune = 0.0
        while not stop.is_set():
            try:
                now = time.monotonic()
                if now - last_reload > 1.0:
                    self.maybe_reload()
                    last_reload = now
                if now - last_reclaim > max(0.2, self.cfg.claim_idle_ms / 4000):
                    self.step_reclaim()
                    last_reclaim = now
                    if self.metrics:
                        self.metrics.backlog.set(self.backlog())
                if now - last_prune > 60.0:
                    self.prune_consumers()
                    last_prune = now
                self.step_new()
                self.outage.ok()
            except REDIS_DOWN as err:
                # Unacknowledged entries stay pending in Redis; the loop resumes where it was.
                self.outage.wait(err, stop)
                self.stats["outages"] = self.outage.outages
                continue
            except redis.ResponseError as err:
                if "NOGROUP" not in str(err):
                    raise
                for stream in self.keys.frames_shards:  # Redis came back without its data
                    ensure_group(self.r, stream)
                continue
            if self.metrics:
                self.metrics.heartbeat = time.monotonic()

    def prune_consumers(self) -> list[str]:
        """Remove consumers idle over ``detect.consumer_idle_s`` that hold no pending entries."""
        removed = [name for stream in self.keys.frames_shards
                   for name in prune_idle_consumers(self.r, stream, idle_ms=int(self.cfg.consumer_idle_s * 1000),
                                                    keep=self.consumer)]  # fmt: skip
        if removed:
            self.log.info("removed idle consumers", consumers=removed)
        return removed

    def step_new(self) -> int:
        entries = read_shards(self.r, self.keys, self.consumer, count=self.cfg.read_count, block_ms=self.cfg.block_ms,
                              turn=self._turn)  # fmt: skip
        self._turn += 1
        if entries:
            self.process(entries)
        return len(entries)

    def step_reclaim(self) -> int:
        entries = [e for stream in self.keys.frames_shards
                   for e in reclaim_stale(self.r, stream, self.consumer, min_idle_ms=self.cfg.claim_idle_ms,
                                          count=self.cfg.read_count)]  # fmt: skip
        live = []
        for e in entries:
            if e.deliveries > self.cfg.max_deliveries:
                self._dead_letter(e)
            else:
                live.append(e)
        if live:
            self.log.info("reclaimed stale entries", count=len(live))
            self.process(live)
        return len(entries)

    def _dead_letter(self, e: Entry) -> None:
        raw = self.r.hget(self.keys.errors, e.id)
        error = raw.decode(errors="replace") if raw else "failed repeatedly (no error recorded)"
        dead_letter(self.r, self.keys, e, error, maxlen=self.cfg.dead_maxlen)
        self.r.hdel(self.keys.errors, e.id)
        self.stats["dead"] += 1
        self.log.warning("entry dead-lettered", entry=e.id.decode(), deliveries=e.deliveries, error=error)
        lost = _file_batch_of(e)
        if lost is not None:  # the file still gets its verdict, counting the lost batch
            self._file_step(lost[0], lost[1], None, error)

    # -- one read's worth of entries ----------------------------------------------------------
    def process(self, entries: list[Entry]) -> None:
        """Score and aggregate ``entries``; each one's failure is its own (recorded, left pending)."""
        works = []
        for e in entries:
            try:
                works.append(_Work(e, decode(e.fields)))
            except ForensicsError as err:
                works.append(_Work(e, None, str(err)))
            except Exception as err:  # noqa: BLE001 - a decoder bug costs this entry, not the worker
                works.append(_Work(e, None, f"cannot decode: {type(err).__name__}: {err}"))
        scored = self._score_all([w for w in works if w.batch is not None and len(w.batch)])
        done: list[bytes] = []
        for w in works:
            if w.error is None:
                try:
                    self._handle(w.batch, scored.get(w.entry.id))
                    done.append(w.entry.id)
                    continue
                except REDIS_DOWN:
                    raise
                except ForensicsError as err:
                    w.error = str(err)
                except Exception as err:  # noqa: BLE001 - one entry's failure must not take the others down
                    w.error = f"{type(err).__name__}: {err}"
            self.stats["failures"] += 1
            w.error = redact(w.error)[:MAX_ERROR_CHARS]
            self.r.hset(self.keys.errors, w.entry.id, w.error)
            self.log.warning("batch failed; left pending for retry", entry=w.entry.id.decode(), error=w.error)
        # Acknowledge only after results and alerts are written; frames are large, delete them too.
        streams = {w.entry.id: w.entry.stream or self.keys.frames for w in works}
        for stream in dict.fromkeys(streams.values()):
            ack(self.r, stream, [i for i in done if streams[i] == stream], delete=True)
        if done:
            self.r.hdel(self.keys.errors, *done)

    def _score_all(self, works: list[_Work]) -> dict[bytes, CropScores]:
        """Score the crops of many batches in model calls of at most ``max_batch`` images."""
        out: dict[bytes, CropScores] = {}
        if not works:
            return out
        assert self.model is not None
        good: list[_Work] = []
        for w in works:
            if w.batch.images.shape[1] != self.model.size:
                w.error = (f"crops are {w.batch.images.shape[1]}px but model {self.model.artifact.version} takes "
                           f"{self.model.size}px: set ingest.frame_size={self.model.size}")  # fmt: skip
            else:
                good.append(w)
        if not good:
            return out
        try:
            scores = self._score_images(np.concatenate([w.batch.images for w in good]))
        except Exception:  # noqa: BLE001 - find which entry it was: score each alone
            if len(good) == 1:
                scores = None
            else:
                for w in good:
                    out.update(self._score_all([w]))
                return out
        if scores is None:
            w = good[0]
            try:
                out[w.entry.id] = self._score_images(w.batch.images)
            except Exception as err:  # noqa: BLE001 - this entry's crops cannot be scored
                w.error = f"cannot score the crops: {type(err).__name__}: {err}"
            return out
        i = 0
        for w in good:
            n = len(w.batch)
            out[w.entry.id] = CropScores(scores.fake_prob[i : i + n], scores.anomaly[i : i + n],
                                         scores.anomalous[i : i + n])  # fmt: skip
            i += n
        return out

    def _score_images(self, images: np.ndarray) -> CropScores:
        """uint8 [N, S, S, 3] -> scores, in model calls of at most ``max_batch`` images; finite or raises."""
        t0 = time.perf_counter()
        step = self.cfg.max_batch
        parts = [self.model.score(images[i : i + step]) for i in range(0, len(images), step)]
        if self.metrics:
            self.metrics.observe_inference(time.perf_counter() - t0, len(images))
        prob, anomaly = np.concatenate([p.fake_prob for p in parts]), np.concatenate([p.anomaly for p in parts])
        out = CropScores(prob, anomaly, np.concatenate([p.anomalous for p in parts]))
        if not (np.isfinite(out.fake_prob).all() and np.isfinite(out.anomaly).all()):
            raise ValueError("the model returned a non-finite score")
        return out

    # -- aggregation and alerts --------------------------------------------------------------
    def _handle(self, b: FrameBatch, scores: CropScores | None) -> None:
        assert self.model is not None
        if b.kind == "frames" and scores is None:
            raise ForensicsError(f"batch {b.source}/{b.seq} was not scored")
        # no_face: only where nothing guarantees a face (quality.face_check; a detector call per crop)
        check = face_check_on(self.settings.quality, self.settings.faces.detector)
        face_check = face_checker(self.model.crop_detector) if check else None
        records = crop_records(b, scores, self.settings.quality, face_check) if scores is not None else []
        if b.kind == "frames":
            if b.source_kind == "file":
                self._keep_evidence(b, records, picks(records))
            self._write_result(b, records)
            self.stats["batches"] += 1
            self.stats["faces"] += len(records)
            if self.metrics:
                self.metrics.batch(len(records))
        if b.source_kind == "file":
            self._file_step(b, b.seq, records)
        else:
            self._live_step(b, records)

    def backlog(self) -> int:
        return total_backlog(self.r, self.keys)


def crop_records(b: FrameBatch, s: CropScores, quality: QualitySettings | None = None,
                 face_check: Callable[[np.ndarray], np.ndarray] | None = None) -> list[CropRecord]:  # fmt: skip
    """One record per crop of a decoded batch and its scores; with ``quality``, each carries the
    input-quality gate's reasons (forensics/quality.py), ``no_face`` among them with ``face_check``."""
    has_face = face_check(b.images) if face_check is not None and quality is not None and quality.enabled and len(b) else None
    lq = low_quality(b.images, b.box, b.region or None, quality, has_face) if quality is not None else [()] * len(b)
    return [
        CropRecord(b.frame_index[i], b.pts[i], b.track[i], float(s.fake_prob[i]), float(s.anomaly[i]),
                   bool(s.anomalous[i]), b.box[i], lq[i])
        for i in range(len(b))
    ]


def _file_batch_of(e: Entry) -> tuple[str, int] | None:
    """(source, seq) of a file's frames entry whose header still parses, else None."""
    try:
        meta = json.loads(e.fields.get(b"meta", b""))
        source, seq = meta["source"], meta["seq"]
        if meta.get("source_kind") == "file" and meta.get("kind") == "frames" and isinstance(source, str) \
                and source and isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < 2**53:
            return source, seq
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        pass
    return None
