"""nuScenes detection metrics, in plain numpy, following the devkit (eval/detection/algo.py,
data_classes.py, eval/common/loaders.py) step by step.

- Range: truth and detections farther from the ego origin (ground plane) than their class's
  range (CLASS_RANGE, the devkit's detection config) are dropped before matching; nothing else
  cuts them, so truth the model's grid cannot reach counts as a miss.
- Matching by ground-plane centre distance at 0.5/1/2/4 m, greedily in descending score; among
  equal scores the later detection (higher index in the list) goes first, as the devkit's
  `sorted((score, index))[::-1]` does.
- AP: precision interpolated on a 101-point recall grid, recall and precision above 0.1.
- TP errors at 2 m (ATE, ASE = 1 - aligned IoU, AOE, AVE): the running mean of each error over
  the matches is interpolated on the confidence axis at the confidence of each recall grid point,
  then averaged over the grid points above recall 0.1 up to the highest recall reached (1.0 when
  that is below 0.11).
- Class averaging: over all classes; a class without truth has AP 0 and TP errors 1 (the
  devkit's no-prediction data); N/A errors (cone AOE, AVE) are left out of the TP mean.
- NDS = (5 mAP + sum over TP metrics of (1 - min(1, error))) / 10: no attributes here, so
  nuScenes' AAE is absent and NDS tops out at 0.9.
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
# Evaluation range per class (m, ground-plane distance from the ego origin, strict <): the
# nuScenes detection config, with this project's cyclist at the devkit's bicycle/motorcycle 40 m.
CLASS_RANGE = {"car": 50.0, "truck": 50.0, "bus": 50.0, "trailer": 50.0, "construction_vehicle": 50.0,
               "pedestrian": 40.0, "motorcycle": 40.0, "bicycle": 40.0, "cyclist": 40.0,
               "traffic_cone": 30.0, "barrier": 30.0}


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


def ego_distance(b: Box) -> float:
    return float(np.hypot(b.center[0], b.center[1]))


def class_range(cls: str) -> float:
    try:
        return CLASS_RANGE[cls]
    except KeyError:
        raise ValueError(f"class {cls!r} has no evaluation range (metrics.CLASS_RANGE)") from None


def in_class_range(boxes: list[Box]) -> list[Box]:
    """The boxes nearer the ego than their class's range (the devkit's filter_eval_boxes
    distance step, applied to truth and detections alike)."""
    return [b for b in boxes if ego_distance(b) < class_range(b.cls)]


def score_order(scores) -> np.ndarray:
    """Indices in the devkit's order: descending score, equal scores latest index first."""
    return np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")[::-1]


def match(dets: list[Box], gts: list[Box], threshold: float):
    """Greedy matching in the devkit's order (score_order). Returns per detection (in that
    order) the detection, its matched ground truth or None, and the centre distance."""
    order = score_order([d.score for d in dets])
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


def _precision_recall(tp: np.ndarray, num_gt: int):
    """Recall and precision along `tp` (TP flags of the detections in score order)."""
    tpf = tp.astype(np.float64)
    ctp, cfp = np.cumsum(tpf), np.cumsum(1.0 - tpf)
    prec = ctp / np.maximum(ctp + cfp, 1e-12)
    rec = ctp / max(num_gt, 1)
    return rec, prec


def _tp_flags(matches) -> np.ndarray:
    return np.array([g is not None for _, g, _ in matches], dtype=bool)


def _ap(tp: np.ndarray, num_gt: int) -> tuple[float, np.ndarray, np.ndarray]:
    if num_gt == 0 or not len(tp):
        return 0.0, np.zeros(0), np.zeros(0)
    rec, prec = _precision_recall(tp, num_gt)
    prec_interp = np.interp(RECALL_GRID, rec, prec, right=0.0)
    p = prec_interp[round(100 * MIN_RECALL) + 1:] - MIN_PRECISION
    p[p < 0] = 0.0
    return float(np.mean(p) / (1.0 - MIN_PRECISION)), rec, prec


def average_precision(matches, num_gt: int) -> tuple[float, np.ndarray, np.ndarray]:
    return _ap(_tp_flags(matches), num_gt)


def _tp_errors(tp: np.ndarray, errors: np.ndarray, scores: np.ndarray, num_gt: int, cls: str) -> dict[str, float]:
    """`errors` (n, 4): ATE, ASE, AOE, AVE of each detection in score order (used where `tp`);
    `scores` the detections' scores in that order. The devkit's accumulate() + calc_tp()."""
    na = NOT_APPLICABLE.get(cls, ())
    out = {m: (float("nan") if m in na else 1.0) for m in TP_METRICS}
    if num_gt == 0 or not len(tp) or not tp.any():
        return out                          # the devkit's no_predictions(): errors 1
    rec, _ = _precision_recall(tp, num_gt)
    conf = np.interp(RECALL_GRID, rec, scores, right=0)     # confidence at each recall grid point
    nonzero = np.nonzero(conf)[0]
    last = int(nonzero[-1]) if len(nonzero) else 0           # index of the highest recall reached
    first = round(100 * MIN_RECALL) + 1
    if last < first:
        return out
    tp_conf = scores[tp]
    for k, m in enumerate(TP_METRICS):
        if m in na:
            continue
        e = errors[tp, k]
        cummean = np.cumsum(e) / np.arange(1, len(e) + 1)
        curve = np.interp(conf[::-1], tp_conf[::-1], cummean[::-1])[::-1]
        out[m] = float(np.mean(curve[first:last + 1]))
    return out


def _match_errors(matches) -> np.ndarray:
    """(n, 4) TP errors of `matches` (NaN rows for false positives)."""
    out = np.full((len(matches), len(TP_METRICS)), np.nan)
    for i, (d, g, dist) in enumerate(matches):
        if g is not None:
            out[i] = (dist, 1.0 - aligned_iou(d.size, g.size), yaw_error(d.yaw, g.yaw),
                      float(np.linalg.norm(d.velocity - g.velocity)))
    return out


def tp_errors(matches, num_gt: int, cls: str) -> dict[str, float]:
    """Mean TP errors over the recall range above MIN_RECALL (1.0 = worst when never reached)."""
    scores = np.array([d.score for d, _, _ in matches], dtype=np.float64)
    return _tp_errors(_tp_flags(matches), _match_errors(matches), scores, num_gt, cls)


@dataclass
class ClassMatches:
    """The outcome of matching one class, all that its metrics need: the detections' scores in
    the devkit's order (score_order), their TP flags per distance threshold, their TP errors at
    TP_THRESHOLD (NaN for false positives) and the ground-truth count. Matching is per frame, so
    the matches of separate sets of frames pool exactly (pool_matches)."""
    scores: np.ndarray                      # (n,) float64
    tp: dict[float, np.ndarray]             # threshold -> (n,) bool
    errors: np.ndarray                      # (n, 4) float64
    num_gt: int

    @staticmethod
    def empty() -> "ClassMatches":
        return ClassMatches(np.zeros(0), {t: np.zeros(0, bool) for t in DIST_THRESHOLDS}, np.zeros((0, len(TP_METRICS))), 0)


def class_matches(dets: list[Box], gts: list[Box]) -> ClassMatches:
    """Match one class's detections to its ground truth at every threshold."""
    scores = np.array([dets[i].score for i in score_order([d.score for d in dets])], dtype=np.float64)
    tp = {}
    errors = np.full((len(dets), len(TP_METRICS)), np.nan)
    for thr in DIST_THRESHOLDS:
        m = match(dets, gts, thr)
        tp[thr] = _tp_flags(m)
        if thr == TP_THRESHOLD:
            errors = _match_errors(m)
    return ClassMatches(scores, tp, errors, len(gts))


def pool_matches(parts: list[ClassMatches]) -> ClassMatches:
    """The matches of disjoint sets of frames as one: what class_matches over all their frames
    gives, given the parts in the order their detections would be listed. Equal scores: a later
    part's detections first, each part's own order kept (score_order over the whole list)."""
    if not parts:
        return ClassMatches.empty()
    scores = np.concatenate([p.scores for p in parts])
    part = np.concatenate([np.full(len(p.scores), k) for k, p in enumerate(parts)])
    order = np.lexsort((np.arange(len(scores)), -part, -scores))
    return ClassMatches(scores[order], {t: np.concatenate([p.tp[t] for p in parts])[order] for t in DIST_THRESHOLDS},
                        np.concatenate([p.errors for p in parts])[order], sum(p.num_gt for p in parts))


def all_matches(detections: list[Box], ground_truth: list[Box], classes: tuple[str, ...]) -> dict[str, ClassMatches]:
    """Per class, the matches of the detections and truth inside the class's range."""
    dets = [d for d in detections if d.cls in classes]
    gts = [g for g in ground_truth if g.cls in classes]
    dets, gts = in_class_range(dets), in_class_range(gts)
    return {c: class_matches([d for d in dets if d.cls == c], [g for g in gts if g.cls == c]) for c in classes}


def evaluate_matches(matches: dict[str, ClassMatches], classes: tuple[str, ...]) -> dict:
    """`evaluate` from the matches of each class (class_matches, pool_matches)."""
    per_class: dict[str, ClassResult] = {}
    for cls in classes:
        cm = matches.get(cls) or ClassMatches.empty()
        r = ClassResult(num_gt=cm.num_gt)
        for thr in DIST_THRESHOLDS:
            ap, rec, prec = _ap(cm.tp[thr], cm.num_gt)
            r.ap[thr] = ap
            r.pr_curves[thr] = (rec, prec)
        r.tp_errors = _tp_errors(cm.tp[TP_THRESHOLD], cm.errors, cm.scores, cm.num_gt, cls)
        per_class[cls] = r
    # Every class counts, with or without truth (AP 0, errors 1: the devkit's DetectionMetrics).
    m_ap = float(np.mean([per_class[c].mean_ap for c in classes])) if classes else 0.0
    mean_err = {}
    for m in TP_METRICS:
        vals = [per_class[c].tp_errors[m] for c in classes if not np.isnan(per_class[c].tp_errors[m])]
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


def evaluate(detections: list[Box], ground_truth: list[Box], classes: tuple[str, ...]) -> dict:
    """Metrics over a set of frames (each class cut at its range first). Returns a JSON-ready dict with keys mAP, NDS, per_class
    (per class: AP, AP@<thr>, ATE, ASE, AOE, AVE, num_gt) and mean TP errors (mATE ...)."""
    return evaluate_matches(all_matches(detections, ground_truth, classes), classes)


RANGE_BANDS = ((0.0, 10.0), (10.0, 20.0), (20.0, 30.0), (30.0, 40.0), (40.0, float("inf")))


def evaluate_by_range(detections: list[Box], ground_truth: list[Box], classes: tuple[str, ...],
                      bands=RANGE_BANDS) -> list[dict]:
    """`evaluate` within bands of ground-plane distance from the ego origin (after the class
    range cut). Detections and ground truth are both cut at the band edges, as nuScenes cuts both
    at its class ranges, so a box near an edge can match on neither side: the bands show where
    the score comes from, they do not add up to it. Returns per band: lo, hi (null = no limit),
    mAP, per-class AP and num_gt; unlike the overall mAP, a band's mAP averages only the classes
    with ground truth in the band (a diagnostic: cones end at 30 m)."""
    out = []
    for lo, hi in bands:
        m = evaluate([d for d in detections if lo <= ego_distance(d) < hi],
                     [g for g in ground_truth if lo <= ego_distance(g) < hi], classes)
        scored = [c for c in classes if m["per_class"][c]["num_gt"] > 0]
        band_map = float(np.mean([m["per_class"][c]["AP"] for c in scored])) if scored else 0.0
        out.append({"lo": lo, "hi": None if np.isinf(hi) else hi, "mAP": band_map,
                    "AP": {c: r["AP"] for c, r in m["per_class"].items()},
                    "num_gt": {c: r["num_gt"] for c, r in m["per_class"].items()}})
    return out
