"""BEV grid geometry, CenterPoint target encoding and in-graph decoding.

BEV orientation (used by every output of the model):
    heatmap[b, c, i, j] / regression[b, :, i, j] describe the cell whose centre is
        x = x_min + (i + 0.5) * cell_x      (row index i  <-> ego x, forward, increasing with i)
        y = y_min + (j + 0.5) * cell_y      (column index j <-> ego y, left, increasing with j)
    i.e. bev_cell_centers(cfg)[i, j] = (x_i, y_j). To draw it with forward up and left to the
    left, flip both axes: image = heatmap[..., ::-1, ::-1].

Regression channels (REGRESSION_CHANNELS): dx, dy = offset of the box centre from the cell
centre in cells (target in [-0.5, 0.5); trained, but decode places the centre with the heatmap
peak's sub-cell vertex instead, which measured better: peak_offsets); z = centre height in
metres; log l, log w, log h (metres); sin yaw, cos yaw; vx, vy in m/s - all in the ego frame.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from perception.model.config import ModelConfig

REGRESSION_CHANNELS = ("dx", "dy", "z", "log_l", "log_w", "log_h", "sin_yaw", "cos_yaw", "vx", "vy")
BOX_FIELDS = ("x", "y", "z", "l", "w", "h", "yaw", "vx", "vy")
LOG_SIZE_CLAMP = (-6.0, 6.0)   # keeps exp() finite for any network output


def bev_cell_centers(cfg: ModelConfig) -> Tensor:
    """[Hb, Wb, 2] float32 cell centres (x, y) in the ego frame: [i, j] = (x_i, y_j), the
    first axis (rows) runs along x, the second (columns) along y, both increasing."""
    cx, cy = cfg.cell_size
    x = cfg.bev_x_range[0] + (torch.arange(cfg.bev_cells, dtype=torch.float64) + 0.5) * cx
    y = cfg.bev_y_range[0] + (torch.arange(cfg.bev_cells, dtype=torch.float64) + 0.5) * cy
    xx, yy = torch.meshgrid(x, y, indexing="ij")
    return torch.stack([xx, yy], dim=-1).to(torch.float32)


def peak_offsets(heatmap: Tensor, labels: Tensor, row: Tensor, col: Tensor) -> tuple[Tensor, Tensor]:
    """Sub-cell position of each peak from the heatmap itself: the vertex of the parabola
    through the peak's logit and its two neighbours, per axis (clamped to half a cell).

    heatmap [B, C, Hb, Wb] probabilities; labels, row, col [B, k] int64 -> (dx, dy) [B, k] in
    cells. Measured better than the regressed offset channels (mAP 0.197 -> 0.205 on the
    previous shipped model, 0.107 -> 0.116 at 1000 steps; README): the heatmap is trained at
    every cell around an object, the offset only at its centre cell."""
    B, C, Hb, Wb = heatmap.shape
    p = heatmap.clamp(1e-6, 1.0 - 1e-6)
    # a one-cell border, so every neighbour index is in range without clamping integers
    logit = F.pad(torch.log(p) - torch.log(1.0 - p), (1, 1, 1, 1)).reshape(B, C * (Hb + 2) * (Wb + 2))
    base = labels * ((Hb + 2) * (Wb + 2)) + (row + 1) * (Wb + 2) + (col + 1)

    def at(dr: int, dc: int):
        return torch.gather(logit, 1, base + (dr * (Wb + 2) + dc))

    def vertex(before, centre, after, inside):
        den = before - 2.0 * centre + after              # < 0 at a strict peak
        ok = (den < -1e-6) & inside                      # no fit against the grid's edge
        off = 0.5 * (before - after) / torch.where(ok, den, torch.full_like(den, -1.0))
        return torch.where(ok, off.clamp(-0.5, 0.5), torch.zeros_like(off))

    r, c = row.to(heatmap.dtype), col.to(heatmap.dtype)
    centre = at(0, 0)
    return (vertex(at(-1, 0), centre, at(1, 0), (r > 0.5) & (r < Hb - 1.5)),
            vertex(at(0, -1), centre, at(0, 1), (c > 0.5) & (c < Wb - 1.5)))


def decode(heatmap: Tensor, regression: Tensor, cfg: ModelConfig, k: int | None = None):
    """Peaks of the class heatmap -> boxes, in the graph (MaxPool, Equal, TopK, GatherElements).

    heatmap [B, C, Hb, Wb] probabilities; regression [B, 10, Hb, Wb]; k defaults to
    cfg.max_detections. Returns boxes [B, k, 9] (x, y, z, l, w, h, yaw, vx, vy; ego frame),
    scores [B, k] in decreasing order and labels [B, k] int64 class indices. A cell counts as a
    peak when it equals the max of its 3x3 neighbourhood (non-peaks get score 0); its centre
    inside the cell comes from the heatmap around the peak (peak_offsets).
    """
    k = cfg.max_detections if k is None else k
    B, C, Hb, Wb = heatmap.shape
    HW = Hb * Wb
    pooled = F.max_pool2d(heatmap, kernel_size=3, stride=1, padding=1)
    peaks = heatmap * (pooled == heatmap).to(heatmap.dtype)
    scores, index = torch.topk(peaks.reshape(B, C * HW), k, dim=-1)           # [B, k]
    labels = torch.div(index, HW, rounding_mode="trunc")                     # [B, k] int64
    cell = index - labels * HW
    row = torch.div(cell, Wb, rounding_mode="trunc")
    col = cell - row * Wb
    R = regression.shape[1]
    reg = torch.gather(regression.reshape(B, R, HW), 2, cell.unsqueeze(1).expand(B, R, k))  # [B, 10, k]
    dx, dy = peak_offsets(heatmap, labels, row, col)
    cx, cy = cfg.cell_size
    x = cfg.bev_x_range[0] + (row.to(reg.dtype) + 0.5 + dx) * cx
    y = cfg.bev_y_range[0] + (col.to(reg.dtype) + 0.5 + dy) * cy
    z = reg[:, 2]
    lwh = torch.exp(torch.clamp(reg[:, 3:6], LOG_SIZE_CLAMP[0], LOG_SIZE_CLAMP[1]))
    yaw = torch.atan2(reg[:, 6], reg[:, 7])
    boxes = torch.stack([x, y, z, lwh[:, 0], lwh[:, 1], lwh[:, 2], yaw, reg[:, 8], reg[:, 9]], dim=-1)
    return boxes, scores, labels


def gaussian_radius(length_cells: float, width_cells: float, min_overlap: float = 0.1) -> float:
    """CornerNet/CenterPoint radius: largest centre shift keeping IoU >= min_overlap."""
    h, w = length_cells, width_cells
    b1 = h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 + math.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def _class_index(cls, cfg: ModelConfig) -> int:
    if isinstance(cls, str):
        return cfg.classes.index(cls)
    c = int(cls)
    if not 0 <= c < cfg.num_classes:
        raise ValueError(f"class index {c} out of range for {cfg.num_classes} classes")
    return c


def encode_targets(boxes, cfg: ModelConfig, *, min_radius: float = 1.0, min_overlap: float = 0.1,
                   subcell: bool = False):
    """CenterPoint training targets (numpy float32).

    boxes: iterable of (cls, center (x, y, z), size (l, w, h), yaw, velocity (vx, vy)), ego
    frame, cls a class index or name. Boxes whose centre is outside the grid are skipped.
    Returns heatmap_target [C, Hb, Wb] (a Gaussian per box, sigma = (2r + 1) / 6 with r the
    CenterPoint radius in cells, at least min_radius; overlapping Gaussians merge by max),
    regression_target [10, Hb, Wb] and reg_mask [Hb, Wb] (1 at centre cells). When two boxes
    share a centre cell the later one wins the regression target.
    The Gaussian is centred on the centre cell (CenterPoint), or with subcell=True on the box's
    true position inside it, so the neighbours' values say where in the cell the centre lies -
    what decode's sub-cell peak (peak_offsets) reads. The centre cell is 1 either way (the
    focal loss's positives).
    """
    C, n = cfg.num_classes, cfg.bev_cells
    cx, cy = cfg.cell_size
    heat = np.zeros((C, n, n), dtype=np.float32)
    reg = np.zeros((len(REGRESSION_CHANNELS), n, n), dtype=np.float32)
    mask = np.zeros((n, n), dtype=np.float32)
    ii, jj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    for box in boxes:
        cls, center, size, yaw, vel = box
        c = _class_index(cls, cfg)
        x, y, z = (float(v) for v in center)
        l, w, h = (float(v) for v in size)
        fx = (x - cfg.bev_x_range[0]) / cx
        fy = (y - cfg.bev_y_range[0]) / cy
        i, j = int(math.floor(fx)), int(math.floor(fy))
        if not (0 <= i < n and 0 <= j < n):
            continue
        r = max(min_radius, gaussian_radius(l / cx, w / cy, min_overlap))
        sigma = (2 * r + 1) / 6.0
        gi, gj = (fx - 0.5, fy - 0.5) if subcell else (i, j)          # Gaussian centre, in cells
        g = np.exp(-((ii - gi) ** 2 + (jj - gj) ** 2) / (2 * sigma * sigma)).astype(np.float32)
        g[np.abs(ii - i) > math.ceil(r)] = 0.0
        g[np.abs(jj - j) > math.ceil(r)] = 0.0
        np.maximum(heat[c], g, out=heat[c])
        heat[c, i, j] = 1.0
        reg[:, i, j] = [fx - (i + 0.5), fy - (j + 0.5), z, math.log(l), math.log(w), math.log(h),
                        math.sin(yaw), math.cos(yaw), float(vel[0]), float(vel[1])]
        mask[i, j] = 1.0
    return heat, reg, mask
