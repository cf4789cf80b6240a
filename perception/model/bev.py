"""Cross-view attention from a BEV grid onto the tokens of all cameras, and BEV refinement.

Geometric top-K cross-view attention:

1. For every BEV cell c (its point at `bev_query_height`) and every token t of every camera n,
   score(c, t) = cos(ray_t, dir(centre_n -> point_c)): 1 when the token's viewing ray passes
   through the cell's point, low for tokens looking elsewhere, negative for cameras facing
   away. Missing cameras get -1e4. No matrix inverse: only K^-1 and T_ego_from_camera (inputs)
   are used. With cross_view=False every camera but the cell's best one (highest max score)
   gets another -1e4.
2. TopK(k) over the concatenated N*T scores picks each cell's keys, from any cameras.
3. Content logits q.k: one dense [Q, S] product per head, then GatherElements of the K selected
   columns (on a CPU cheaper than gathering K key rows per cell). Values: Gather of the K
   selected rows per cell.
4. Relative geometry of each (cell, key) pair f = [key ray, unit direction from the key's camera
   to the cell's point, distance] enters twice. (a) A small MLP of f gives a per-head additive
   attention bias: a learned geometric prior that lets a cell prefer the keys
   whose rays pass through it at the right range, i.e. localise along the ray. The cross
   attention has one layer and its queries are a function of the cell position only, so a
   query-dependent key embedding q.W h(f) would also be a function of (cell, f) alone; the
   bias MLP of f (which contains the cell's direction and distance from the camera) expresses
   it at a fraction of the cost. (b) The attention-weighted mean of f, projected into the
   value space, tells the cell where the rays it attends to pass relative to it (sub-cell
   position).
5. One softmax over the K selected keys (cross-view), an additive -1e4 mask on keys that are
   not valid (missing camera / other camera with cross_view=False), and the keys and values of
   missing cameras multiplied by 0 before the gathers: their pixels can never reach the output.

Layouts are chosen so that the ONNX graph needs no large Transpose: logits, geometry bias and
attention weights are all [B, H, Q, K]; geometry features are channel-first [7, B, Q, K].
TopK indices carry no gradient; everything else is differentiable.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from perception.model.attention import MASK_VALUE, Mlp
from perception.model.config import ModelConfig
from perception.model.decode import bev_cell_centers

_INVALID = -5.0e3        # a selected key scoring below this comes from a masked camera


def bev_points(cfg: ModelConfig) -> Tensor:
    """[Q, 3] ego-frame points the BEV queries look at, Q = Hb*Wb in row-major order of the
    [Hb, Wb] grid (row i indexes x, column j indexes y; see decode.bev_cell_centers)."""
    xy = bev_cell_centers(cfg).reshape(-1, 2)
    z = torch.full((xy.shape[0], 1), float(cfg.bev_query_height))
    return torch.cat([xy, z], dim=-1)


def gather_rows(table: Tensor, flat_index: Tensor) -> Tensor:
    """table [R, C], flat_index [...] int64 -> [..., C]. Exports as a single ONNX Gather."""
    out = table.index_select(0, flat_index.reshape(-1))
    return out.reshape(flat_index.shape + (table.shape[-1],))


def gather_keys(per_token: Tensor, index: Tensor) -> Tensor:
    """per_token [B, S, C], index [B, Q, K] into S -> [B, Q, K, C]: each cell's selected keys'
    rows, all samples in one Gather (sample b's rows sit at b*S in the flattened table)."""
    B, S, C = per_token.shape
    offs = (torch.arange(B, device=index.device) * S).reshape(B, 1, 1)
    return gather_rows(per_token.reshape(B * S, C), index + offs)


def _attend_selected(attn: Tensor, values: Tensor, index: Tensor, head_mask: Tensor) -> Tensor:
    v_sel = gather_keys(values, index)                                      # [B, Q, K, D]
    # one [H, K] @ [K, D] product per cell, then each head keeps its own slice of channels
    return ((attn.transpose(1, 2) @ v_sel) * head_mask).sum(dim=2)           # [B, Q, D]


class _AttendSelected(torch.autograd.Function):
    """_attend_selected with a backward suited to a CPU. Autograd would form the gradient of
    the gathered values as a [K, H] @ [H, D] product per cell (inner size H = 4: MKL's slowest
    case) and then scatter-add B*Q*K rows; here the attention weights are scattered into a
    dense [B, H, Q, S] matrix (each row has K entries: TopK indices are distinct) and the value
    gradient is one [S, Q] @ [Q, hd] GEMM per head."""

    @staticmethod
    def forward(ctx, attn, values, index, head_mask):
        v_sel = gather_keys(values, index)                                  # [B, Q, K, D]
        ctx.save_for_backward(attn, v_sel, index, head_mask)
        ctx.num_tokens = values.shape[1]
        return ((attn.transpose(1, 2) @ v_sel) * head_mask).sum(dim=2)

    @staticmethod
    def backward(ctx, grad):                                                # grad [B, Q, D]
        attn, v_sel, index, head_mask = ctx.saved_tensors
        B, H, Q, K = attn.shape
        D = v_sel.shape[-1]
        grad_attn = grad_values = None
        if ctx.needs_input_grad[0]:
            g_heads = grad.unsqueeze(2) * head_mask                         # [B, Q, H, D]
            grad_attn = (g_heads @ v_sel.transpose(-1, -2)).transpose(1, 2)  # [B, H, Q, K]
        if ctx.needs_input_grad[1]:
            dense = attn.new_zeros(B, H, Q, ctx.num_tokens)
            dense.scatter_(3, index.unsqueeze(1).expand(B, H, Q, K), attn)  # [B, H, Q, S]
            g = grad.reshape(B, Q, H, D // H).transpose(1, 2)               # [B, H, Q, hd]
            grad_values = (dense.transpose(-1, -2) @ g).transpose(1, 2).reshape(B, ctx.num_tokens, D)
        return grad_attn, grad_values, None, None


def attend_selected(attn: Tensor, values: Tensor, index: Tensor, head_mask: Tensor) -> Tensor:
    """out[b, q, channels of head h] = sum_k attn[b, h, q, k] * values[b, index[b, q, k], same channels].

    attn [B, H, Q, K]; values [B, S, D]; index [B, Q, K] into S (distinct within a row);
    head_mask [H, D] 0/1 (channel d belongs to head h) -> [B, Q, D]. Exports as Gather + MatMul
    + Mul + ReduceSum; the custom backward is used only when a gradient is needed."""
    if torch.is_grad_enabled() and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export() \
            and (attn.requires_grad or values.requires_grad):
        return _AttendSelected.apply(attn, values.contiguous(), index, head_mask)
    return _attend_selected(attn, values, index, head_mask)


def select_tokens(points: Tensor, rays: Tensor, centres: Tensor, camera_mask: Tensor, k: int,
                  cross_view: bool = True, eye: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Geometric top-K token selection.

    points [Q, 3]; rays [B, N, T, 3] unit; centres [B, N, 3]; camera_mask [B, N] (1 present);
    eye: torch.eye(N) (pass a constant to keep EyeLike out of an exported graph)
    returns index [B, Q, K] int64 into the N*T tokens of each sample (camera n, token t ->
    n*T + t), in no particular order, and their scores [B, Q, K] (cosine; below -5e3 for keys
    that must be masked).
    """
    B, N, T, _ = rays.shape
    Q = points.shape[0]
    diff = points.reshape(1, Q, 1, 3) - centres.unsqueeze(1)            # [B, Q, N, 3]
    u = diff / torch.sqrt((diff * diff).sum(-1, keepdim=True) + 1e-12)
    # All cameras in one product and the camera penalty folded in, so the scores land directly
    # in [B, Q, N*T]: [u_1 .. u_N, 1] @ [block-diagonal rays; penalty row] (camera n's rays in
    # rows 3n..3n+2 and columns nT..nT+T-1).
    if eye is None:
        eye = torch.eye(N, dtype=rays.dtype, device=rays.device)
    eye = eye.reshape(1, N, 1, N, 1)
    rays_bd = (rays.transpose(-1, -2).unsqueeze(3) * eye).reshape(B, N * 3, N * T)
    penalty = ((1.0 - camera_mask) * MASK_VALUE).reshape(B, N, 1).expand(B, N, T).reshape(B, 1, N * T)
    rhs = torch.cat([rays_bd, penalty], dim=1)                          # [B, 3N + 1, N*T]
    lhs = torch.cat([u.reshape(B, Q, N * 3), torch.ones_like(u[:, :, 0, :1])], dim=-1)  # [B, Q, 3N + 1]
    score = lhs @ rhs                                                   # [B, Q, N*T]
    if not cross_view:
        per_cam = score.reshape(B, Q, N, T)
        best = per_cam.amax(dim=-1, keepdim=True)                       # [B, Q, N, 1]
        is_best = (best >= best.amax(dim=2, keepdim=True)).to(score.dtype)
        score = (per_cam + (1.0 - is_best) * MASK_VALUE).reshape(B, Q, N * T)
    # the order of the K keys does not matter (one softmax over them): unsorted TopK is cheaper
    top, index = torch.topk(score, k, dim=-1, sorted=False)             # [B, Q, K]
    return index, top


GEO_FEATURES = 7


def key_geometry(points: Tensor, rays: Tensor, centres: Tensor, index: Tensor) -> Tensor:
    """Relative geometry of every selected key to its cell, channel-first with the batch
    folded into the columns (so the geometry MLP is one plain GEMM).

    points [Q, 3]; rays [B, N, T, 3]; centres [B, N, 3]; index [B, Q, K] into N*T
    -> [7, B, Q, K]: the key's ray (3), the unit direction u from the key's camera to the cell's
    point (3) and that distance / 10 m (1). (ray - u, the angular offset between where the key
    looks and where the cell is, is a linear function of these.)
    """
    B, N, T, _ = rays.shape
    Q, K = index.shape[1], index.shape[2]
    table = torch.cat([rays, centres.unsqueeze(2).expand(B, N, T, 3)], dim=-1)  # [B, N, T, 6]
    table = table.reshape(B * N * T, 6).transpose(0, 1)                  # [6, B*N*T]
    offs = (torch.arange(B, device=index.device) * (N * T)).reshape(B, 1, 1)
    g = table.index_select(1, (index + offs).reshape(-1)).reshape(6, B, Q, K)
    ray, centre = g[:3], g[3:]
    diff = points.transpose(0, 1).reshape(3, 1, Q, 1) - centre          # [3, B, Q, K]
    dist = torch.sqrt((diff * diff).sum(0, keepdim=True) + 1e-12)      # [1, B, Q, K]
    return torch.cat([ray, diff / dist, 0.1 * dist], dim=0)             # [7, B, Q, K]


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
            self.geo = nn.Linear(GEO_FEATURES, G)    # relative geometry -> hidden (ReLU)
            self.geo_bias = nn.Linear(G, H)          # hidden -> additive attention bias per head
            self.geo_value = nn.Linear(GEO_FEATURES, D, bias=False)  # attended geometry -> value
        if self.use_geometry and cfg.geometric_prior > 0:
            # per-head log sharpness: heads are free to widen or narrow their geometric window
            self.log_tau = nn.Parameter(torch.full((H,), math.log(cfg.geometric_prior)))
        if cfg.token_depth:
            # per-head weight of the token-depth log-likelihood (depth.py) in the logits
            self.depth_weight = nn.Parameter(torch.ones(H))

    def forward(self, query: Tensor, tokens: Tensor, token_mask: Tensor, index: Tensor,
                key_valid: Tensor, key_geo: Tensor | None, key_angle: Tensor | None = None,
                key_depth: Tensor | None = None) -> Tensor:
        # query [Bq, Q, D] (Bq = 1 or B, normalised); tokens [B, S, D] normalised, S = N*T;
        # token_mask [B, S]; index [B, Q, K] into S; key_valid [B, Q, K] (1/0);
        # key_geo [7, B, Q, K] or None; key_angle, key_depth [B, Q, K] or None
        B, S, D = tokens.shape
        Q, K = index.shape[1], index.shape[2]
        H, hd = self.heads, self.head_dim

        q = self.q(query) * self.scale                                      # [Bq, Q, D]
        # keys/values of every token; a missing camera's keys and values are zeroed
        kv = self.kv(tokens) * token_mask.unsqueeze(-1)                     # [B, S, 2D]
        k, v = kv[..., :D], kv[..., D:]

        # content logits: one dense [Q, S] product per head, then the K selected columns
        qh = q.reshape(-1, Q, H, hd).transpose(1, 2)                        # [Bq, H, Q, hd]
        kh = k.reshape(B, S, H, hd).permute(0, 2, 3, 1)                     # [B, H, hd, S]
        dense = qh @ kh                                                     # [B, H, Q, S]
        logits = torch.gather(dense, 3, index.unsqueeze(1).expand(B, H, Q, K))  # [B, H, Q, K]

        if self.use_geometry:
            f = key_geo.reshape(GEO_FEATURES, B * Q * K)
            h = torch.relu(torch.addmm(self.geo.bias.unsqueeze(1), self.geo.weight, f))   # [G, B*Q*K]
            bias = torch.addmm(self.geo_bias.bias.unsqueeze(1), self.geo_bias.weight, h)  # [H, B*Q*K]
            logits = logits + bias.reshape(H, B, Q, K).transpose(0, 1)      # [B, H, Q, K]

        if key_angle is not None:                                           # [B, Q, K], 1 - cos
            tau = self.log_tau.exp().reshape(1, H, 1, 1)
            logits = logits - tau * key_angle.unsqueeze(1)                  # [B, H, Q, K]
        if key_depth is not None:
            w = self.depth_weight.reshape(1, H, 1, 1)
            logits = logits + w * key_depth.unsqueeze(1)                    # [B, H, Q, K]
        logits = logits + ((1.0 - key_valid) * MASK_VALUE).unsqueeze(1)    # [B, H, Q, K]
        attn = logits.softmax(dim=-1)                                       # [B, H, Q, K]

        out = attend_selected(attn, v, index, self.head_mask)              # [B, Q, D]
        if self.use_geometry:
            # where the attended rays pass relative to the cell (head-averaged attention)
            a_mean = attn.mean(dim=1)                                       # [B, Q, K]
            f_att = (key_geo * a_mean).sum(dim=-1)                          # [7, B, Q]
            out = out + self.geo_value(f_att.permute(1, 2, 0))              # [B, Q, D]
        return self.proj(out)                                               # [B, Q, D]


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

    def forward(self, query, tokens, token_mask, index, key_valid, key_geo, key_angle=None,
                key_depth=None) -> Tensor:
        x = query + self.attn(self.norm_q(query), self.norm_kv(tokens), token_mask, index,
                              key_valid, key_geo, key_angle, key_depth)     # [B, Q, D]
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
