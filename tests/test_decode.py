"""CenterPoint targets and the in-graph decode: encode known boxes, decode them back."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from perception.model import ModelConfig, bev_cell_centers, decode, encode_targets
from perception.model.decode import _class_index

BOXES = [  # (cls, centre, size, yaw, velocity)
    ("car", (12.3, -4.1, 0.8), (4.5, 1.9, 1.6), 0.3, (5.0, -0.5)),
    ("truck", (-20.7, 15.2, 1.6), (8.0, 2.5, 3.2), -2.8, (0.0, 0.0)),
    ("pedestrian", (3.05, 7.77, 0.9), (0.6, 0.6, 1.75), 1.57, (1.2, 0.3)),
    (3, (-5.5, -25.0, 0.85), (1.8, 0.6, 1.7), math.pi - 0.01, (-3.0, 2.0)),   # cyclist by index
    ("traffic_cone", (30.9, 30.9, 0.3), (0.4, 0.4, 0.6), 0.0, (0.0, 0.0)),
]


def test_bev_cell_centers_orientation():
    cfg = ModelConfig()
    c = bev_cell_centers(cfg)
    n = cfg.bev_cells
    assert c.shape == (n, n, 2)
    step = cfg.cell_size[0]
    assert c[0, 0].tolist() == pytest.approx([-32 + step / 2, -32 + step / 2])
    assert (c[1:, :, 0] > c[:-1, :, 0]).all() and (c[:, 1:, 0] == c[:, :-1, 0]).all()   # rows: x
    assert (c[:, 1:, 1] > c[:, :-1, 1]).all() and (c[1:, :, 1] == c[:-1, :, 1]).all()   # cols: y


def test_encode_targets_shapes_and_peaks():
    cfg = ModelConfig()
    heat, reg, mask = encode_targets(BOXES, cfg)
    n = cfg.bev_cells
    assert heat.shape == (cfg.num_classes, n, n) and reg.shape == (10, n, n) and mask.shape == (n, n)
    assert heat.dtype == np.float32
    assert mask.sum() == len(BOXES)
    assert heat.max() == 1.0 and heat.min() >= 0.0
    assert (heat == 1.0).sum() == len(BOXES)
    # a Gaussian, not a point: neighbours of the car's peak are positive and below 1
    i, j = np.argwhere(heat[0] == 1.0)[0]
    assert 0 < heat[0, i + 1, j] < 1
    # offsets within half a cell
    assert (np.abs(reg[:2][:, mask > 0]) <= 0.5).all()


def test_subcell_targets_tell_decode_where_in_the_cell_the_centre_is():
    cfg = ModelConfig()
    centred, _, mask = encode_targets(BOXES, cfg)
    subcell, _, mask_s = encode_targets(BOXES, cfg, subcell=True)
    # same positives (the centre cells), different neighbours
    assert ((centred == 1.0) == (subcell == 1.0)).all() and (mask == mask_s).all()
    assert not np.allclose(centred, subcell)
    # decoding the targets themselves: the centred Gaussians place every box at its cell's
    # centre, the sub-cell ones move it towards the true centre
    centred_err, inner = _decoded_centre_errors(centred, cfg)
    subcell_err, _ = _decoded_centre_errors(subcell, cfg)
    moved = (centred_err > 0.2 * cfg.cell_size[0]) & inner          # well away from their cell's centre
    assert moved.sum() >= 2
    assert (subcell_err[moved] < centred_err[moved]).all()


def _decoded_centre_errors(heat, cfg):
    """Decode a target heatmap (zero regression): per detection, the distance from its box's
    true centre, and whether that centre's cell is off the grid edge (edges: no sub-cell fit)."""
    reg = torch.zeros(1, 10, cfg.bev_cells, cfg.bev_cells)
    boxes, _, labels = decode(torch.from_numpy(heat)[None], reg, cfg, k=len(BOXES))
    errors, inner = [], []
    for got, label in zip(boxes[0].numpy(), labels[0].tolist()):
        truth = np.asarray(next(b[1][:2] for b in BOXES if _class_index(b[0], cfg) == label))
        errors.append(np.linalg.norm(got[:2] - truth))
        cell = np.floor((truth - cfg.bev_x_range[0]) / cfg.cell_size[0])
        inner.append(bool((cell > 0).all() and (cell < cfg.bev_cells - 1).all()))
    return np.array(errors), np.array(inner)


def test_boxes_outside_the_grid_are_skipped():
    cfg = ModelConfig()
    heat, reg, mask = encode_targets([("car", (40.0, 0.0, 0.8), (4, 2, 1.5), 0.0, (0, 0))], cfg)
    assert mask.sum() == 0 and heat.max() == 0


def test_decode_recovers_encoded_boxes():
    cfg = ModelConfig()
    heat, reg, _ = encode_targets(BOXES, cfg)
    heat_t = torch.from_numpy(heat)[None]
    # make scores distinct so the order is checkable: scale each class's map
    scale = torch.tensor([1.0, 0.9, 0.8, 0.7, 0.6]).reshape(1, -1, 1, 1)
    boxes, scores, labels = decode(heat_t * scale, torch.from_numpy(reg)[None], cfg, k=20)
    assert boxes.shape == (1, 20, 9) and scores.shape == (1, 20) and labels.dtype == torch.int64
    assert (scores[0, :-1] >= scores[0, 1:]).all()
    n = len(BOXES)
    assert scores[0, n - 1] > 0.5 and scores[0, n] < 0.5
    classes = [cfg.classes.index(b[0]) if isinstance(b[0], str) else b[0] for b in BOXES]
    expected_order = sorted(range(n), key=lambda i: -scale[0, classes[i], 0, 0].item())
    for rank, i in enumerate(expected_order):
        cls, centre, size, yaw, vel = BOXES[i]
        got = boxes[0, rank].numpy()
        assert labels[0, rank].item() == classes[i]
        # the targets' Gaussians are symmetric about the centre cell, so the heatmap places the
        # box at that cell's centre (the regressed offset is not used: test below)
        cell = np.floor((np.asarray(centre[:2]) - cfg.bev_x_range[0]) / cfg.cell_size[0]) + 0.5
        np.testing.assert_allclose(got[:2], cfg.bev_x_range[0] + cell * cfg.cell_size[0], atol=1e-4)
        np.testing.assert_allclose(got[2], centre[2], atol=1e-3)
        np.testing.assert_allclose(got[3:6], size, rtol=1e-5)
        assert abs((got[6] - yaw + math.pi) % (2 * math.pi) - math.pi) < 1e-5
        np.testing.assert_allclose(got[7:9], vel, atol=1e-5)


def test_decode_places_the_centre_at_the_heatmap_peak_inside_the_cell():
    cfg = ModelConfig()
    n = cfg.bev_cells
    i0, j0, ox, oy = 20, 7, 0.3, -0.2                         # true centre: cell (20, 7) + (0.3, -0.2)
    ii, jj = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    logit = 3.0 - 0.8 * ((ii - i0 - ox) ** 2 + (jj - j0 - oy) ** 2)   # a parabola in logit space
    heat = torch.zeros(1, cfg.num_classes, n, n)
    heat[0, 2] = torch.sigmoid(logit)
    boxes, scores, labels = decode(heat, torch.zeros(1, 10, n, n), cfg, k=5)
    assert labels[0, 0] == 2
    cx, cy = cfg.cell_size
    assert boxes[0, 0, 0].item() == pytest.approx(cfg.bev_x_range[0] + (i0 + 0.5 + ox) * cx, abs=1e-3)
    assert boxes[0, 0, 1].item() == pytest.approx(cfg.bev_y_range[0] + (j0 + 0.5 + oy) * cy, abs=1e-3)
    # a lone peak (flat neighbours) or one at the grid edge stays inside its cell
    edge = torch.zeros(1, cfg.num_classes, n, n)
    edge[0, 0, 0, n - 1] = 0.9
    b, _, _ = decode(edge, torch.zeros(1, 10, n, n), cfg, k=1)
    assert abs(b[0, 0, 0].item() - (cfg.bev_x_range[0] + 0.5 * cx)) <= 0.5 * cx + 1e-6
    assert abs(b[0, 0, 1].item() - (cfg.bev_y_range[0] + (n - 0.5) * cy)) <= 0.5 * cy + 1e-6


def test_decode_suppresses_non_peaks():
    cfg = ModelConfig()
    heat = torch.zeros(1, cfg.num_classes, cfg.bev_cells, cfg.bev_cells)
    heat[0, 0, 10, 10] = 0.9
    heat[0, 0, 10, 11] = 0.8          # neighbour of a stronger peak: suppressed
    heat[0, 0, 20, 20] = 0.7
    boxes, scores, labels = decode(heat, torch.zeros(1, 10, cfg.bev_cells, cfg.bev_cells), cfg, k=3)
    assert scores[0].tolist() == pytest.approx([0.9, 0.7, 0.0])
    c = bev_cell_centers(cfg)
    # the strong neighbour at (10, 11) pulls the centre toward it, never out of the cell
    np.testing.assert_allclose(boxes[0, 0, 0].item(), c[10, 10, 0].item(), atol=1e-5)
    assert c[10, 10, 1] < boxes[0, 0, 1] <= c[10, 10, 1] + 0.5 * cfg.cell_size[1] + 1e-5
    np.testing.assert_allclose(boxes[0, 0, 3:6].numpy(), [1.0, 1.0, 1.0])   # exp(0)
