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
import warnings

import torch
from torch import Tensor, nn

from perception.model.attention import MASK_VALUE, Mlp
from perception.model.config import ModelConfig
from perception.model.decode import bev_cell_centers

_INVALID = -5.0e3        # a selected key scoring below this comes from a masked camera
# content_logits builds a sparse CSR pattern per forward (eager inference); torch warns once per
# process that sparse CSR is "beta", which says nothing about this use
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


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


def _exporting() -> bool:
    """True while tracing for ONNX (TorchScript tracer or the ONNX exporter): the graph must keep
    its TensorRT-native Gather/MatMul form."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _compiling() -> bool:
    """True while torch.export / torch.compile traces the model (the Inductor package)."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()


def bag_index(index: Tensor, heads: int, num_tokens: int) -> Tensor:
    """index [B, Q, K] into S -> [B, Q, H, K] rows of the per-head value table [B*S*H, D/H]
    (values [B, S, D] viewed without a copy): row (b*S + index) * H + h. Calibration-only
    (BEVViT.geometry caches it)."""
    B = index.shape[0]
    offs = (torch.arange(B, device=index.device) * num_tokens).reshape(B, 1, 1)
    h = torch.arange(heads, device=index.device).reshape(1, 1, heads, 1)
    return ((index + offs) * heads).unsqueeze(2) + h


def _attend_bag(attn: Tensor, values: Tensor, bag: Tensor) -> Tensor:
    """attend_selected as one weighted-sum EmbeddingBag: each (cell, head) sums its K value rows
    of head_dim channels times their attention weights, reading the small value table from
    cache; the [B, Q, K, D] gathered values are never written (memory-bound: half the cross
    attention's time). Inference only (no custom backward; not an ONNX/TensorRT-native op)."""
    B, H, Q, K = attn.shape
    D = values.shape[-1]
    table = values.reshape(-1, D // H)                                      # [B*S*H, hd], a view
    w = attn.transpose(1, 2).reshape(B * Q * H, K)                          # [B*Q*H, K]
    out = torch.nn.functional.embedding_bag(bag.reshape(B * Q * H, K), table, mode="sum",
                                            per_sample_weights=w)          # [B*Q*H, hd]
    return out.reshape(B, Q, D)


def attend_selected(attn: Tensor, values: Tensor, index: Tensor, head_mask: Tensor,
                    bag: Tensor | None = None) -> Tensor:
    """out[b, q, channels of head h] = sum_k attn[b, h, q, k] * values[b, index[b, q, k], same channels].

    attn [B, H, Q, K]; values [B, S, D]; index [B, Q, K] into S (distinct within a row);
    head_mask [H, D] 0/1 (channel d belongs to head h); bag: bag_index(index, H, S) or None
    -> [B, Q, D]. Exports as Gather + MatMul + Mul + ReduceSum; with a gradient the custom
    backward; otherwise (eager inference and the Inductor package) one weighted EmbeddingBag."""
    if _exporting():
        return _attend_selected(attn, values, index, head_mask)
    if torch.is_grad_enabled() and (attn.requires_grad or values.requires_grad):
        return _AttendSelected.apply(attn, values.contiguous(), index, head_mask)
    if bag is None:
        bag = bag_index(index, attn.shape[1], values.shape[1])
    return _attend_bag(attn, values.contiguous(), bag)


def content_logits(qh: Tensor, k: Tensor, index: Tensor) -> Tensor:
    """logits[b, h, q, j] = qh[b, h, q] . (head h's channels of k[b, index[b, q, j]]).

    qh [Bq, H, Q, hd] (Bq = 1 or B, scaled queries); k [B, S, D]; index [B, Q, K] into S
    -> [B, H, Q, K]. Exported (ONNX) and with a gradient: one dense [Q, S] product per head and
    GatherElements of the K selected columns. Eager inference: the K dot products per (cell,
    head) alone (sampled_addmm on a CSR pattern of the selected columns), 1/27 of the dense
    product's work and no [B, H, Q, S] matrix written. Compiled (Inductor): a gather-multiply-sum
    that Inductor fuses into one loop over the selected key rows."""
    B, S, D = k.shape
    Bq, H, Q, hd = qh.shape
    K = index.shape[-1]
    needs_grad = torch.is_grad_enabled() and (qh.requires_grad or k.requires_grad)
    if _exporting() or needs_grad:
        kh = k.reshape(B, S, H, hd).permute(0, 2, 3, 1)                     # [B, H, hd, S]
        dense = qh @ kh                                                     # [B, H, Q, S]
        return torch.gather(dense, 3, index.unsqueeze(1).expand(B, H, Q, K))
    if _compiling() or qh.dtype != torch.float32 or k.dtype != torch.float32:
        # Inductor fuses this gather-multiply-sum into one loop; it is also the eager path under
        # autocast (sampled_addmm has no CPU bf16 kernel), computed as the exported matmul would:
        # both operands in the autocast dtype
        if torch.is_autocast_enabled(qh.device.type):
            dtype = torch.get_autocast_dtype(qh.device.type)
            qh, k = qh.to(dtype), k.to(dtype)
        offs = (torch.arange(B, device=index.device) * S).reshape(B, 1, 1)
        ksel = k.reshape(B * S, H, hd)[index + offs]                        # [B, Q, K, H, hd]
        q5 = qh.permute(0, 2, 1, 3).reshape(Bq, Q, 1, H, hd)
        return (ksel * q5).sum(-1).permute(0, 3, 1, 2)                      # [B, H, Q, K]
    qb = qh.expand(B, H, Q, hd).reshape(B * H, Q, hd)
    kb = k.reshape(B, S, H, hd).permute(0, 2, 3, 1).reshape(B * H, hd, S)
    crow = torch.arange(0, (Q + 1) * K, K, device=index.device).expand(B * H, Q + 1)
    col = index.reshape(B, 1, Q * K).expand(B, H, Q * K).reshape(B * H, Q * K)
    pattern = torch.sparse_csr_tensor(crow, col, qb.new_zeros(B * H, Q * K), size=(B * H, Q, S),
                                      check_invariants=False)
    out = torch.sparse.sampled_addmm(pattern, qb, kb, beta=0.0)
    return out.values().reshape(B, H, Q, K)


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
    head_mask: Tensor        # [H, D] buffer

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

    def logit_bias(self, key_geo: Tensor | None, key_angle: Tensor | None) -> Tensor | None:
        """The logit terms that depend on geometry and weights only, not on pixels: the
        geometry MLP's per-head bias minus tau * (1 - cos) -> [B, H, Q, K], or None when the
        model has neither. BEVViT.geometry computes it once per calibration (`logit_bias`)."""
        bias = None
        if self.use_geometry and key_geo is not None:
            _, B, Q, K = key_geo.shape
            H = self.heads
            f = key_geo.reshape(GEO_FEATURES, B * Q * K)
            h = torch.relu(torch.addmm(self.geo.bias.unsqueeze(1), self.geo.weight, f))   # [G, B*Q*K]
            bias = torch.addmm(self.geo_bias.bias.unsqueeze(1), self.geo_bias.weight, h)  # [H, B*Q*K]
            bias = bias.reshape(H, B, Q, K).transpose(0, 1)                 # [B, H, Q, K]
        if key_angle is not None:                                           # [B, Q, K], 1 - cos
            tau = self.log_tau.exp().reshape(1, self.heads, 1, 1)
            angle = tau * key_angle.unsqueeze(1)
            bias = -angle if bias is None else bias - angle
        return bias

    def forward(self, query: Tensor, tokens: Tensor, token_mask: Tensor, index: Tensor,
                key_valid: Tensor, key_geo: Tensor | None, key_angle: Tensor | None = None,
                key_depth: Tensor | None = None, logit_bias: Tensor | None = None) -> Tensor:
        # query [Bq, Q, D] (Bq = 1 or B, normalised); tokens [B, S, D] normalised, S = N*T;
        # token_mask [B, S]; index [B, Q, K] into S; key_valid [B, Q, K] (1/0);
        # key_geo [7, B, Q, K] or None; key_angle, key_depth [B, Q, K] or None;
        # logit_bias [B, H, Q, K]: self.logit_bias(key_geo, key_angle) cached, or None
        B, S, D = tokens.shape
        Q = index.shape[1]
        H, hd = self.heads, self.head_dim

        q = self.q(query) * self.scale                                      # [Bq, Q, D]
        # keys/values of every token; a missing camera's keys and values are zeroed
        kv = self.kv(tokens) * token_mask.unsqueeze(-1)                     # [B, S, 2D]
        k, v = kv[..., :D], kv[..., D:]

        # content logits of the K selected keys of every cell (see content_logits)
        qh = q.reshape(-1, Q, H, hd).transpose(1, 2)                        # [Bq, H, Q, hd]
        logits = content_logits(qh, k, index)                               # [B, H, Q, K]

        if logit_bias is None:
            logit_bias = self.logit_bias(key_geo, key_angle)
        if logit_bias is not None:
            logits = logits + logit_bias                                    # [B, H, Q, K]
        if key_depth is not None:
            w = self.depth_weight.reshape(1, H, 1, 1)
            logits = logits + w * key_depth.unsqueeze(1)                    # [B, H, Q, K]
        logits = logits + ((1.0 - key_valid) * MASK_VALUE).unsqueeze(1)    # [B, H, Q, K]
        attn = logits.softmax(dim=-1)                                       # [B, H, Q, K]

        out = attend_selected(attn, v, index, self.head_mask)              # [B, Q, D]
        if self.use_geometry and key_geo is not None:
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
                key_depth=None, logit_bias=None) -> Tensor:
        x = query + self.attn(self.norm_q(query), self.norm_kv(tokens), token_mask, index,
                              key_valid, key_geo, key_angle, key_depth, logit_bias)  # [B, Q, D]
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
