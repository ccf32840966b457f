"""Turning per-crop scores into decisions: one verdict per file, windowed alerts per live source.

File rule: the video's score is the mean fake probability over all scored face crops, compared
with the ``video_prob`` threshold that the trainer calibrated on validation videos with exactly
this rule (trainer.train.video_scores). Per face track the same mean is reported, and a file is
also called FAKE when any track with at least ``min_track_faces`` crops is over the threshold,
so one swapped face among several real ones is not averaged away.

Live rule: the mean fake probability over a sliding window of the last ``window_s`` seconds,
with hysteresis: a ``deepfake`` alert when it rises above the threshold plus ``margin`` (with
at least ``min_faces`` crops in the window), re-armed only after it falls below the threshold
minus ``margin``. The same for the anomaly rate in the window against ``anomaly_rate``.

Anomaly per track (issue 8): an adversarial perturbation is crafted frame by frame and moves every
frame's anomaly score a little; the mean score over a face track (a file's track, or a live
window) keeps that shift while averaging the clean scores' noise away, so it is compared with the
defence's ``track_threshold``, calibrated on clean validation tracks.

Low-quality crops (issue 17, :mod:`forensics.quality`: blur, blocking, tiny faces) are treated like
anomalous ones: each crop's reasons are kept with it and counted apart (``low_quality_rate`` and
per-reason counts beside ``anomaly_rate``, per file and per track), and, like anomalous crops, they
still count in the score, because the video threshold was calibrated on the mean over all crops;
dropping them would change the calibrated rule. What neither flag does is make a score trustworthy:
they tell the analyst which crops, and how many, the score should not be trusted on.
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Any, Iterable

from forensics.quality import REASONS as QUALITY_REASONS


@dataclass(frozen=True)
class CropRecord:
    """One scored crop, as stored between batches (JSON-friendly)."""

    frame: int
    pts: float | None
    track: int | None
    prob: float
    anomaly: float
    anomalous: bool
    box: list[int]
    low_quality: tuple[str, ...] = ()  # the quality gate's reasons (forensics.quality.REASONS); empty: trusted

    def row(self) -> list:
        """The results stream's crop row (``disclosure.RESULT_FIELDS``): seven columns, as before issue 17."""
        return [self.frame, self.pts, self.track, round(self.prob, 6), round(self.anomaly, 4), int(self.anomalous), self.box]

    def to_json(self) -> list:
        """The row plus the low_quality reasons (an eighth column, which readers before issue 17 ignore)."""
        return [*self.row(), list(self.low_quality)]

    @classmethod
    def from_json(cls, v: list) -> CropRecord:
        # Rows published under alerts.scores = label carry the 0/1 decision and no distance (null).
        return cls(int(v[0]), v[1], v[2], float(v[3]), math.nan if v[4] is None else float(v[4]), bool(v[5]),
                   list(v[6]), tuple(str(r) for r in v[7]) if len(v) > 7 and isinstance(v[7], list) else ())  # fmt: skip


def file_verdict(records: Iterable[CropRecord], *, threshold: float, eof: dict[str, Any],
                 min_track_faces: int = 3, track_anomaly_threshold: float | None = None) -> dict[str, Any]:  # fmt: skip
    """The fields of a ``verdict`` alert for a finished file.

    With ``track_anomaly_threshold`` (the model's ``defence.npz``), every track of at least
    ``min_track_faces`` crops whose mean anomaly score is over it is ``anomalous`` (suspected
    adversarial or out-of-distribution), and ``anomalous_tracks`` counts them.
    """
    recs = list(records)
    frames = {r.frame for r in recs}
    base = {
        "file": eof.get("file"),
        "threshold": threshold,
        "frames_decoded": eof.get("frames_decoded", 0),
        "frames_sampled": eof.get("frames_sampled", 0),
        "frames_scored": len(frames),
        "faces_scored": len(recs),
    }
    if eof.get("error"):
        return {**base, "label": "ERROR", "score": None, "error": eof["error"], "anomaly_rate": None,
                "low_quality_rate": None, "tracks": {}}  # fmt: skip
    if not recs:
        return {**base, "label": "NO_FACES", "score": None, "anomaly_rate": None, "low_quality_rate": None,
                "tracks": {}, "reason": "no face was found in any sampled frame"}  # fmt: skip
    score = sum(r.prob for r in recs) / len(recs)
    tracks: dict[str, dict[str, Any]] = {}
    for r in recs:
        t = tracks.setdefault(str(r.track), {"faces": 0, "sum": 0.0, "anomalous": 0, "anomaly": 0.0, "lq": 0})
        t["faces"] += 1
        t["sum"] += r.prob
        t["anomaly"] += r.anomaly
        t["anomalous"] += int(r.anomalous)
        t["lq"] += int(bool(r.low_quality))
    track_out = {
        k: {
            "faces": v["faces"],
            "score": v["sum"] / v["faces"],
            "anomaly_rate": v["anomalous"] / v["faces"],
            "anomaly_mean": v["anomaly"] / v["faces"],
            "low_quality_rate": v["lq"] / v["faces"],
        }
        for k, v in tracks.items()
    }
    if track_anomaly_threshold is not None:
        for t in track_out.values():
            t["anomalous"] = t["faces"] >= min_track_faces and t["anomaly_mean"] > track_anomaly_threshold
    fake_track = any(t["faces"] >= min_track_faces and t["score"] > threshold for t in track_out.values())
    worst = max(recs, key=lambda r: r.prob)
    return {
        **base,
        "label": "FAKE" if (score > threshold or fake_track) else "REAL",
        "score": score,
        "anomaly_rate": sum(r.anomalous for r in recs) / len(recs),
        "anomalous_tracks": sum(bool(t.get("anomalous")) for t in track_out.values()),
        "low_quality_rate": sum(bool(r.low_quality) for r in recs) / len(recs),
        "low_quality": {q: sum(q in r.low_quality for r in recs) for q in QUALITY_REASONS},
        "tracks": track_out,
        "evidence": {"frame": worst.frame, "pts": worst.pts, "box": worst.box, "fake_prob": worst.prob,
                     "mahalanobis": worst.anomaly, "track": worst.track, "low_quality": list(worst.low_quality)},  # fmt: skip
    }


@dataclass
class WindowDecision:
    deepfake: str | None  # "on" when the alert should fire now, "off" when it re-arms, else None
    anomaly: str | None
    mean_prob: float
    anomaly_rate: float
    faces: int


def window_decision(probs: list[float], flags: list[bool], state: dict[str, str], *, threshold: float,
                    margin: float, min_faces: int, anomaly_rate: float, scores: list[float] | None = None,
                    track_threshold: float | None = None) -> WindowDecision:  # fmt: skip
    """Hysteresis over a live source's window. ``state`` holds "deepfake"/"anomaly": "on"|"off".

    The window is anomalous when its rate of anomalous crops is over ``anomaly_rate`` or, with a
    ``track_threshold`` (the defence's track rule), when the mean anomaly score of its crops
    (``scores``) is over it; it re-arms when both have fallen back (rate under half, mean under).
    """
    n = len(probs)
    mean = sum(probs) / n if n else 0.0
    rate = sum(flags) / n if n else 0.0
    mean_score = sum(scores) / len(scores) if scores else float("-inf")
    track_hot = track_threshold is not None and mean_score > track_threshold
    deepfake = anomaly = None
    if state.get("deepfake") != "on" and n >= min_faces and mean > threshold + margin:
        deepfake = "on"
    elif state.get("deepfake") == "on" and mean < threshold - margin:
        deepfake = "off"
    if state.get("anomaly") != "on" and n >= min_faces and (rate > anomaly_rate or track_hot):
        anomaly = "on"
    elif state.get("anomaly") == "on" and rate < anomaly_rate / 2 and not track_hot:
        anomaly = "off"
    return WindowDecision(deepfake, anomaly, mean, rate, n)
