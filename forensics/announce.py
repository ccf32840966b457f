"""Model announcements on Redis: the ``<prefix>:model`` key and a message on the channel of that name.

Detect workers read the key between batches (``workers.detect.DetectWorker.maybe_reload``) and
hot-reload the announced version; without the key they fall back to ``models/current``. So every
change of the current model (promotion by the gate or by hand, rollback) goes through here.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from forensics.registry import Artifact, Registry
from forensics.streams import Keys


def announce_model(r: redis.Redis, keys: Keys, art: Artifact, *, previous: str | None, reason: str) -> dict[str, Any]:
    """SET the key to {version, sha256, previous, reason, at} and PUBLISH the same JSON; returns it."""
    msg = {"version": art.version, "sha256": art.sha256, "previous": previous, "reason": reason, "at": time.time()}
    payload = json.dumps(msg, separators=(",", ":"))
    pipe = r.pipeline(transaction=True)
    pipe.set(keys.model, payload)
    pipe.publish(keys.model, payload)
    pipe.execute()
    return msg


def promote_announced(reg: Registry, r: redis.Redis, keys: Keys, version: str, *, reason: str) -> Artifact:
    """Promote ``version`` in the registry (verified, atomic) and announce it."""
    previous = reg.current()
    art = reg.promote(version, reason=reason)
    announce_model(r, keys, art, previous=previous, reason=reason)
    return art


def rollback_announced(reg: Registry, r: redis.Redis, keys: Keys) -> Artifact:
    """Return to the version current before this one, and announce it."""
    previous = reg.current()
    art = reg.rollback()
    announce_model(r, keys, art, previous=previous, reason=f"rollback from {previous}")
    return art
