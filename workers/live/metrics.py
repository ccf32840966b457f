"""Prometheus view of live sources' in-memory counters, read at scrape time."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from forensics.sources import DROP_REASONS
from workers.live.state import SourceState

if TYPE_CHECKING:
    from workers.live.source import LiveSource


class LiveMetrics(Collector):
    """Prometheus view of the sources' in-memory counters, read at scrape time."""

    def __init__(self, sources: list[LiveSource]):
        self.sources = sources

    def collect(self):
        ids = [s.id for s in self.sources]
        counters = {
            name: CounterMetricFamily(f"forensics_live_{name}", help_, labels=["source"])
            for name, help_ in (
                ("frames_decoded", "Frames decoded."),
                ("frames_sampled", "Frames kept by the fps sampler."),
                ("batches_sent", "FrameBatches added to the frames stream."),
                ("images_sent", "Images (face crops or whole frames) added to the frames stream."),
                ("no_face_frames", "Sampled frames with no face, not sent."),
                ("decode_errors", "Damaged packets skipped."),
                ("reconnects", "Connection attempts after the first."),
            )
        }
        dropped = CounterMetricFamily(
            "forensics_live_frames_dropped",
            "Sampled frames dropped at the source (oldest first).",
            labels=["source", "reason"],
        )
        state = GaugeMetricFamily(
            "forensics_live_source_state", "1 for the current state.", labels=["source", "state"]
        )
        last = GaugeMetricFamily(
            "forensics_live_last_frame_timestamp_seconds", "Unix time of the last frame.", labels=["source"]
        )
        pending = GaugeMetricFamily(
            "forensics_live_pending_samples", "Samples waiting to be sent.", labels=["source"]
        )
        lag = GaugeMetricFamily(
            "forensics_live_lag_seconds", "How far decoding runs behind the stream.", labels=["source"]
        )
        for sid, s in zip(ids, self.sources):
            counts = s.stats.snapshot()
            for name, fam in counters.items():
                fam.add_metric([sid], counts[name])
            for reason in DROP_REASONS:
                dropped.add_metric([sid, reason], counts[f"dropped_{reason}"])
            current = s.machine.state
            for st in SourceState:
                state.add_metric([sid, st.value], 1.0 if st is current else 0.0)
            if s.stats.last_frame_wall is not None:
                last.add_metric([sid], s.stats.last_frame_wall)
            pending.add_metric([sid], len(s.pending))
            lag.add_metric([sid], s.stats.lag)
        yield from counters.values()
        yield from (dropped, state, last, pending, lag)
