"""Ingest in face mode: crops with boxes and track ids on the stream; faceless frames counted."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
from skimage import data as skdata

from forensics.streams import Keys
from forensics.wire import decode
from tests.media import write_test_video
from workers.ingest import FileIngest

FACE = cv2.resize(skdata.astronaut()[20:260, 120:340], (160, 175))


def face_clip_frame(i: int, w: int, h: int) -> np.ndarray:
    """A face sliding right for frames 0-19, then an empty scene for frames 20-29."""
    img = np.full((h, w, 3), (60, 90, 120), np.uint8)
    if i < 20:
        x = 40 + 6 * i
        img[150 : 150 + FACE.shape[0], x : x + FACE.shape[1]] = FACE
    return img


def ingest_face_clip(r, settings, tmp_path, detector: str):
    """Ingest the face clip (every frame sampled) with ``detector``; the ingest result."""
    src = write_test_video(tmp_path / "face.mp4", frames=30, fps=10, width=640, height=480, frame_fn=face_clip_frame)
    settings.faces.detector = detector
    settings.ingest.sample, settings.ingest.every_nth, settings.ingest.batch_size = "every_nth", 1, 8
    watch = Path(settings.ingest.watch_dir)
    watch.mkdir(parents=True)
    shutil.copy(src, watch / "face.mp4")
    return FileIngest(settings, r).process(watch / "face.mp4")


def test_face_mode_puts_tracked_crops_on_the_stream(r, settings, tmp_path):
    out = ingest_face_clip(r, settings, tmp_path, "haar")
    assert out.status == "done"
    entries = [decode(f) for _i, f in r.xrange(Keys(settings.redis.prefix).frames)]
    crops = [(b.frame_index[k], b.box[k], b.track[k]) for b in entries if b.kind == "frames" for k in range(len(b))]
    frames_with_face = {c[0] for c in crops}
    assert len(frames_with_face) >= 18 and max(frames_with_face) < 20  # found in >= 90% of face frames
    assert {c[2] for c in crops} == {0}  # one person, one track
    xs = [c[1][0] for c in sorted(crops)]
    assert xs[-1] - xs[0] > 80  # the box follows the face
    eof = entries[-1]
    assert eof.kind == "eof" and eof.info["no_face_frames"] == 30 - len(frames_with_face)
    assert all(b.images.shape[1:] == (64, 64, 3) for b in entries if b.kind == "frames")
    h = r.hgetall(Keys(settings.redis.prefix).source(out.source))
    assert h[b"no_face_frames"] == str(30 - len(frames_with_face)).encode() and h[b"state"] == b"done"


def test_default_detector_puts_landmarks_on_the_stream(r, settings, tmp_path):
    assert ingest_face_clip(r, settings, tmp_path, "blazeface").status == "done"
    entries = [decode(f) for _i, f in r.xrange(Keys(settings.redis.prefix).frames)]
    crops = [(b.frame_index[k], b.box[k], b.track[k], b.landmarks[k]) for b in entries if b.kind == "frames"
             for k in range(len(b))]  # fmt: skip
    assert len({c[0] for c in crops}) >= 19 and max(c[0] for c in crops) < 20 and {c[2] for c in crops} == {0}
    for _, box, _, marks in crops:
        (rex, rey), (lex, ley), (nx, ny), (mrx, mry), (mlx, mly) = marks
        assert rex < nx < lex and mrx < mlx and max(rey, ley) < ny < min(mry, mly)
        assert box[0] <= rex and lex <= box[2] and box[1] <= rey and mry <= box[3]
