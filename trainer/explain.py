"""``forensics explain ALERT_ID``: the saliency figure of one alert's evidence crop.

The crop is read back from Redis; the model is the alert's own version from the registry (every
file's sha256 verified, and the version's sha256 must match the alert's), explained with its torch
weights (:mod:`trainer.saliency`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from forensics.alerts import decode_crop_png, evidence_png, find_alert
from forensics.errors import ConfigError
from forensics.registry import Registry
from forensics.streams import Keys
from trainer.models import load_discriminator
from trainer.saliency import explain_crop, saliency_figure


def default_figure_path(alert_id: str) -> Path:
    """./explain-<alert id, with anything but letters, digits, - _ . replaced by _>.png"""
    return Path("explain-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in alert_id) + ".png")


def explain_alert(r: redis.Redis, keys: Keys, reg: Registry, alert_id: str, *, margin: float,
                  out: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Write the figure (PNG at ``out``, default :func:`default_figure_path`) and return its summary.

    Raises ConfigError (one line) for a crop that is not a readable PNG, a model that is not the
    alert's, or a version without torch weights.
    """
    alert = find_alert(r, keys, alert_id)
    crop = decode_crop_png(evidence_png(r, keys, alert))
    if crop is None:
        raise ConfigError(f"the evidence crop of alert {alert_id!r} is not a readable PNG")
    model_info = alert.get("model") or {}
    art = reg.load(model_info.get("version"))  # verifies every file's sha256
    if model_info.get("sha256") and model_info["sha256"] != art.sha256:
        raise ConfigError(f"model {art.version} in {reg.root} is not the one that raised alert {alert_id!r}")
    if not (art.path / "discriminator.pt").exists():
        raise ConfigError(f"model {art.version} has no torch weights (discriminator.pt) to explain with")
    model = load_discriminator(art.path / "discriminator.pt")
    ex = explain_crop(model, crop, margin=margin)
    out = out or default_figure_path(alert_id)
    ev = alert["evidence"]
    saliency_figure(crop, ex, out, title=f"{alert['kind']} {alert_id} · {alert['source']} frame {ev['frame']} · "
                    f"model {art.version}")  # fmt: skip
    return {
        "alert_id": alert_id, "kind": alert["kind"], "source": alert["source"], "model": art.version,
        "frame": ev["frame"], "box": ev.get("box"), "fake_prob_alert": ev.get("fake_prob"),
        "fake_prob_torch": ex["fake_prob"], "regions_input_gradient": ex["regions_input_gradient"],
        "regions_grad_cam": ex["regions_grad_cam"], "figure": str(out),
    }  # fmt: skip
