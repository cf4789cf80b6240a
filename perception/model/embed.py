"""Patch embedding, camera-aware ray embedding and BEV position embedding.

Geometry is computed in the graph from the calibration inputs (K^-1 and T_ego_from_camera), so
calibration is an input of the model, never a constant baked into its weights.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from perception.model.attention import Mlp
from perception.model.config import ModelConfig

# uint8 -> roughly zero-mean, unit-variance: (x / 255 - 0.5) / 0.25
PIXEL_SCALE = 1.0 / (255.0 * 0.25)
PIXEL_SHIFT = -2.0
CENTRE_SCALE = 0.1        # camera centres enter embeddings in units of 10 m


def patch_centre_pixels(cfg: ModelConfig) -> Tensor:
    """Homogeneous pixel coordinates (u, v, 1) of every patch centre, [T, 3], patches in
    row-major order (row = image v). Pixel centres are at integer coordinates (OpenCV), so
    patch (r, c) is centred at u = c*P + (P-1)/2, v = r*P + (P-1)/2."""
    P = cfg.patch_size
    v = torch.arange(cfg.grid_h, dtype=torch.float32) * P + (P - 1) / 2.0
    u = torch.arange(cfg.grid_w, dtype=torch.float32) * P + (P - 1) / 2.0
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv, torch.ones_like(uu)], dim=-1).reshape(-1, 3)


def camera_rays(pixels: Tensor, intrinsics_inv: Tensor, ego_from_camera: Tensor) -> tuple[Tensor, Tensor]:
    """Unit viewing rays in the ego frame and camera centres.

    pixels [T, 3] homogeneous; intrinsics_inv [B, N, 3, 3]; ego_from_camera [B, N, 4, 4]
    returns rays [B, N, T, 3] (unit, ego frame) and centres [B, N, 3] (ego frame, metres).
    """
    R = ego_from_camera[..., :3, :3]                         # [B, N, 3, 3]
    M = R @ intrinsics_inv                                   # [B, N, 3, 3]: pixel -> ego direction
    d = pixels @ M.transpose(-1, -2)                         # [B, N, T, 3]
    d = d / torch.sqrt((d * d).sum(-1, keepdim=True) + 1e-12)
    return d, ego_from_camera[..., :3, 3]


def stem_channels(cfg: ModelConfig) -> list[int]:
    """Output channels of the conv stem's stride-2 layers (log2(patch_size) of them)."""
    layers = int(math.log2(cfg.patch_size))
    return [min(cfg.dim, cfg.stem_width * 2 ** i) for i in range(layers)]


class PatchEmbed(nn.Module):
    """uint8 BGR views -> one token per patch_size x patch_size patch.

    "linear": reshape + Linear (Reshape/Transpose/MatMul). "conv": stride-2 3x3 convs + ReLU
    down to the patch grid, then a 1x1 projection to dim (Conv/Relu), so every token still
    stands for exactly one patch, with a local inductive bias that trains much faster."""

    proj: nn.Conv2d | nn.Linear

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.P = cfg.patch_size
        self.gh, self.gw = cfg.grid_h, cfg.grid_w
        self.conv = cfg.patch_stem == "conv"
        if self.conv:
            layers, cin = [], 3
            for cout in stem_channels(cfg):
                layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.ReLU()]
                cin = cout
            self.stem = nn.Sequential(*layers)
            self.proj = nn.Conv2d(cin, cfg.dim, 1)
        else:
            self.proj = nn.Linear(self.P * self.P * 3, cfg.dim)

    def forward(self, images: Tensor) -> Tensor:            # [B, N, H, W, 3] uint8
        B, N, H, W, C = images.shape
        P = self.P
        x = images.to(torch.float32) * PIXEL_SCALE + PIXEL_SHIFT
        if self.conv:
            x = x.reshape(B * N, H, W, C).permute(0, 3, 1, 2)              # [B*N, 3, H, W]
            x = self.proj(self.stem(x))                                    # [B*N, D, gh, gw]
            return x.flatten(2).transpose(1, 2)                            # [B*N, T, D]
        x = x.reshape(B * N, self.gh, P, self.gw, P, C)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(B * N, self.gh * self.gw, P * P * C)
        return self.proj(x)                                  # [B*N, T, D]


class RayEmbed(nn.Module):
    """CVT-style camera-aware embedding: MLP of [ray direction (ego), camera centre / 10 m]."""

    def __init__(self, cfg: ModelConfig, hidden: int = 64):
        super().__init__()
        self.mlp = Mlp(6, hidden, cfg.dim)

    def forward(self, rays: Tensor, centres: Tensor) -> Tensor:   # [B, N, T, 3], [B, N, 3]
        c = (centres * CENTRE_SCALE).unsqueeze(2).expand_as(rays)
        return self.mlp(torch.cat([rays, c], dim=-1))              # [B, N, T, D]


def fourier_features(xy: Tensor, bands: int = 4) -> Tensor:
    """[..., 2] in [-1, 1] -> [..., 2 + 4*bands]: xy, sin/cos(pi 2^f xy)."""
    feats = [xy]
    for f in range(bands):
        a = xy * (math.pi * 2 ** f)
        feats += [torch.sin(a), torch.cos(a)]
    return torch.cat(feats, dim=-1)


class BEVQueryEmbed(nn.Module):
    """Initial BEV queries [1, Q, D]: an MLP of Fourier features of each cell's ground position
    (smooth across cells, so neighbouring cells learn together), or - without position
    embedding - one learned vector shared by every cell."""

    feats: Tensor            # [Q, F] buffer (with position embedding)

    def __init__(self, cfg: ModelConfig, cells_xy_normalised: Tensor, hidden: int = 64, bands: int = 4):
        super().__init__()
        self.use_position = cfg.use_position_embedding
        self.num_queries = cfg.num_bev_queries
        if self.use_position:
            self.register_buffer("feats", fourier_features(cells_xy_normalised, bands), persistent=False)
            self.mlp = Mlp(self.feats.shape[-1], hidden, cfg.dim)
        else:
            self.query = nn.Parameter(torch.zeros(1, 1, cfg.dim))
            nn.init.trunc_normal_(self.query, std=0.02)

    def forward(self) -> Tensor:                             # [1, Q, D]
        if self.use_position:
            return self.mlp(self.feats).unsqueeze(0)
        return self.query.expand(1, self.num_queries, -1)
