"""Score the same random boxes with perception.metrics and with the nuScenes devkit's own
accumulate/calc_ap/calc_tp/DetectionMetrics (distance filter as filter_eval_boxes does it) and
print the largest difference. Scores are rounded to 0.05 so ties are common.

    pip install --no-deps --target /tmp/nusc nuscenes-devkit pyquaternion
    PYTHONPATH=.:/tmp/nusc python scripts/devkit_crosscheck.py [TRIALS]

The devkit is not a dependency; this is a check, not a test.
"""
from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np

# Import nuscenes.eval without nuscenes/__init__ (which needs the dataset's dependencies).
_spec = importlib.util.find_spec("nuscenes")
if _spec is None or not _spec.submodule_search_locations:
    sys.exit("nuscenes-devkit not found on PYTHONPATH (see the docstring)")
_pkg = types.ModuleType("nuscenes")
_pkg.__path__ = list(_spec.submodule_search_locations)
sys.modules["nuscenes"] = _pkg

from nuscenes.eval.common.data_classes import EvalBoxes  # noqa: E402
from nuscenes.eval.common.utils import center_distance  # noqa: E402
from nuscenes.eval.detection.algo import accumulate, calc_ap, calc_tp  # noqa: E402
from nuscenes.eval.detection.constants import DETECTION_NAMES  # noqa: E402
from nuscenes.eval.detection.data_classes import DetectionBox, DetectionConfig, DetectionMetrics  # noqa: E402

from perception.metrics import CLASS_RANGE, Box, evaluate  # noqa: E402

OURS = ("car", "truck", "pedestrian", "cyclist", "traffic_cone")
DEVKIT = {"car": "car", "truck": "truck", "pedestrian": "pedestrian", "cyclist": "bicycle", "traffic_cone": "traffic_cone"}
TP = {"trans_err": "ATE", "scale_err": "ASE", "orient_err": "AOE", "vel_err": "AVE"}


def random_boxes(rng, frames: int, n: int, det: bool, classes) -> list[Box]:
    out = []
    for _ in range(n):
        r, a = rng.uniform(0, 60), rng.uniform(-np.pi, np.pi)
        out.append(Box(int(rng.integers(frames)), classes[int(rng.integers(len(classes)))],
                       np.array([r * np.cos(a), r * np.sin(a), 0.8]), rng.uniform(0.5, 5, 3), float(rng.uniform(-np.pi, np.pi)),
                       rng.normal(size=2) * 3, float(np.round(rng.uniform(0.05, 1) / 0.05) * 0.05) if det else 1.0))
    return out


def near(gts: list[Box], rng, sigma: float) -> list[Box]:
    """Detections scattered around the truth, so that there are matches at every threshold."""
    return [Box(g.frame, g.cls, g.center + np.r_[rng.normal(size=2) * sigma, 0], g.size * rng.uniform(0.8, 1.2, 3),
                g.yaw + float(rng.normal()), g.velocity + rng.normal(size=2), float(np.round(rng.uniform(0.05, 1) / 0.05) * 0.05))
            for g in gts if rng.uniform() < 0.7]


def to_devkit(boxes: list[Box], det: bool) -> EvalBoxes:
    eb = EvalBoxes()
    by_frame: dict[str, list] = {}
    for b in boxes:
        q = (np.cos(b.yaw / 2), 0.0, 0.0, np.sin(b.yaw / 2))
        by_frame.setdefault(str(b.frame), []).append(DetectionBox(
            sample_token=str(b.frame), translation=tuple(map(float, b.center)), size=tuple(map(float, b.size)), rotation=q,
            velocity=tuple(map(float, b.velocity)), ego_translation=tuple(map(float, b.center)), num_pts=-1 if det else 1,
            detection_name=DEVKIT[b.cls], detection_score=float(b.score) if det else -1.0))
    for token in sorted(by_frame, key=int):
        eb.add_boxes(token, by_frame[token])
    return eb


def devkit_metrics(dets: list[Box], gts: list[Box], classes) -> dict:
    names = [DEVKIT[c] for c in classes]
    cfg = DetectionConfig({n: CLASS_RANGE[n] for n in DETECTION_NAMES}, "center_distance", [0.5, 1.0, 2.0, 4.0], 2.0,
                          0.1, 0.1, 500, 5)
    cfg.class_names = names
    gt_eb, det_eb = to_devkit(gts, False), to_devkit(dets, True)
    for eb in (gt_eb, det_eb):      # filter_eval_boxes' distance step (points and bike racks do not apply)
        for token in eb.sample_tokens:
            eb.boxes[token] = [b for b in eb[token] if b.ego_dist < cfg.class_range[b.detection_name]]
    for token in set(gt_eb.sample_tokens) - set(det_eb.sample_tokens):
        det_eb.add_boxes(token, [])
    for token in set(det_eb.sample_tokens) - set(gt_eb.sample_tokens):
        gt_eb.add_boxes(token, [])
    m = DetectionMetrics(cfg)
    for n in names:
        for th in cfg.dist_ths:
            md = accumulate(gt_eb, det_eb, n, center_distance, th)
            m.add_label_ap(n, th, calc_ap(md, cfg.min_recall, cfg.min_precision))
        md = accumulate(gt_eb, det_eb, n, center_distance, cfg.dist_th_tp)
        for key in TP:
            na = n == "traffic_cone" and key in ("orient_err", "vel_err")
            m.add_label_tp(n, key, np.nan if na else calc_tp(md, cfg.min_recall, key))
    return {"mAP": m.mean_ap, **{f"m{v}": m.tp_errors[k] for k, v in TP.items()},
            **{f"{c} AP": m.mean_dist_aps[n] for c, n in zip(classes, names)},
            **{f"{c} {v}": m.get_label_tp(n, k) for c, n in zip(classes, names) for k, v in TP.items()}}


def main() -> None:
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    worst = 0.0
    for t in range(trials):
        rng = np.random.default_rng(t)
        classes = OURS if t % 3 else OURS[:3] + ("traffic_cone",)
        gts = random_boxes(rng, 6, 60, False, classes[:-2] if t % 4 == 0 else classes)   # some trials: classes without truth
        # In frame order, as `perception eval` lists them: the devkit's "later" is later in that order.
        gts = sorted(gts, key=lambda b: b.frame)
        dets = sorted(near(gts, rng, 1.5) + random_boxes(rng, 6, 40, True, classes), key=lambda b: b.frame)
        ours = evaluate(dets, gts, classes)
        flat = {"mAP": ours["mAP"], **{f"m{v}": ours[f"m{v}"] for v in TP.values()},
                **{f"{c} AP": r["AP"] for c, r in ours["per_class"].items()},
                **{f"{c} {v}": (np.nan if r[v] is None else r[v]) for c, r in ours["per_class"].items() for v in TP.values()}}
        ref = devkit_metrics(dets, gts, classes)
        diff = max(abs(flat[k] - ref[k]) for k in ref if not (np.isnan(ref[k]) and np.isnan(flat[k])))
        worst = max(worst, diff)
        print(f"trial {t}: mAP {flat['mAP']:.6f} devkit {ref['mAP']:.6f}  mATE {flat['mATE']:.6f} devkit {ref['mATE']:.6f}  "
              f"largest difference {diff:.2e}")
    print(f"largest difference over {trials} trials: {worst:.2e}")


if __name__ == "__main__":
    main()
