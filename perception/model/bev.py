"""Cross-view attention from a BEV grid onto the tokens of all cameras, and BEV refinement.

Geometric top-K cross-view attention (design notes §7):

1. For every BEV cell c (its point at `bev_query_height`) and every token t of every camera n,
   score(c, t) = cos(ray_t, dir(centre_n -> point_c)): 1 when the token's viewing ray passes
   through the cell's point, low for tokens looking elsewhere, negative for cameras facing
   away. Missing cameras get -1e4. No matrix inverse: only K^-1 and T_ego_from_camera (inputs)
   are used. With cross_view=False every camera but the cell's best one (highest max score)
   gets another -1e4.
2. TopK(k) over the concatenated N*T scores picks each cell's keys, from any cameras; Gather
   (index_select on a flattened table) fetches their keys/values.
3. The relative geometry of each (cell, key) pair - [ray, dir(camera -> cell), ray - dir,
   distance] - is embedded by a small MLP into h [B, Q, K, G] and added to the key and to the
   value (Shaw-style relative position). Adding W_k h to the key and W_v h to the value is
   computed after the contraction: q.(k + W_k h) = q.k + (W_k^T q).h and
   sum_k a_k (v_k + W_v h_k) = sum_k a_k v_k + W_v (sum_k a_k h_k), exactly equal and without a
   [B, Q, K, D] tensor for the embedding.
4. One softmax over the K selected keys (cross-view), additive -1e4 mask on keys that are not
   valid (missing camera / other camera with cross_view=False), values of missing cameras
   multiplied by 0 before the gather: their pixels can never reach the output.

TopK indices carry no gradient; everything else is differentiable.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from perception.model.attention import MASK_VALUE, Mlp
from perception.model.config import ModelConfig

_INVALID = -5.0e3        # a selected key scoring below this comes from a masked camera


def bev_points(cfg: ModelConfig) -> Tensor:
    """[Q, 3] ego-frame points the BEV queries look at, Q = Hb*Wb in row-major order of the
    [Hb, Wb] grid (row i indexes x, column j indexes y; see decode.bev_cell_centers)."""
    from perception.model.decode import bev_cell_centers

    xy = bev_cell_centers(cfg).reshape(-1, 2)
    z = torch.full((xy.shape[0], 1), float(cfg.bev_query_height))
    return torch.cat([xy, z], dim=-1)


def gather_rows(table: Tensor, flat_index: Tensor) -> Tensor:
    """table [R, C], flat_index [...] int64 -> [..., C]. Exports as a single ONNX Gather."""
    out = table.index_select(0, flat_index.reshape(-1))
    return out.reshape(flat_index.shape + (table.shape[-1],))


def _attend_selected(attn: Tensor, values: Tensor, flat_index: Tensor, head_mask: Tensor) -> Tensor:
    v_sel = gather_rows(values, flat_index)                                 # [B, Q, K, D]
    return ((attn @ v_sel) * head_mask).sum(dim=2)                          # [B, Q, D]


class _AttendSelected(torch.autograd.Function):
    """Same forward as _attend_selected, with a backward that is ~5x faster on a CPU: autograd's
    gradient of the gathered values is a batched [K, H] @ [H, D] product (inner size H = 4,
    MKL's slowest case); here it is one broadcast multiply followed by index_add_."""

    @staticmethod
    def forward(ctx, attn, values, flat_index, head_mask):
        v_sel = gather_rows(values, flat_index)                             # [B, Q, K, D]
        ctx.save_for_backward(attn, v_sel, flat_index, head_mask)
        ctx.num_rows = values.shape[0]
        return ((attn @ v_sel) * head_mask).sum(dim=2)

    @staticmethod
    def backward(ctx, grad):                                                # grad [B, Q, D]
        attn, v_sel, flat_index, head_mask = ctx.saved_tensors
        B, Q, H, K = attn.shape
        D = v_sel.shape[-1]
        grad_attn = grad_values = None
        if ctx.needs_input_grad[0]:
            grad_attn = (grad.unsqueeze(2) * head_mask) @ v_sel.transpose(-1, -2)    # [B, Q, H, K]
        if ctx.needs_input_grad[1]:
            a = attn.transpose(-1, -2).contiguous().unsqueeze(-1)           # [B, Q, K, H, 1]
            g_sel = a * grad.reshape(B, Q, 1, H, D // H)                    # [B, Q, K, H, hd]
            grad_values = torch.zeros(ctx.num_rows, D, dtype=grad.dtype, device=grad.device)
            grad_values.index_add_(0, flat_index.reshape(-1), g_sel.reshape(-1, D))
        return grad_attn, grad_values, None, None


def attend_selected(attn: Tensor, values: Tensor, flat_index: Tensor, head_mask: Tensor) -> Tensor:
    """out[b, q, h-th slice] = sum_k attn[b, q, h, k] * values[flat_index[b, q, k], h-th slice].

    attn [B, Q, H, K]; values [R, D] (rows of all samples); flat_index [B, Q, K] into R;
    head_mask [H, D] 0/1 (channel d belongs to head h) -> [B, Q, D]. Exports as Gather +
    MatMul + Mul + ReduceSum (the custom backward is used only when training)."""
    if torch.is_grad_enabled() and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export() \
            and (attn.requires_grad or values.requires_grad):
        return _AttendSelected.apply(attn, values.contiguous(), flat_index, head_mask)
    return _attend_selected(attn, values, flat_index, head_mask)


def select_tokens(points: Tensor, rays: Tensor, centres: Tensor, camera_mask: Tensor, k: int,
                  cross_view: bool = True) -> tuple[Tensor, Tensor]:
    """Geometric top-K token selection.

    points [Q, 3]; rays [B, N, T, 3] unit; centres [B, N, 3]; camera_mask [B, N] (1 present)
    returns index [B, Q, K] int64 into the N*T tokens of each sample (camera n, token t ->
    n*T + t) and score [B, Q, K] (cosine; below -5e3 for keys that must be masked).
    """
    B, N, T, _ = rays.shape
    Q = points.shape[0]
    diff = points.reshape(1, 1, Q, 3) - centres.unsqueeze(2)            # [B, N, Q, 3]
    u = diff / torch.sqrt((diff * diff).sum(-1, keepdim=True) + 1e-12)
    cos = u @ rays.transpose(-1, -2)                                    # [B, N, Q, T]
    penalty = (1.0 - camera_mask.reshape(B, N, 1)) * MASK_VALUE    # [B, N, 1]: 0 or -1e4
    if not cross_view:
        best = cos.amax(dim=-1) + penalty                               # [B, N, Q]
        is_best = (best >= best.amax(dim=1, keepdim=True)).to(cos.dtype)
        penalty = penalty + (1.0 - is_best) * MASK_VALUE              # [B, N, Q]
    score = cos + penalty.unsqueeze(-1)                                 # [B, N, Q, T]
    score = score.permute(0, 2, 1, 3).reshape(B, Q, N * T)              # [B, Q, N*T]
    top, index = torch.topk(score, k, dim=-1)                           # [B, Q, K]
    return index, top


class GeometricCrossAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D, H = cfg.dim, cfg.heads
        self.heads, self.head_dim = H, D // H
        self.scale = self.head_dim ** -0.5
        self.q = nn.Linear(D, D)
        self.kv = nn.Linear(D, 2 * D)
        self.proj = nn.Linear(D, D)
        head_mask = torch.zeros(H, D)
        for i in range(H):
            head_mask[i, i * self.head_dim:(i + 1) * self.head_dim] = 1.0
        self.register_buffer("head_mask", head_mask, persistent=False)         # [H, D]
        self.use_geometry = cfg.use_position_embedding
        if self.use_geometry:
            G = cfg.geo_hidden
            self.geo = nn.Sequential(nn.Linear(10, G), nn.GELU())     # relative geometry -> h
            self.geo_bias = nn.Linear(G, H)                             # h -> attention bias per head
            self.geo_value = nn.Linear(G, D, bias=False)                # attended h -> value space

    def geometry_features(self, points: Tensor, key_geo: Tensor) -> Tensor:
        """points [Q, 3]; key_geo [B, Q, K, 6] = [ray (3), camera centre (3)] of each key
        -> [B, Q, K, 10] = [ray, u, 8 (ray - u), distance / 10 m] with u the unit direction from
        the key's camera to the cell's point."""
        ray, centre = key_geo[..., :3], key_geo[..., 3:6]
        diff = points.unsqueeze(1) - centre                                 # [B, Q, K, 3]
        dist = torch.sqrt((diff * diff).sum(-1, keepdim=True) + 1e-12)
        u = diff / dist
        return torch.cat([ray, u, 8.0 * (ray - u), 0.1 * dist], dim=-1)

    def forward(self, query: Tensor, tokens: Tensor, token_mask: Tensor, index: Tensor,
                key_valid: Tensor, points: Tensor, key_geo: Tensor | None) -> Tensor:
        # query [Bq, Q, D] (Bq = 1 or B, normalised); tokens [B, S, D] normalised, S = N*T;
        # token_mask [B, S]; index [B, Q, K] into S; key_valid [B, Q, K] (1/0);
        # points [Q, 3]; key_geo [B, Q, K, 6] or None
        B, S, D = tokens.shape
        Q, K = index.shape[1], index.shape[2]
        H, hd = self.heads, self.head_dim

        q = self.q(query) * self.scale                                      # [Bq, Q, D]
        q = q.expand(B, Q, D)                                               # [B, Q, D]

        # keys/values of every token; a missing camera's keys and values are zeroed
        kv = self.kv(tokens) * token_mask.unsqueeze(-1)                     # [B, S, 2D]
        k, v = kv[..., :D], kv[..., D:]

        # content logits: a dense GEMM against all S tokens, then pick the K selected columns
        # (MatMul + GatherElements; cheaper on a CPU than gathering K key rows per cell)
        qh = q.reshape(B, Q, H, hd).transpose(1, 2)                         # [B, H, Q, hd]
        kh = k.reshape(B, S, H, hd).transpose(1, 2)                         # [B, H, S, hd]
        dense = qh @ kh.transpose(-1, -2)                                   # [B, H, Q, S]
        logits = torch.gather(dense, 3, index.unsqueeze(1).expand(B, H, Q, K))  # [B, H, Q, K]
        logits = logits.transpose(1, 2)                                     # [B, Q, H, K]

        if self.use_geometry:
            h = self.geo(self.geometry_features(points, key_geo))           # [B, Q, K, G]
            h = h * key_valid.unsqueeze(-1)
            logits = logits + self.geo_bias(h).transpose(-1, -2)            # [B, Q, H, K]

        logits = logits + ((1.0 - key_valid) * MASK_VALUE).unsqueeze(2)
        attn = logits.softmax(dim=-1)                                       # [B, Q, H, K]

        # values: gather the K selected rows per cell, one [H, K] @ [K, D] product per cell,
        # keep each head's own slice (block diagonal: Mul by a 0/1 head mask + ReduceSum)
        offs = (torch.arange(B, device=index.device) * S).reshape(B, 1, 1)
        out = attend_selected(attn, v.reshape(B * S, D), index + offs, self.head_mask)  # [B, Q, D]
        if self.use_geometry:
            # relative geometry of the attended keys, head-averaged: tells the cell where the
            # rays it attends to pass relative to it (sub-cell localisation)
            a_mean = attn.mean(dim=2).unsqueeze(-1)                         # [B, Q, K, 1]
            out = out + self.geo_value((a_mean * h).sum(dim=2))             # [B, Q, D]
        return self.proj(out.reshape(B, Q, D))                              # [B, Q, D]


class CrossViewBlock(nn.Module):
    """x = query + CrossAttn(LN(query), LN(tokens)); x = x + MLP(LN(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D = cfg.dim
        self.norm_q = nn.LayerNorm(D)
        self.norm_kv = nn.LayerNorm(D)
        self.attn = GeometricCrossAttention(cfg)
        self.norm2 = nn.LayerNorm(D)
        self.mlp = Mlp(D, int(D * cfg.bev_mlp_ratio))

    def forward(self, query, tokens, token_mask, index, key_valid, points, key_geo) -> Tensor:
        x = query + self.attn(self.norm_q(query), self.norm_kv(tokens), token_mask, index,
                              key_valid, points, key_geo)                   # [B, Q, D]
        return x + self.mlp(self.norm2(x))


class BEVBlock(nn.Module):
    """ConvNeXt-style refinement on the BEV grid: x + MLP(LN(depthwise kxk conv(x))).
    Conv, LayerNormalization and MatMul are native TensorRT layers."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D = cfg.dim
        self.Hb = self.Wb = cfg.bev_cells
        self.dw = nn.Conv2d(D, D, cfg.bev_kernel, padding=cfg.bev_kernel // 2, groups=D)
        self.norm = nn.LayerNorm(D)
        self.mlp = Mlp(D, int(D * cfg.bev_mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:                 # [B, Q, D], Q = Hb*Wb row-major
        B, Q, D = x.shape
        y = self.dw(x.transpose(1, 2).reshape(B, D, self.Hb, self.Wb))
        y = y.reshape(B, D, Q).transpose(1, 2)
        return x + self.mlp(self.norm(y))
