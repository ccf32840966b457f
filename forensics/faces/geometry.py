"""Box geometry shared by cropping and tracking: square crop regions and IoU."""

from __future__ import annotations

from collections.abc import Sequence

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in full-resolution pixels, x1/y1 exclusive


def square_region(box: Box, frame_w: int, frame_h: int, margin: float) -> Box:
    """The square around ``box`` with ``margin`` x side added on each side, moved inside the frame.

    The square keeps its side when it can be shifted inside the frame, and shrinks to the
    frame's shorter side otherwise.
    """
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    side = max(1, round(min(side, frame_w, frame_h)))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    sx = round(cx - side / 2)
    sy = round(cy - side / 2)
    sx = min(max(sx, 0), frame_w - side)
    sy = min(max(sy, 0), frame_h - side)
    return (sx, sy, sx + side, sy + side)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
