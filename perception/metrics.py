"""nuScenes-style 3D detection metrics, in plain numpy.

Matching is by ground-plane centre distance; AP is averaged over the thresholds
{0.5, 1, 2, 4} m and counts only recall and precision above 0.1; true-positive errors are
taken at the 2 m threshold: ATE (m), ASE (1 - IoU of the boxes aligned in centre and yaw),
AOE (rad), AVE (m/s); NDS = (5 mAP + sum over TP metrics of (1 - min(1, error))) / 10.
The simulator has no attributes, so nuScenes' AAE is absent and NDS tops out at 0.9.
The procedure follows the nuScenes devkit (detection/algo.py) so numbers are comparable in
spirit; the object classes and ranges are this project's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DIST_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)
TP_THRESHOLD = 2.0
MIN_RECALL = 0.1
MIN_PRECISION = 0.1
TP_METRICS = ("ATE", "ASE", "AOE", "AVE")
# Errors that mean nothing for a class (a cone has no heading and does not move).
NOT_APPLICABLE = {"traffic_cone": ("AOE", "AVE")}
RECALL_GRID = np.linspace(0, 1, 101)


@dataclass
class Box:
    """One box in the ego frame; `frame` ties detections to the ground truth of the same scene."""
    frame: int
    cls: str
    center: np.ndarray      # (3,)
    size: np.ndarray        # (3,) l, w, h
    yaw: float
    velocity: np.ndarray    # (2,)
    score: float = 1.0


@dataclass
class ClassResult:
    ap: dict[float, float] = field(default_factory=dict)    # threshold -> AP
    tp_errors: dict[str, float] = field(default_factory=dict)
    num_gt: int = 0
    # threshold -> (recall, precision)
    pr_curves: dict[float, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def mean_ap(self) -> float:
        return float(np.mean(list(self.ap.values())))


def yaw_error(a: float, b: float) -> float:
    d = abs((a - b + np.pi) % (2 * np.pi) - np.pi)
    return float(d)


def aligned_iou(size_a: np.ndarray, size_b: np.ndarray) -> float:
    """IoU of two boxes with the same centre and heading (only their sizes differ)."""
    inter = np.prod(np.minimum(size_a, size_b))
    return float(inter / (np.prod(size_a) + np.prod(size_b) - inter))


def match(dets: list[Box], gts: list[Box], threshold: float):
    """Greedy matching in descending score order, as the devkit does. Returns per detection
    (in score order) whether it is a TP and, for TPs, the matched ground truth."""
    order = sorted(range(len(dets)), key=lambda i: -dets[i].score)
    gt_by_frame: dict[int, list[int]] = {}
    for j, g in enumerate(gts):
        gt_by_frame.setdefault(g.frame, []).append(j)
    taken = np.zeros(len(gts), bool)
    results: list[tuple[Box, Box | None, float | None]] = []
    for i in order:
        d = dets[i]
        best, best_dist = None, np.inf
        for j in gt_by_frame.get(d.frame, ()):
            if taken[j]:
                continue
            dist = float(np.linalg.norm(d.center[:2] - gts[j].center[:2]))
            if dist < best_dist:
                best, best_dist = j, dist
        if best is not None and best_dist < threshold:
            taken[best] = True
            results.append((d, gts[best], best_dist))
        else:
            results.append((d, None, None))
    return results


def _precision_recall(matches, num_gt: int):
    tp = np.array([g is not None for _, g, _ in matches], dtype=np.float64)
    fp = 1.0 - tp
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    prec = ctp / np.maximum(ctp + cfp, 1e-12)
    rec = ctp / max(num_gt, 1)
    return rec, prec, tp.astype(bool)


def average_precision(matches, num_gt: int) -> tuple[float, np.ndarray, np.ndarray]:
    if num_gt == 0 or not matches:
        return 0.0, np.zeros(0), np.zeros(0)
    rec, prec, _ = _precision_recall(matches, num_gt)
    prec_interp = np.interp(RECALL_GRID, rec, prec, right=0.0)
    p = prec_interp[round(100 * MIN_RECALL) + 1:] - MIN_PRECISION
    p[p < 0] = 0.0
    return float(np.mean(p) / (1.0 - MIN_PRECISION)), rec, prec


def tp_errors(matches, num_gt: int, cls: str) -> dict[str, float]:
    """Mean TP errors over the recall range above MIN_RECALL (1.0 = worst when never reached)."""
    worst = {m: 1.0 for m in TP_METRICS}
    for m in NOT_APPLICABLE.get(cls, ()):
        worst[m] = float("nan")
    if num_gt == 0 or not matches:
        return worst
    rec, _, is_tp = _precision_recall(matches, num_gt)
    tps = [(d, g, dist) for (d, g, dist) in matches if g is not None]
    if not tps:
        return worst
    errors = {
        "ATE": np.array([dist for _, _, dist in tps]),
        "ASE": np.array([1.0 - aligned_iou(d.size, g.size) for d, g, _ in tps]),
        "AOE": np.array([yaw_error(d.yaw, g.yaw) for d, g, _ in tps]),
        "AVE": np.array([float(np.linalg.norm(d.velocity - g.velocity)) for d, g, _ in tps]),
    }
    tp_recall = rec[is_tp]
    first = round(100 * MIN_RECALL) + 1
    last = int(np.nonzero(RECALL_GRID <= tp_recall[-1] + 1e-12)[0][-1])
    out = {}
    for m, e in errors.items():
        if m in NOT_APPLICABLE.get(cls, ()):
            out[m] = float("nan")
            continue
        if last < first:
            out[m] = 1.0
            continue
        cummean = np.cumsum(e) / np.arange(1, len(e) + 1)
        curve = np.interp(RECALL_GRID, tp_recall, cummean)
        out[m] = float(np.mean(curve[first:last + 1]))
    return out


def evaluate(detections: list[Box], ground_truth: list[Box], classes: tuple[str, ...]) -> dict:
    """Metrics over a set of frames. Returns a JSON-ready dict with keys mAP, NDS, per_class
    (per class: AP, AP@<thr>, ATE, ASE, AOE, AVE, num_gt) and mean TP errors (mATE ...)."""
    per_class: dict[str, ClassResult] = {}
    for cls in classes:
        dets = [d for d in detections if d.cls == cls]
        gts = [g for g in ground_truth if g.cls == cls]
        r = ClassResult(num_gt=len(gts))
        for thr in DIST_THRESHOLDS:
            ap, rec, prec = average_precision(match(dets, gts, thr), len(gts))
            r.ap[thr] = ap
            r.pr_curves[thr] = (rec, prec)
        r.tp_errors = tp_errors(match(dets, gts, TP_THRESHOLD), len(gts), cls)
        per_class[cls] = r
    scored = [c for c in classes if per_class[c].num_gt > 0]
    m_ap = float(np.mean([per_class[c].mean_ap for c in scored])) if scored else 0.0
    mean_err = {}
    for m in TP_METRICS:
        vals = [per_class[c].tp_errors[m] for c in scored if not np.isnan(per_class[c].tp_errors[m])]
        mean_err[m] = float(np.mean(vals)) if vals else 1.0
    nds = (5 * m_ap + sum(1 - min(1.0, e) for e in mean_err.values())) / 10
    return {
        "mAP": m_ap,
        "NDS": float(nds),
        **{f"m{m}": v for m, v in mean_err.items()},
        "per_class": {c: {"AP": r.mean_ap, **{f"AP@{t}": v for t, v in r.ap.items()},
                          **{m: (None if np.isnan(v) else v) for m, v in r.tp_errors.items()},
                          "num_gt": r.num_gt} for c, r in per_class.items()},
        "_curves": {c: r.pr_curves for c, r in per_class.items()},   # for plots; dropped from JSON
    }


RANGE_BANDS = ((0.0, 10.0), (10.0, 20.0), (20.0, 30.0), (30.0, float("inf")))


def evaluate_by_range(detections: list[Box], ground_truth: list[Box], classes: tuple[str, ...],
                      bands=RANGE_BANDS) -> list[dict]:
    """`evaluate` within bands of ground-plane distance from the ego origin. Detections and
    ground truth are both cut at the band edges, as nuScenes cuts both at its class ranges, so a
    box near an edge can match on neither side: the bands show where the score comes from,
    they do not add up to it. Returns per band: lo, hi (null = no limit), mAP, per-class AP and
    num_gt; mAP averages only the classes with ground truth in the band."""
    def dist(b: Box) -> float:
        return float(np.hypot(b.center[0], b.center[1]))

    out = []
    for lo, hi in bands:
        m = evaluate([d for d in detections if lo <= dist(d) < hi],
                     [g for g in ground_truth if lo <= dist(g) < hi], classes)
        out.append({"lo": lo, "hi": None if np.isinf(hi) else hi, "mAP": m["mAP"],
                    "AP": {c: r["AP"] for c, r in m["per_class"].items()},
                    "num_gt": {c: r["num_gt"] for c, r in m["per_class"].items()}})
    return out
