"""Online score of the live pipeline against the simulator's ground truth (topic sim/truth).

Each published Detections message is paired with the ground truth of the same capture
instant (the sim publishes truth stamped with the front camera's capture time; the nearest
truth within `max_offset_ns` is used), and nuScenes-style mAP is computed over the last
`window` pairs. Truth counts when visible (MIN_VISIBLE_PX) and, as in `perception eval`, inside
its class's range (metrics.CLASS_RANGE), not the model's grid. Only published detections (above the node's score threshold) count, so this
is a live health indicator, not a replacement for `perception eval`.
"""
from __future__ import annotations

from collections import OrderedDict, deque

from perception.boxes import MIN_VISIBLE_PX, metric_boxes
from perception.metrics import evaluate


class OnlineScore:
    name = "online mAP"

    def __init__(self, classes, window: int = 100, max_offset_ns: int = 60_000_000):
        self.classes = tuple(classes)
        self.window = window
        self.max_offset_ns = max_offset_ns
        self.truth: OrderedDict[int, list] = OrderedDict()     # stamp -> objects, newest last
        self.pairs: deque = deque(maxlen=window)
        self.frame = 0

    def add_truth(self, msg) -> None:
        self.truth[msg.stamp_ns] = [o for o in msg.objects if o.visible_pixels >= MIN_VISIBLE_PX]
        while len(self.truth) > 64:
            self.truth.popitem(last=False)

    def add_detections(self, msg) -> bool:
        """Pair a Detections message with its truth; False when none is close enough in time."""
        if not self.truth:
            return False
        ref = [f.capture_end_ns for f in msg.frames] or [msg.stamp_ns]
        stamp = min(self.truth, key=lambda s: min(abs(s - r) for r in ref))
        if min(abs(stamp - r) for r in ref) > self.max_offset_ns:
            return False
        self.frame += 1
        self.pairs.append((metric_boxes(msg.objects, self.frame, self.classes),
                           metric_boxes(self.truth[stamp], self.frame, self.classes)))
        return True

    def score(self) -> float | None:
        if not self.pairs:
            return None
        dets = [b for d, _ in self.pairs for b in d]
        gts = [b for _, g in self.pairs for b in g]
        per_class = evaluate(dets, gts, self.classes)["per_class"]
        # A window without, say, pedestrians says nothing about them: average the classes with truth
        # (perception eval counts such a class as 0, as the devkit does).
        aps = [r["AP"] for r in per_class.values() if r["num_gt"] > 0]
        return float(sum(aps) / len(aps)) if aps else 0.0
