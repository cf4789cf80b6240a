"""nuScenes scoring, hand-worked: class ranges, the devkit's tie order, TP errors interpolated over
confidence, class averaging (perception/metrics.py, README "Metrics")."""
import numpy as np
import pytest

from perception.metrics import Box, ClassMatches, all_matches, evaluate, evaluate_matches, in_class_range, match, pool_matches, score_order

GRID = np.linspace(0, 1, 101)


def box(frame, x, y, cls="car", score=1.0, size=(4.5, 1.9, 1.6)):
    return Box(frame, cls, np.array([x, y, 0.8]), np.array(size, float), 0.0, np.zeros(2), score)


def test_class_range_cuts_truth_and_detections_strictly():
    gts = [box(0, 30, 39.9), box(0, 40, 30),                    # car at 49.92 m (in), at exactly 50 m (out)
           box(0, 45, 0, "pedestrian"),                          # 45 m > 40 m
           box(0, 29, 0, "traffic_cone"), box(0, 31, 0, "traffic_cone")]
    dets = [box(0, 30, 39.9, score=0.9), box(0, 40, 30, score=0.95),   # the second would match the 50 m car
            box(0, 0, 60, score=0.99),                                 # an FP at 60 m: dropped, not counted
            box(0, 29, 0, "traffic_cone", score=0.8)]
    assert len(in_class_range(gts)) == 2
    r = evaluate(dets, gts, ("car", "pedestrian", "traffic_cone"))["per_class"]
    assert (r["car"]["num_gt"], r["pedestrian"]["num_gt"], r["traffic_cone"]["num_gt"]) == (1, 0, 1)
    assert r["car"]["AP"] == pytest.approx(1.0) and r["traffic_cone"]["AP"] == pytest.approx(1.0)


def test_truth_beyond_the_model_grid_but_in_range_is_a_miss():
    # The car at 45 m lies outside the model's +-32 m grid, inside the 50 m car range: recall stops at
    # 0.5 with precision 1, so 40 of the 90 grid points above recall 0.1 score 1 - 0.1.
    r = evaluate([box(0, 10, 0, score=0.9)], [box(0, 10, 0), box(0, 45, 0)], ("car",))["per_class"]["car"]
    assert r["num_gt"] == 2
    assert r["AP"] == pytest.approx(40 * 0.9 / 90 / 0.9)


def test_equal_scores_rank_the_later_detection_first():
    gt = [box(0, 10, 0)]
    exact, far = box(0, 10, 0, score=0.5), box(0, 30, 30, score=0.5)
    assert list(score_order([0.5, 0.9, 0.5, 0.1])) == [1, 2, 0, 3]
    assert [d is far for d, _, _ in match([exact, far], gt, 2.0)] == [True, False]
    # far (FP) first, then exact (TP): precision (0, 0.5) at recall (0, 1), so p(r) = r / 2 and
    # AP = mean over r = 0.11..1 of max(0, r/2 - 0.1) / 0.9 = (sum over k = 20..100 of k/200 - 0.1) / 90 / 0.9 = 0.2.
    assert evaluate([exact, far], gt, ("car",))["mAP"] == pytest.approx(0.2)
    # exact listed later, ranked first: precision (1, 0.5) both at recall 1; np.interp takes the
    # last point of a repeated recall, so only the grid point r = 1 drops to 0.5.
    assert evaluate([far, exact], gt, ("car",))["mAP"] == pytest.approx((89 * 0.9 + 0.4) / 90 / 0.9)


def test_pooled_ties_keep_the_order_of_one_list():
    gts = [box(0, 10, 0)]
    a, b = box(0, 10, 0, score=0.5), box(1, 10, 0, score=0.5)    # b: a frame without truth, an FP
    whole = evaluate([a, b], gts, ("car",))
    pooled = evaluate_matches({"car": pool_matches([all_matches([a], gts, ("car",))["car"],
                                                    all_matches([b], [], ("car",))["car"]])}, ("car",))
    assert whole["mAP"] == pytest.approx(0.2) and pooled["mAP"] == whole["mAP"]


def test_tp_errors_are_interpolated_over_confidence():
    # TP (0.9, 0.2 m off), FP (0.8), TP (0.5, 1.0 m off) on 2 cars: recall (.5, .5, 1).
    # Confidence on the recall grid: 0.9 below r = 0.5, 0.8 at 0.5, 1.1 - 0.6 r above. The running
    # mean ATE (0.2, 0.6) at confidences (0.9, 0.5) interpolates to 1.1 - c, so ATE(r) = 0.2 for
    # r < 0.5, 0.3 at 0.5 and 0.6 r above: (39 * 0.2 + 0.3 + 0.6 * 37.75) / 90.
    gts = [box(0, 10, 0), box(0, 0, 20)]
    dets = [box(0, 10.2, 0, score=0.9), box(0, 30, 30, score=0.8), box(0, 0, 21, score=0.5)]
    r = evaluate(dets, gts, ("car",))["per_class"]["car"]
    assert r["ATE"] == pytest.approx((39 * 0.2 + 0.3 + 0.6 * 37.75) / 90)
    # Interpolating over recall instead (the FP's point ignored) would give (40 * 0.2 + 20.2) / 90.
    assert r["ATE"] != pytest.approx((40 * 0.2 + 20.2) / 90)


def test_tp_errors_are_worst_when_recall_never_passes_the_minimum():
    gts = [box(0, 5 * k, 3) for k in range(10)]
    r = evaluate([box(0, 0, 3.1, score=0.9)], gts, ("car",))["per_class"]["car"]     # recall 0.1 at most
    assert r["ATE"] == 1.0 and r["ASE"] == 1.0


def test_a_class_without_truth_counts_as_zero_ap_and_worst_errors():
    gt = [box(0, 10, 0)]
    perfect = [box(0, 10, 0, score=0.9)]
    r = evaluate(perfect, gt, ("car", "pedestrian"))
    assert r["per_class"]["pedestrian"]["AP"] == 0.0 and r["per_class"]["pedestrian"]["ATE"] == 1.0
    assert r["mAP"] == pytest.approx(0.5) and r["mATE"] == pytest.approx(0.5)
    assert r["NDS"] == pytest.approx((5 * 0.5 + 4 * 0.5) / 10)
    # A cone's AOE and AVE are N/A even without truth: those means hold the car alone.
    r = evaluate(perfect, gt, ("car", "traffic_cone"))
    assert r["mATE"] == pytest.approx(0.5) and r["mAOE"] == pytest.approx(0.0) and r["mAVE"] == pytest.approx(0.0)
    assert r["NDS"] == pytest.approx((5 * 0.5 + 0.5 + 0.5 + 1 + 1) / 10)


def test_empty_matches_pool_to_nothing():
    assert pool_matches([]).num_gt == 0 and len(pool_matches([ClassMatches.empty()]).scores) == 0


def test_eval_truth_is_not_cut_by_the_model_grid():
    from perception.config import load_rig
    from perception.dataset import TEST_SEED_BASE, RigRandomization, boxes_to_array, render_sample_visible
    from perception.model.config import ModelConfig

    cfg = ModelConfig()
    *_, boxes = render_sample_visible(TEST_SEED_BASE + 1, load_rig(), cfg, RigRandomization.none())
    grid = boxes_to_array(boxes, cfg)
    inside = [b for b in boxes if cfg.bev_x_range[0] <= b.center[0] < cfg.bev_x_range[1]
              and cfg.bev_y_range[0] <= b.center[1] < cfg.bev_y_range[1]]
    assert int((grid[:, 0] >= 0).sum()) == min(len(inside), len(grid)) and len(boxes) >= len(inside)
