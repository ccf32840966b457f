"""Iterative refinement: the anomaly detector's rate on new data sets the next run's PGD radius.

Field data that the Mahalanobis detector flags far more often than clean validation data did
suggests adversarial pressure on the deployed model, so the next candidate trains at a larger
L-inf radius; data flagged far less often lets the radius relax towards clean accuracy. The
radius moves by one bounded step per run, within ``[eps_min, eps_max]``, and is kept in Redis
(``<prefix>:retrain:refine``) for the next run. The adversarial share of each training batch
(half clean, half adversarial in :mod:`trainer.train`) is not changed here.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import redis

from forensics.model import LoadedModel
from forensics.streams import Keys

RAISE, RELAX = 1.25, 0.9  # step factors of the radius


def anomaly_rate(model: LoadedModel, images: np.ndarray) -> float:
    """Share of crops (uint8 [N,S,S,3]) the model's anomaly detector flags (LoadedModel.score); NaN for none."""
    return float(model.score(images).anomalous.mean()) if len(images) else float("nan")


def next_eps(rate: float, baseline: float, eps: float, *, eps_min: float, eps_max: float) -> tuple[float, str]:
    """(radius for the next run, why): x1.25 if ``rate`` > 2x ``baseline``, x0.9 if < baseline/2."""
    if not np.isfinite(rate):
        return eps, "no new data scored: radius unchanged"
    if rate > 2 * baseline:
        new, why = eps * RAISE, f"anomaly rate {rate:.3f} > 2 x clean {baseline:.3f}: raise the radius"
    elif rate < baseline / 2:
        new, why = eps * RELAX, f"anomaly rate {rate:.3f} < clean {baseline:.3f} / 2: relax the radius"
    else:
        new, why = eps, f"anomaly rate {rate:.3f} within [1/2, 2] x clean {baseline:.3f}: radius unchanged"
    return float(min(max(new, eps_min), eps_max)), why


def load_state(r: redis.Redis, keys: Keys) -> dict[str, Any] | None:
    raw = r.get(keys.retrain_refine)
    try:
        state = json.loads(raw) if raw else None
        return state if isinstance(state, dict) and isinstance(state.get("eps"), float) else None
    except ValueError:
        return None


def save_state(r: redis.Redis, keys: Keys, state: dict[str, Any]) -> None:
    r.set(keys.retrain_refine, json.dumps(state))
