"""Assertion helpers for integration tests of the plugin (the pytest fixtures are in
perception/testing/pytest_plugin.py): assert on a Detections message the way a test reads,
"a car within 2 m of (12, -3)", "no phantom above 0.5 in this empty region", and on failure say
what was seen instead (classes, positions, scores, the nearest object), not just that it failed.

Positions are in the ego frame (x forward, y left, metres), as in Detections.objects[].center.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from perception.boxes import CLASSES, class_name

__all__ = ["Region", "assert_detected", "assert_no_phantoms", "describe", "nearest", "truth_objects"]


@dataclass(frozen=True)
class Region:
    """An axis-aligned rectangle of the ego frame's ground plane: x in [x_min, x_max), y in [y_min, y_max)."""
    x_min: float
    x_max: float
    y_min: float
    y_max: float

    def __post_init__(self):
        if not (self.x_min < self.x_max and self.y_min < self.y_max):
            raise ValueError(f"empty region {self}")

    def contains(self, x: float, y: float) -> bool:
        return self.x_min <= x < self.x_max and self.y_min <= y < self.y_max

    def __str__(self) -> str:
        return f"x [{self.x_min:g}, {self.x_max:g}) y [{self.y_min:g}, {self.y_max:g}) m"


def _class_of(obj) -> str:
    return class_name(obj.object_class) or f"class {obj.object_class}"


def _check_class(cls: str) -> str:
    if cls not in CLASSES:
        raise ValueError(f"unknown class {cls!r}; classes: {', '.join(CLASSES)}")
    return cls


def describe(obj, position_xy: tuple[float, float] | None = None) -> str:
    """One object as a test failure prints it: "car 0.81 at (12.3, -3.1) m", plus its distance to position_xy."""
    text = f"{_class_of(obj)} {obj.score:.2f} at ({obj.center.x:.1f}, {obj.center.y:.1f}) m"
    if position_xy is not None:
        text += f", {math.hypot(obj.center.x - position_xy[0], obj.center.y - position_xy[1]):.1f} m away"
    return text


def _objects(msg_or_objects) -> list:
    return list(msg_or_objects.objects) if hasattr(msg_or_objects, "objects") else list(msg_or_objects)


def nearest(objects: Iterable, position_xy: tuple[float, float], cls: str | None = None):
    """The object (of class cls, if given) nearest to position_xy in the ground plane, or None."""
    best, best_d = None, math.inf
    for o in objects:
        if cls is not None and _class_of(o) != cls:
            continue
        d = math.hypot(o.center.x - position_xy[0], o.center.y - position_xy[1])
        if d < best_d:
            best, best_d = o, d
    return best


def _seen(objects: list, position_xy: tuple[float, float] | None, limit: int = 12) -> str:
    if not objects:
        return "nothing was detected"
    key = (lambda o: math.hypot(o.center.x - position_xy[0], o.center.y - position_xy[1])) if position_xy else (lambda o: -o.score)
    shown = sorted(objects, key=key)[:limit]
    more = f"\n  ... and {len(objects) - limit} more" if len(objects) > limit else ""
    return (f"{len(objects)} object(s) were detected" + (" (nearest first)" if position_xy else " (best first)") + ":\n  "
            + "\n  ".join(describe(o, position_xy) for o in shown) + more)


def assert_detected(detections, cls: str, position_xy: tuple[float, float], within_m: float = 2.0, min_score: float = 0.3):
    """Assert an object of class `cls` with score >= min_score whose centre is within `within_m` of
    position_xy (ego frame, metres); returns it (the best-scoring one of those). The failure message
    names the nearest object of that class and lists everything seen, nearest first."""
    _check_class(cls)
    objects = _objects(detections)
    hits = [o for o in objects if _class_of(o) == cls and o.score >= min_score
            and math.hypot(o.center.x - position_xy[0], o.center.y - position_xy[1]) <= within_m]
    if hits:
        return max(hits, key=lambda o: o.score)
    near = nearest(objects, position_xy, cls)
    near_text = (f"the nearest {cls} is {describe(near, position_xy)}" if near is not None else f"no {cls} was detected at all")
    raise AssertionError(f"expected a {cls} with score >= {min_score:g} within {within_m:g} m of "
                         f"({position_xy[0]:.1f}, {position_xy[1]:.1f}) m; {near_text}; {_seen(objects, position_xy)}")


def assert_no_phantoms(detections, region: Region | tuple[float, float, float, float], score: float = 0.5,
                       classes: Iterable[str] | None = None) -> None:
    """Assert no detection (of `classes`, default any) with score >= `score` has its centre inside
    `region` (a Region or (x_min, x_max, y_min, y_max), ego frame). The failure lists every
    offending object and what else was seen."""
    r = region if isinstance(region, Region) else Region(*region)
    wanted = None if classes is None else {_check_class(c) for c in classes}
    objects = _objects(detections)
    bad = [o for o in objects if o.score >= score and r.contains(o.center.x, o.center.y)
           and (wanted is None or _class_of(o) in wanted)]
    if bad:
        what = "objects" if wanted is None else "/".join(sorted(wanted))
        raise AssertionError(f"expected no {what} with score >= {score:g} in {r}; found {len(bad)}:\n  "
                             + "\n  ".join(describe(o) for o in sorted(bad, key=lambda o: -o.score))
                             + f"\n{_seen(objects, None)}")


def truth_objects(truth, cls: str | None = None, min_visible_px: int | None = None) -> list:
    """Objects of a perception.v1.GroundTruth worth asserting on: of class cls (if given) and with at
    least min_visible_px visible pixels (default perception.boxes.MIN_VISIBLE_PX: what the metrics score)."""
    from perception.boxes import MIN_VISIBLE_PX

    need = MIN_VISIBLE_PX if min_visible_px is None else min_visible_px
    return [o for o in truth.objects if o.visible_pixels >= need and (cls is None or _class_of(o) == _check_class(cls))]
