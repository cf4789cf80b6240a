"""BEVViT: a multi-view Vision Transformer that turns N camera images into 3D boxes.

    images [B, N, H, W, 3] uint8 BGR
      -> PatchEmbed (reshape + Linear)                          tokens [B*N, T, D]
      + learned patch position + camera-aware ray embedding      (CVT: ray of each patch centre
        from K^-1 and T_ego_from_camera, plus the camera centre, through an MLP)
      -> view_depth x Block (self-attention per view, weights shared, views folded in batch)
      -> TokenDepth: per token a Laplace distribution over log distance (depth.py)
      -> geometric top-K cross-view attention from the Hb x Wb BEV queries onto all N*T tokens
         (bev.py: cosine score, TopK, Gather, relative-geometry embedding, token-depth
         likelihood of the cell's distance, one softmax)
      -> bev_depth x BEVBlock (depthwise conv + MLP)
      -> CenterHead -> heatmap logits [B, C, Hb, Wb], regression [B, 10, Hb, Wb]
      -> decode in graph (decode.py) -> det_boxes, det_scores, det_labels

Sizes and the budget are explained in config.py; measured speed is in the README and docs/engines.md.
The calibration-only work (rays, scores, TopK, key geometry) is split out as `geometry()` so a
runtime can cache it per (calibration, camera mask).

Every op exports to ONNX opset 17 as native TensorRT layers: MatMul/Gemm, Softmax,
LayerNormalization, Erf (GELU), Relu, Conv, MaxPool, TopK, Gather, GatherElements,
Equal/Greater/Where, Atan, elementwise ops.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from perception.model.attention import Block
from perception.model.bev import _INVALID, BEVBlock, CrossViewBlock, bev_points, key_geometry, select_tokens
from perception.model.config import ModelConfig
from perception.model.decode import decode
from perception.model.depth import TokenDepth, depth_log_likelihood
from perception.model.embed import BEVQueryEmbed, PatchEmbed, RayEmbed, camera_rays, patch_centre_pixels
from perception.model.head import CenterHead


class BEVViT(nn.Module):
    # non-persistent buffers, declared for type checkers (nn.Module.__getattr__ is untyped)
    patch_pixels: Tensor     # [T, 3]
    bev_points: Tensor       # [Q, 3]
    eye3: Tensor
    eye4: Tensor
    eye_cams: Tensor

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.dim
        self.register_buffer("patch_pixels", patch_centre_pixels(cfg), persistent=False)   # [T, 3]
        points = bev_points(cfg)                                                           # [Q, 3]
        self.register_buffer("bev_points", points, persistent=False)
        self.register_buffer("eye3", torch.eye(3), persistent=False)
        self.register_buffer("eye4", torch.eye(4), persistent=False)
        self.register_buffer("eye_cams", torch.eye(cfg.num_cameras), persistent=False)
        self.patch_embed = PatchEmbed(cfg)
        if cfg.use_position_embedding:
            self.pos_embed = nn.Parameter(torch.zeros(1, cfg.tokens_per_view, D))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            self.ray_embed = RayEmbed(cfg)
        half = torch.tensor([(cfg.bev_x_range[1] - cfg.bev_x_range[0]) / 2,
                             (cfg.bev_y_range[1] - cfg.bev_y_range[0]) / 2])
        mid = torch.tensor([sum(cfg.bev_x_range) / 2, sum(cfg.bev_y_range) / 2])
        self.bev_query = BEVQueryEmbed(cfg, (points[:, :2] - mid) / half)
        self.blocks = nn.ModuleList([Block(D, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.view_depth)])
        self.norm = nn.LayerNorm(D)
        if cfg.token_depth:
            self.token_depth = TokenDepth(cfg)
        self.cross = CrossViewBlock(cfg)
        self.bev_blocks = nn.ModuleList([BEVBlock(cfg) for _ in range(cfg.bev_depth)])
        self.head = CenterHead(cfg)
        self.apply(self._init_weights)
        self.head.init_prior()

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # timm init for width >= 32 layers; the small-fan-in first layers of the geometry MLPs
        # (3-18 inputs) keep PyTorch's fan-in-scaled default so geometry starts at unit scale.
        if isinstance(m, nn.Linear) and m.in_features >= 32:
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------------------------
    def geometry(self, intrinsics_inv: Tensor, ego_from_camera: Tensor, camera_mask: Tensor) -> dict[str, Tensor]:
        """Everything that depends on the calibration and camera mask only (not on pixels): rays,
        camera centres, the top-K keys of every BEV cell and their relative geometry. A runtime
        may compute it once per (calibration, camera mask) and reuse it across frames."""
        cfg = self.cfg
        B, N = camera_mask.shape
        T = cfg.tokens_per_view
        camera_mask = camera_mask.to(torch.float32)
        # fp32 even under autocast: the top-K choice needs the cosine resolution
        with torch.autocast(device_type=camera_mask.device.type, enabled=False):
            present = camera_mask.reshape(B, N, 1, 1) > 0.5
            # a missing camera's calibration may be garbage (even NaN): replace it by identity
            k_inv = torch.where(present, intrinsics_inv.to(torch.float32), self.eye3)
            t_ego = torch.where(present, ego_from_camera.to(torch.float32), self.eye4)
            rays, centres = camera_rays(self.patch_pixels, k_inv, t_ego)     # [B, N, T, 3], [B, N, 3]
            index, top = select_tokens(self.bev_points, rays, centres, camera_mask, cfg.topk,
                                       cfg.cross_view, self.eye_cams)        # [B, Q, K] x2
            geo = {"rays": rays, "centres": centres, "index": index,
                   "key_valid": (top > _INVALID).to(torch.float32),          # [B, Q, K]
                   "token_mask": camera_mask.reshape(B, N, 1).expand(B, N, T).reshape(B, N * T)}
            if cfg.use_position_embedding:
                geo["key_geo"] = key_geometry(self.bev_points, rays, centres, index)  # [7, B, Q, K]
                if cfg.geometric_prior > 0:
                    # 1 - cos in [0, 2] for valid keys; masked keys are clamped (and masked anyway)
                    geo["key_angle"] = torch.clamp(1.0 - top, max=2.0)               # [B, Q, K]
        if cfg.use_position_embedding:
            # pixel-independent logit terms (geometry MLP bias, angular prior), [B, H, Q, K]; in the
            # autocast dtype like the rest of the attention logits
            bias = self.cross.attn.logit_bias(geo["key_geo"], geo.get("key_angle"))
            if bias is not None:
                geo["logit_bias"] = bias
        return geo

    def forward_features(self, images: Tensor, geo: dict[str, Tensor]) -> dict[str, Tensor]:
        cfg = self.cfg
        expected = (cfg.num_cameras, cfg.image_height, cfg.image_width, 3)
        if not torch.jit.is_tracing() and tuple(images.shape[1:]) != expected:
            raise ValueError(f"images must be [B, {', '.join(map(str, expected))}] (uint8 BGR), "
                             f"got {list(images.shape)}")
        B, N = images.shape[:2]
        T = cfg.tokens_per_view
        x = self.patch_embed(images)                                         # [B*N, T, D]
        if cfg.use_position_embedding:
            x = x + self.pos_embed + self.ray_embed(geo["rays"], geo["centres"]).reshape(B * N, T, -1)
        for blk in self.blocks:
            x = blk(x)                                                       # [B*N, T, D]
        tokens = self.norm(x).reshape(B, N * T, -1)                          # [B, N*T, D]
        out = {}
        key_depth = None
        if cfg.token_depth:
            out["token_depth"] = self.token_depth(tokens)                    # [B, N*T, 2]
            # a missing camera's depths are zeroed like its keys and values (bev.py), so its
            # pixels cannot shape the attention weights even where every key is masked
            known = out["token_depth"] * geo["token_mask"].unsqueeze(-1)
            key_depth = depth_log_likelihood(known, geo["index"], geo["key_geo"][6] * 10.0)  # [B, Q, K]
        bev = self.cross(self.bev_query(), tokens, geo["token_mask"], geo["index"],
                         geo["key_valid"], geo.get("key_geo"), geo.get("key_angle"),
                         key_depth, geo.get("logit_bias"))                   # [B, Q, D]
        for blk in self.bev_blocks:
            bev = blk(bev)
        out["heatmap_logits"], out["regression"] = self.head(bev)
        return out

    def forward_train(self, images: Tensor, intrinsics_inv: Tensor, ego_from_camera: Tensor,
                      camera_mask: Tensor) -> dict[str, Tensor]:
        """Everything up to the head, no decode: {"heatmap_logits" [B, C, Hb, Wb] (pre-sigmoid,
        for a focal loss), "regression" [B, 10, Hb, Wb]} and, with token_depth, "token_depth"
        [B, N*T, 2] (log distance, log scale) for its auxiliary loss."""
        return self.forward_features(images, self.geometry(intrinsics_inv, ego_from_camera, camera_mask))

    def forward(self, images: Tensor, intrinsics_inv: Tensor, ego_from_camera: Tensor,
                camera_mask: Tensor) -> dict[str, Tensor]:
        out = self.forward_train(images, intrinsics_inv, ego_from_camera, camera_mask)
        heat = torch.sigmoid(out["heatmap_logits"].float())
        reg = out["regression"].float()
        boxes, scores, labels = decode(heat, reg, self.cfg, self.cfg.max_detections)
        return {"heatmap": heat, "regression": reg, "det_boxes": boxes,
                "det_scores": scores, "det_labels": labels}

