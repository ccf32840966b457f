"""Live sources (RTSP cameras): one decoder thread and one sender thread per source, under a supervisor.

Policy for live sources: stay current. Files wait and lose nothing (workers/ingest.py); a live
source never waits. Per source::

    decoder thread   PyAV over TCP with open/read timeouts -> decode every frame (or keyframes)
                     -> sample at the source's fps by timestamp -> PendingSamples (bounded; when
                     full, the OLDEST sample is dropped and counted)
    sender thread    PendingSamples -> hold while the detect group's backlog >= max_backlog
                     -> face crops -> one FrameBatch per sampled frame -> XADD <prefix>:frames
    supervisor       watchdog, state and counters to <prefix>:sources:<id>, `source` alerts,
                     Prometheus metrics

The decoder thread never talks to Redis, so a slow or unreachable Redis never delays decoding:
samples pile up at the source and the oldest are dropped.

Each source is a state machine with locked transitions::

    stopped -> connecting -> streaming -> stalled -> backing_off -> connecting -> ...
                          \\-> backing_off (cannot open, or no frame)
    connecting | streaming | stalled | backing_off -> stopped (shutdown)

Reconnects back off exponentially with jitter up to a cap; the backoff starts over after a
stable streaming period. A source that is not streaming for ``down_after`` seconds raises a
``source`` alert (state ``down``), and one (state ``up``) when frames flow again; outages are
numbered in the source hash, so alert ids (``<id>:source:down:<n>``) are stable across restarts.

Batch sequence numbers come from ``HINCRBY <prefix>:sources:<id> seq``, so they keep increasing
across restarts of the ingest process and stream ids stay unique.

Modules: :mod:`.state` (state machine, backoff), :mod:`.sampling` (fps sampler, pending queue,
counters), :mod:`.decode` (RTSP decoder thread), :mod:`.sender` (sender thread), :mod:`.watchdog`
(watchdog, source hash, outage alerts), :mod:`.source` (one source: the three together),
:mod:`.metrics` (Prometheus collector), :mod:`.supervisor` (many sources), :mod:`.spec`
(``--rtsp ID=URL``). The source hash's schema and reader are shared with file sources:
:mod:`forensics.sources`.
"""

from workers.live.metrics import LiveMetrics
from workers.live.sampling import LiveSampler, PendingSamples, Sample, SourceStats
from workers.live.source import LiveSource
from workers.live.spec import source_from_spec
from workers.live.state import Backoff, IllegalTransition, SourceState, SourceStateMachine
from workers.live.supervisor import LiveSupervisor

__all__ = [
    "Backoff", "IllegalTransition", "LiveMetrics", "LiveSampler", "LiveSource", "LiveSupervisor",
    "PendingSamples", "Sample", "SourceState", "SourceStateMachine", "SourceStats", "source_from_spec",
]  # fmt: skip
