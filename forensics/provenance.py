"""What a model version was trained on, as its manifest records it (``provenance``), in the forms
``scan``, the detect worker, verdict alerts and ``models list`` show.

The record is written by the trainer (``trainer.sources.describe``):
``{"data": "synthetic"|"real", "fakes": "labelled"|"self-blended"|"both", "sources": [...],
"input_size": S, "architecture": ..., "videos": {split: {"real": n, "fake": n}}, "crops": {...}, ...}``.
"""

from __future__ import annotations

from typing import Any

SYNTHETIC_WARNING = (
    "model {version} was trained on synthetic faces only: its verdicts on real video are not meaningful "
    "(train on real footage: README, 'Training for real video')"
)


def synthetic_only(provenance: dict[str, Any] | None) -> bool:
    """True when the version learned from synthetic clips alone (the demo model)."""
    return bool(provenance) and provenance.get("data") == "synthetic"


def warning_line(version: str, provenance: dict[str, Any] | None) -> str | None:
    """The one line printed at ``scan`` and detect start-up for a synthetic-only model; None otherwise."""
    return SYNTHETIC_WARNING.format(version=version) if synthetic_only(provenance) else None


def alert_fields(provenance: dict[str, Any] | None) -> dict[str, Any]:
    """``trained_on`` (short provenance, for verdicts) and the ``synthetic_only`` flag."""
    if not provenance:
        return {"trained_on": None, "synthetic_only": False}
    return {
        "trained_on": {k: provenance.get(k) for k in ("data", "fakes", "sources", "input_size", "architecture")},
        "synthetic_only": synthetic_only(provenance),
    }


def summary(provenance: dict[str, Any] | None) -> str:
    """One short human phrase, e.g. ``real video (real labelled + self-blended), 120 videos, 3840 crops, 128 px resnet``."""
    if not provenance:
        return "not recorded"
    videos = provenance.get("videos", {}).get("train", {})
    crops = provenance.get("crops", {}).get("train", {})
    sources = " + ".join(provenance.get("sources", [])) or "-"
    n_videos = int(videos.get("real", 0)) + int(videos.get("fake", 0))
    n_crops = int(crops.get("real", 0)) + int(crops.get("fake", 0)) + int(crops.get("self_blended", 0))
    return (f"{provenance.get('data')} video ({sources}), {n_videos} videos, {n_crops} crops, "
            f"{provenance.get('input_size')} px {provenance.get('architecture', 'dcgan')}")  # fmt: skip
