"""Redis Streams helpers: key names, consumer groups, backpressure, reclaim and dead letters.

Delivery is at-least-once: an entry is acknowledged only after its results are written, an
entry left pending by a dead consumer is reclaimed by a live one (XAUTOCLAIM), and after
``max_deliveries`` an entry is moved to the dead-letter stream with its error. Consumers must
therefore tolerate seeing an entry twice (alert ids are deterministic for that reason).
Nothing here trims a stream that has unacknowledged entries.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import redis
from redis.crc import key_slot

DETECT_GROUP = "detect"


class Keys:
    """Names of every Redis key, under one prefix. Nothing else builds a key name.

    Single Redis with one shard (the default): ``<prefix>:frames``, ``<prefix>:sources:<id>``, ...
    as documented. Sharded (``shards > 1``) or on a Redis Cluster, the frames stream is split into
    ``shards`` streams, a source always writing to shard ``shard_of(source)``; that shard's stream and
    every key of its sources (state hash, ingest progress, file aggregate, live window and state,
    evidence crops) carry the shard's hash tag, so they live in one cluster slot and every
    MULTI/EXEC or Lua script on them touches one slot. On a cluster the other keys share the tag
    ``{<prefix>}`` (the prefix is written with braces: ``{forensics}:alerts``): an alert's dedupe
    marker sits in the alerts stream's slot, so the emit-once script touches one slot too.
    """

    def __init__(self, prefix: str = "forensics", *, shards: int = 1, cluster: bool = False):
        if shards < 1:
            raise ValueError("shards must be >= 1")
        self.name = prefix
        self.shards = shards
        self.cluster = cluster
        self.tagged = cluster or shards > 1
        self.prefix = prefix = f"{{{prefix}}}" if cluster else prefix
        self.results = f"{prefix}:results"  # stream of per-batch scores
        self.alerts = f"{prefix}:alerts"  # stream + pub/sub channel of alerts
        self.dead = f"{prefix}:dead"  # stream: entries that failed N deliveries
        self.model = f"{prefix}:model"  # key + channel: current model version
        self.errors = f"{prefix}:errors"  # hash: delivery errors per entry id (detect)
        self.labels = f"{prefix}:labels"  # hash: alert id -> analyst's label record
        self.retrain_lock = f"{prefix}:retrain:lock"  # one retraining at a time
        self.retrain_last = f"{prefix}:retrain:last"  # the last run's id and start
        self.retrain_refine = f"{prefix}:retrain:refine"  # the adversarial radius refinement state
        self._tags = [shard_tag(self.name, i, shards) for i in range(shards)] if self.tagged else [""]
        # streams of FrameBatches, group "detect"
        self.frames_shards = [self._in_shard(i, "frames") for i in range(shards)]

    @classmethod
    def for_settings(cls, settings: Any) -> Keys:
        """The keys of ``settings.redis`` (prefix, shards, cluster)."""
        rs = settings.redis
        return cls(rs.prefix, shards=rs.shards, cluster=rs.cluster)

    def _in_shard(self, shard: int, what: str) -> str:
        return f"{self.name}:{{{self._tags[shard]}}}:{what}" if self.tagged else f"{self.prefix}:{what}"

    @property
    def frames(self) -> str:
        """The frames stream when there is one shard (sharded: ``frames_for(source)``, ``frames_shards``)."""
        if len(self.frames_shards) != 1:
            raise ValueError(f"the frames stream has {self.shards} shards: use frames_for(source) or frames_shards")
        return self.frames_shards[0]

    def shard_of(self, source: str) -> int:
        """The shard a source writes to: CRC32 of its id, modulo the shard count (stable everywhere)."""
        return zlib.crc32(source.encode()) % self.shards

    def frames_for(self, source: str) -> str:
        return self.frames_shards[self.shard_of(source)]

    def _per_source(self, what: str, source: str) -> str:
        if self.tagged:
            return self._in_shard(self.shard_of(source), f"{what}:{source}")
        return f"{self.prefix}:{what}:{source}"

    def source(self, source_id: str) -> str:
        """Hash: a source's state and counters (forensics.sources)."""
        return self._per_source("sources", source_id)

    @property
    def source_pattern(self) -> str:
        """SCAN pattern of every source hash."""
        return f"{self.name}:{{*}}:sources:*" if self.tagged else f"{self.prefix}:sources:*"

    @staticmethod
    def source_id_of(key: str) -> str:
        return key.rsplit(":sources:", 1)[1]

    def ingest_progress(self, file_key: str, source: str = "") -> str:
        """Hash: how far a dropped file's ingestion got; sharded, beside its source's frames shard."""
        if not self.tagged:
            return f"{self.prefix}:ingest:{file_key}"
        return self._in_shard(self.shard_of(source), f"ingest:{file_key}")

    def alert_marker(self, alert_id: str) -> str:
        """Key: set once an alert id was published (writers deduplicate on it); alerts stream's slot."""
        return f"{self.prefix}:alert-ids:{alert_id}"

    def evidence(self, source: str) -> str:
        """Hash: a source's evidence crops (PNG) by frame and track."""
        return self._per_source("crops", source)

    def label_crops(self, alert_id: str) -> str:
        """Hash: the crops kept with an analyst's label, for retraining (the labels hash's slot)."""
        return f"{self.prefix}:labels:crops:{alert_id}"

    def evidence_times(self, source: str) -> str:
        """Sorted set: when each of a source's evidence crops was kept (Unix s), for ``forensics purge --before``."""
        return self._per_source("crops-at", source)

    def per_source_pattern(self, what: str) -> str:
        """SCAN pattern of one kind of per-source key ("crops-at", "win", ...) of every source."""
        return f"{self.name}:{{*}}:{what}:*" if self.tagged else f"{self.prefix}:{what}:*"

    def aggregate(self, source: str) -> str:
        """Hash: a file source's per-batch scores until its verdict."""
        return self._per_source("agg", source)

    def window(self, source: str) -> str:
        """Sorted set: a live source's recent scores (the sliding window)."""
        return self._per_source("win", source)

    def live_state(self, source: str) -> str:
        """Hash: a live source's alert state (hysteresis)."""
        return self._per_source("live", source)


def shard_tag(prefix: str, shard: int, shards: int) -> str:
    """Hash tag of frames shard ``shard`` of ``shards``: the first ``<prefix>.<shard>.<j>`` whose cluster
    slot falls in the shard's even share of the 16384 slots, so shards spread over the masters of
    a cluster whose slots are split evenly (what ``redis-cli --cluster create`` does)."""
    for j in range(100_000):
        tag = f"{prefix}.{shard}.{j}"
        if key_slot(tag.encode()) * shards // 16384 == shard:
            return tag
    raise AssertionError("no tag found")  # unreachable: CRC16 covers every slot range


@dataclass
class Entry:
    id: bytes
    fields: dict[bytes, bytes]
    deliveries: int = 1
    stream: str = ""  # the (shard) stream it was read from


def ensure_group(r: redis.Redis, stream: str, group: str = DETECT_GROUP) -> None:
    """Create the consumer group (and the stream) if missing; reading starts at the first entry."""
    try:
        r.xgroup_create(stream, group, id="0", mkstream=True)
    except redis.ResponseError as err:
        if "BUSYGROUP" not in str(err):
            raise


def backlog(r: redis.Redis, stream: str, group: str = DETECT_GROUP, cap: int = 100_000) -> int:
    """Entries of ``stream`` the group has not acknowledged: pending plus not yet delivered.

    Uses the group's ``lag`` (Redis >= 7); on older servers counts undelivered entries
    with XRANGE, up to ``cap``.
    """
    for g in r.xinfo_groups(stream):
        if _s(g["name"]) != group:
            continue
        pending = int(g["pending"])
        lag = g.get("lag")
        if lag is None:
            last = _s(g["last-delivered-id"])
            lag = len(r.xrange(stream, min=f"({last}", max="+", count=cap))
        return pending + int(lag)
    return int(r.xlen(stream))


def wait_below_high_water(
    r: redis.Redis,
    stream: str,
    high_water: int,
    group: str = DETECT_GROUP,
    *,
    poll: float = 0.2,
    stop: threading.Event | None = None,
) -> float:
    """Block while the group's backlog is at or over ``high_water``; returns seconds waited.

    File sources use this: they wait, and lose nothing. Returns early if ``stop`` is set.
    """
    t0 = time.monotonic()
    while backlog(r, stream, group) >= high_water:
        if stop is not None and stop.wait(poll):
            break
        if stop is None:
            time.sleep(poll)
    return time.monotonic() - t0


def read_group(
    r: redis.Redis, stream: str, consumer: str, *, count: int, block_ms: int | None, group: str = DETECT_GROUP
) -> list[Entry]:
    """New entries for this consumer (XREADGROUP ... >); ``block_ms`` None: do not block."""
    return _entries(r.xreadgroup(group, consumer, {stream: ">"}, count=count, block=block_ms))


def read_shards(
    r: redis.Redis, keys: Keys, consumer: str, *, count: int, block_ms: int, turn: int = 0, group: str = DETECT_GROUP
) -> list[Entry]:
    """New entries from every frames shard, at most ``count`` per shard.

    One Redis: one XREADGROUP over all shards. A cluster: a command may touch one slot only, so
    every shard is read without blocking, and if all are empty the call blocks on shard ``turn``
    (rotate it between calls) for a share of ``block_ms``.
    """
    shards = keys.frames_shards
    with _unblocked_is_a_failover():
        if not keys.cluster or len(shards) == 1:
            return _entries(r.xreadgroup(group, consumer, dict.fromkeys(shards, ">"), count=count, block=block_ms))
        out: list[Entry] = []
        for stream in shards:
            out += read_group(r, stream, consumer, count=count, block_ms=None, group=group)
        if not out:
            wait = max(1, block_ms // len(shards))
            out = read_group(r, shards[turn % len(shards)], consumer, count=count, block_ms=wait, group=group)
        return out


@contextmanager
def _unblocked_is_a_failover() -> Iterator[None]:
    """A failover demoted the master a blocking read waited on: Redis answers "UNBLOCKED ... (master ->
    replica?)", a plain ResponseError that ended the detect loop. It is a failover like the others
    (REDIS_DOWN): wait and retry; the client finds the new master, or the address is a master again."""
    try:
        yield
    except redis.ResponseError as err:
        if str(err).startswith("UNBLOCKED"):
            raise redis.exceptions.TryAgainError(str(err)) from None
        raise


def _entries(reply) -> list[Entry]:
    out = []
    for name, entries in reply or []:
        stream = name.decode() if isinstance(name, bytes) else name
        for entry_id, fields in entries:
            if fields is not None:  # None: entry deleted while pending
                out.append(Entry(entry_id, fields, stream=stream))
    return out


def total_backlog(r: redis.Redis, keys: Keys, group: str = DETECT_GROUP) -> int:
    """The group's backlog summed over every frames shard."""
    return sum(backlog(r, stream, group) for stream in keys.frames_shards)


# Connected replicas per cluster master (node name -> (count, monotonic time read)), re-read every
# few seconds: WAIT on a master without replicas would block for its whole timeout.
_REPLICAS: dict[str, tuple[int, float]] = {}
_REPLICAS_TTL_S = 5.0
_NODE_CLIENTS = threading.local()


def _node_client(r: redis.RedisCluster, node: Any) -> redis.Redis:
    """This thread's client of one cluster node, over a pool of ONE connection: WAIT counts the
    writes of its own connection, so the writes and the WAIT must share it."""
    clients = _NODE_CLIENTS.__dict__.setdefault("clients", {})
    client = clients.get(node.name)
    if client is None:
        base = r.get_redis_connection(node).connection_pool
        pool = redis.BlockingConnectionPool(
            max_connections=1, timeout=30, connection_class=base.connection_class, **base.connection_kwargs
        )
        client = clients[node.name] = redis.Redis(connection_pool=pool)
    return client


@contextmanager
def replicated(r: redis.Redis, keys: Keys, key: str, *, timeout_ms: int = 1000) -> Iterator[redis.Redis]:
    """Yield the client to write ``key``'s slot with (several keys: one slot).

    Single Redis: ``r`` itself, nothing more. Cluster: a client of the slot's master, and after the
    block a WAIT until one replica has every write made in it, so that a failover right after
    (the replica promoted) cannot lose them. A master without replicas (just after a failover) is
    not waited on. The cluster's asynchronous replication otherwise loses the last writes."""
    if not keys.cluster:
        yield r
        return
    node = r.get_node_from_key(key)
    client = _node_client(r, node)
    try:
        yield client
    except redis.exceptions.AskError as err:  # MovedError too (a subclass)
        # The node no longer owns the slot (a failover demoted it, or resharding moved the slot):
        # learn the new layout and let the caller retry. Matched by type: redis-py strips the
        # "MOVED"/"ASK" word from the message, and a MovedError (a ResponseError, not one of
        # REDIS_DOWN) escaping here ended the ingest or detect loop's thread without a log line.
        r.nodes_manager.initialize()
        raise redis.exceptions.TryAgainError(f"{type(err).__name__}: {err}") from None
    count, seen = _REPLICAS.get(node.name, (0, -_REPLICAS_TTL_S))
    if time.monotonic() - seen >= _REPLICAS_TTL_S:
        count = int(client.info("replication").get("connected_slaves", 0))
        _REPLICAS[node.name] = (count, time.monotonic())
    if count:
        client.wait(1, timeout_ms)


def ack(r: redis.Redis, stream: str, ids: list[bytes], group: str = DETECT_GROUP, *, delete: bool = False) -> None:
    """Acknowledge entries; with ``delete``, also remove them (only when no other group reads the stream)."""
    if not ids:
        return
    pipe = r.pipeline(transaction=True)
    pipe.xack(stream, group, *ids)
    if delete:
        pipe.xdel(stream, *ids)
    pipe.execute()


def reclaim_stale(
    r: redis.Redis, stream: str, consumer: str, *, min_idle_ms: int, count: int = 64, group: str = DETECT_GROUP
) -> list[Entry]:
    """Take over entries pending longer than ``min_idle_ms`` (XAUTOCLAIM), with their delivery counts."""
    reply = r.xautoclaim(stream, group, consumer, min_idle_time=min_idle_ms, start_id="0-0", count=count)
    claimed = [(eid, f) for eid, f in reply[1] if f is not None]
    if not claimed:
        return []
    counts = {}
    for p in r.xpending_range(stream, group, min=claimed[0][0], max=claimed[-1][0], count=len(claimed) * 4 + 16):
        counts[p["message_id"]] = int(p["times_delivered"])
    return [Entry(eid, f, counts.get(eid, 1), stream=stream) for eid, f in claimed]


def dead_letter(
    r: redis.Redis, keys: Keys, entry: Entry, error: str, group: str = DETECT_GROUP, stream: str | None = None,
    *, maxlen: int = 10_000, max_meta: int = 64 * 1024,
) -> None:
    """Move an entry to the dead-letter stream with its error, and acknowledge it.

    The dead letter keeps the entry's fields (``v``, ``meta``, each cut at ``max_meta`` bytes) and
    the error, never the pixels (``data`` is replaced by its length, ``data_bytes``); the stream
    is capped near ``maxlen`` entries. On a cluster the dead-letter stream and the frames shard are
    in different slots: the entry is added to the dead letters first, then acknowledged (a crash
    between leaves it pending, so it may be dead-lettered twice, never lost).
    """
    stream = stream or entry.stream or keys.frames
    fields: dict[Any, Any] = {}
    for k, v in entry.fields.items():
        name = k if isinstance(k, bytes) else str(k).encode()
        if name == b"data":
            fields[b"data_bytes"] = str(len(v)).encode()
        else:
            fields[name] = v[:max_meta]
    fields[b"error"] = error.encode()
    fields[b"origin"] = f"{stream}/{entry.id.decode()}".encode()
    fields[b"deliveries"] = str(entry.deliveries).encode()
    if keys.cluster:
        with replicated(r, keys, keys.dead) as c:
            c.xadd(keys.dead, fields, maxlen=maxlen, approximate=True)
        pipe = r.pipeline(transaction=True)
    else:
        pipe = r.pipeline(transaction=True)
        pipe.xadd(keys.dead, fields, maxlen=maxlen, approximate=True)
    pipe.xack(stream, group, entry.id)
    pipe.xdel(stream, entry.id)
    pipe.execute()


def prune_idle_consumers(
    r: redis.Redis, stream: str, *, idle_ms: int, keep: str | None = None, group: str = DETECT_GROUP
) -> list[str]:
    """Delete the group's consumers idle for ``idle_ms`` with no pending entries (except ``keep``).

    A consumer with pending entries is kept: its entries are reclaimed first, then it goes.
    """
    removed = []
    for c in r.xinfo_consumers(stream, group):
        name = _s(c["name"])
        if name != keep and int(c["pending"]) == 0 and int(c["idle"]) >= idle_ms:
            r.xgroup_delconsumer(stream, group, name)
            removed.append(name)
    return removed


def publish_json(r: redis.Redis, stream: str, event: Mapping[str, Any], *, maxlen: int | None = None) -> bytes:
    """XADD a JSON event as field ``event`` (and PUBLISH it on the channel of the same name)."""
    payload = json.dumps(event, separators=(",", ":"), allow_nan=False)
    pipe = r.pipeline(transaction=True)
    pipe.xadd(stream, {"event": payload}, maxlen=maxlen, approximate=True)
    pipe.publish(stream, payload)
    entry_id, _ = pipe.execute()
    return entry_id


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v
