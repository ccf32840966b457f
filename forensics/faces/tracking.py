"""Face tracks across sampled frames: one id per person within one source."""

from __future__ import annotations

from forensics.faces.geometry import Box, iou


class IouTracker:
    """Greedy IoU matching of this frame's boxes to the last box of each live track."""

    def __init__(self, iou_match: float = 0.3, max_missed: int = 5):
        self.iou_match = iou_match
        self.max_missed = max_missed
        self.reset()

    def reset(self) -> None:
        self._tracks: dict[int, tuple[Box, int]] = {}  # id -> (last box, frames missed)
        self._next_id = 0

    def assign(self, boxes: list[Box]) -> list[int]:
        pairs = sorted(
            ((iou(b, tb), i, tid) for i, b in enumerate(boxes) for tid, (tb, _) in self._tracks.items()),
            reverse=True,
        )
        ids: list[int | None] = [None] * len(boxes)
        used: set[int] = set()
        for score, i, tid in pairs:
            if score < self.iou_match:
                break
            if ids[i] is None and tid not in used:
                ids[i] = tid
                used.add(tid)
        for i, tid in enumerate(ids):
            if tid is None:
                ids[i] = tid = self._next_id
                self._next_id += 1
            self._tracks[tid] = (boxes[i], -1)
        for tid, (tb, missed) in list(self._tracks.items()):
            missed += 1
            if missed > self.max_missed:
                del self._tracks[tid]
            else:
                self._tracks[tid] = (tb, missed)
        return [int(t) for t in ids]  # type: ignore[arg-type]
