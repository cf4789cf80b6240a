"""nuScenes-style metrics against hand-worked cases."""
import numpy as np
import pytest

from perception.metrics import Box, aligned_iou, average_precision, evaluate, evaluate_by_range, match, yaw_error

CLASSES = ("car", "pedestrian")


def box(frame, x, y, cls="car", score=1.0, size=(4.5, 1.9, 1.6), yaw=0.0, v=(0.0, 0.0)):
    return Box(frame, cls, np.array([x, y, 0.8]), np.array(size, float), yaw, np.array(v, float), score)


def scene():
    return [box(0, 10, 0), box(0, -8, 5), box(1, 20, -3), box(1, 3, 12, "pedestrian", size=(0.7, 0.7, 1.75))]


def test_perfect_predictions_give_ap_one_and_zero_errors():
    gt = scene()
    r = evaluate([Box(**{**g.__dict__, "score": 0.9}) for g in gt], gt, CLASSES)
    assert r["mAP"] == pytest.approx(1.0)
    for c in CLASSES:
        assert r["per_class"][c]["AP"] == pytest.approx(1.0)
        assert r["per_class"][c]["ATE"] == pytest.approx(0.0, abs=1e-9)
        assert r["per_class"][c]["ASE"] == pytest.approx(0.0, abs=1e-9)
    # No attribute error (AAE) exists here, so a perfect detector scores (5 + 4) / 10.
    assert r["NDS"] == pytest.approx(0.9)


def test_shifted_box_misses_at_half_metre_but_hits_at_two():
    gt = [box(0, 10, 0)]
    det = [box(0, 10.8, 0, score=0.7)]                      # 0.8 m off
    r = evaluate(det, gt, ("car",))["per_class"]["car"]
    assert r["AP@0.5"] == 0.0
    assert r["AP@1.0"] == pytest.approx(1.0) and r["AP@2.0"] == pytest.approx(1.0)
    assert r["AP"] == pytest.approx(0.75)
    assert r["ATE"] == pytest.approx(0.8)


def test_score_order_matters():
    gt = [box(0, 0, 10), box(0, 0, 20)]
    good_first = [box(0, 0, 10, score=0.9), box(0, 0, 20, score=0.8), box(0, 30, 30, score=0.1)]
    bad_first = [box(0, 0, 10, score=0.5), box(0, 0, 20, score=0.4), box(0, 30, 30, score=0.9)]
    ap_good = evaluate(good_first, gt, ("car",))["mAP"]
    ap_bad = evaluate(bad_first, gt, ("car",))["mAP"]
    # The trailing low-score FP only touches the last recall point (devkit interpolation).
    assert ap_good > 0.99 and ap_bad < 0.9


def test_hand_worked_ap_with_one_false_positive_in_the_middle():
    # Scores: TP, FP, TP over 2 GT -> precision (1, .5, .667) at recall (.5, .5, 1).
    gt = [box(0, 0, 10), box(0, 0, 20)]
    det = [box(0, 0, 10, score=0.9), box(0, 30, 30, score=0.8), box(0, 0, 20, score=0.7)]
    ap, rec, prec = average_precision(match(det, gt, 2.0), 2)
    np.testing.assert_allclose(prec, [1, 0.5, 2 / 3])
    np.testing.assert_allclose(rec, [0.5, 0.5, 1.0])
    # Interpolated precision on recall 0.11..1.0: 1.0 up to 0.5, then linear 0.5 -> 0.667 (devkit).
    grid = np.linspace(0, 1, 101)
    p = np.interp(grid, rec, prec, right=0)[11:] - 0.1
    assert ap == pytest.approx(np.mean(np.clip(p, 0, None)) / 0.9)


def test_missing_class_detections_give_zero_ap_and_worst_errors():
    r = evaluate([], scene(), CLASSES)
    assert r["mAP"] == 0.0 and r["per_class"]["car"]["ATE"] == 1.0 and r["NDS"] == 0.0


def test_detection_in_another_frame_does_not_match():
    r = evaluate([box(1, 10, 0, score=0.9)], [box(0, 10, 0)], ("car",))
    assert r["mAP"] == 0.0


def test_tp_error_helpers():
    assert yaw_error(np.pi - 0.1, -np.pi + 0.1) == pytest.approx(0.2)
    assert aligned_iou(np.array([2, 2, 2.0]), np.array([2, 2, 2.0])) == pytest.approx(1.0)
    assert aligned_iou(np.array([2, 2, 2.0]), np.array([1, 2, 2.0])) == pytest.approx(0.5)


def test_traffic_cone_has_no_orientation_or_velocity_error():
    gt = [box(0, 5, 5, "traffic_cone", size=(0.4, 0.4, 0.7))]
    r = evaluate([box(0, 5, 5, "traffic_cone", size=(0.4, 0.4, 0.7), yaw=2.0, score=0.5)], gt, ("traffic_cone",))
    assert r["per_class"]["traffic_cone"]["AOE"] is None and r["per_class"]["traffic_cone"]["AVE"] is None


def test_range_bands_score_near_and_far_separately():
    # scene(): cars at 10.0 m, 9.4 m and 20.2 m, a pedestrian at 12.4 m. Find the two near cars
    # and the pedestrian exactly, put the far car's detection 3 m off: only the 20-30 m band,
    # where that car lies, loses AP.
    gt = scene()
    dets = [Box(**{**g.__dict__, "score": 0.9}) for g in gt[:2] + gt[3:]] + [box(1, 23, -3, score=0.8)]
    bands = evaluate_by_range(dets, gt, CLASSES)
    by_lo = {b["lo"]: b for b in bands}
    assert [b["hi"] for b in bands] == [10.0, 20.0, 30.0, 40.0, None]
    assert by_lo[0.0]["num_gt"] == {"car": 1, "pedestrian": 0}               # the car at 9.4 m
    assert by_lo[0.0]["mAP"] == pytest.approx(1.0)                           # classes without truth do not count
    assert by_lo[10.0]["num_gt"] == {"car": 1, "pedestrian": 1}
    assert by_lo[10.0]["mAP"] == pytest.approx(1.0)
    # 3 m off: a miss at 0.5, 1 and 2 m, a hit at 4 m
    assert by_lo[20.0]["AP"]["car"] == pytest.approx(0.25)
    assert sum(sum(b["num_gt"].values()) for b in bands) == len(gt)
