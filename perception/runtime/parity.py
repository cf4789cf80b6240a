"""Comparing two backends' outputs for the same inputs (tests, bench, scripts/gpu_check.py).

Tolerances (docs/engines.md): FP32 backends must agree within 1e-4 absolute on the heatmap and
give the same detections above a score of 0.05 (same labels, centres within 1e-3 m). Reduced
precision (bf16 / fp16) is compared with the same function and its differences are reported,
not asserted, until they have been measured on the target.
"""
from __future__ import annotations

import numpy as np

FP32_HEATMAP_ATOL = 1e-4
SCORE_MIN = 0.05
CENTRE_TOL_M = 1e-3


def _detections(out: dict, batch_index: int, score_min: float):
    s = np.asarray(out["det_scores"][batch_index], dtype=np.float64)
    keep = s > score_min
    return (np.asarray(out["det_labels"][batch_index])[keep], np.asarray(out["det_boxes"][batch_index])[keep, :2],
            s[keep])


def compare_outputs(ref: dict, got: dict, *, batch_index: int = 0, score_min: float = SCORE_MIN,
                    centre_tol: float = CENTRE_TOL_M, score_tol: float = FP32_HEATMAP_ATOL) -> dict:
    """Max abs differences of heatmap/regression and a detection-level comparison.

    Detections whose score lies within score_tol of the threshold, or of the lowest score kept in a
    full (truncated) top-K list, may legitimately appear in one output and not the other; they are
    counted as `borderline`, not as mismatches. `same_detections` is True when every other
    detection of each output has a partner in the other with the same label and a centre within
    centre_tol metres."""
    res = {
        "heatmap_max_abs_diff": float(np.max(np.abs(np.asarray(ref["heatmap"], np.float64) - got["heatmap"]))),
        "regression_max_abs_diff": float(np.max(np.abs(np.asarray(ref["regression"], np.float64) - got["regression"]))),
    }
    k = np.asarray(ref["det_scores"]).shape[-1]
    a_lab, a_xy, a_s = _detections(ref, batch_index, score_min)
    b_lab, b_xy, b_s = _detections(got, batch_index, score_min)
    floor = score_min
    for s in (a_s, b_s):
        if len(s) == k:                       # list is full: the K-th score is a cut-off too
            floor = max(floor, float(s.min()))

    def unmatched(lab, xy, s, olab, oxy):
        bad, border, worst = 0, 0, 0.0
        for i in range(len(s)):
            same = olab == lab[i]
            d = np.linalg.norm(oxy[same] - xy[i], axis=1) if same.any() else np.array([np.inf])
            dmin = float(d.min())
            if dmin <= centre_tol:
                worst = max(worst, dmin)
            elif s[i] <= floor + score_tol:
                border += 1
            else:
                bad += 1
        return bad, border, worst

    bad_a, border_a, worst_a = unmatched(a_lab, a_xy, a_s, b_lab, b_xy)
    bad_b, border_b, worst_b = unmatched(b_lab, b_xy, b_s, a_lab, a_xy)
    res.update({"detections_ref": int(len(a_s)), "detections_got": int(len(b_s)),
                "unmatched_ref": bad_a, "unmatched_got": bad_b, "borderline": border_a + border_b,
                "max_centre_diff_m": max(worst_a, worst_b), "score_min": score_min,
                "same_detections": bad_a == 0 and bad_b == 0})
    return res
