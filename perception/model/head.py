"""CenterPoint-style head on the BEV grid: class heatmap logits and box regression."""
from __future__ import annotations

import math

from torch import Tensor, nn

from perception.model.attention import Mlp
from perception.model.config import ModelConfig
from perception.model.decode import REGRESSION_CHANNELS

HEATMAP_PRIOR = 0.1   # initial heatmap probability: bias -log((1 - p) / p) = -2.19 (focal loss)


class CenterHead(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D = cfg.dim
        self.Hb = self.Wb = cfg.bev_cells
        self.norm = nn.LayerNorm(D)
        self.heatmap = Mlp(D, cfg.head_hidden, cfg.num_classes)
        self.regression = Mlp(D, cfg.head_hidden, len(REGRESSION_CHANNELS))
        self.init_prior()

    def init_prior(self) -> None:
        nn.init.constant_(self.heatmap.fc2.bias, -math.log((1 - HEATMAP_PRIOR) / HEATMAP_PRIOR))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:   # x [B, Q, D], Q = Hb*Wb row-major
        B = x.shape[0]
        x = self.norm(x)
        heat = self.heatmap(x).transpose(1, 2).reshape(B, -1, self.Hb, self.Wb)    # [B, C, Hb, Wb] logits
        reg = self.regression(x).transpose(1, 2).reshape(B, -1, self.Hb, self.Wb)  # [B, 10, Hb, Wb]
        return heat, reg
