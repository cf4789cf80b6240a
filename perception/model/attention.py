"""Transformer building blocks, timm style, written for a clean ONNX/TensorRT export.

Attention is explicit MatMul -> Softmax -> MatMul (no F.scaled_dot_product_attention, no
nn.MultiheadAttention), masks are additive floats, never booleans or -inf.
"""
from __future__ import annotations

from torch import Tensor, nn

MASK_VALUE = -1.0e4   # additive mask: exp(-1e4) underflows to exactly 0 in fp32 and stays finite in fp16


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out or dim)

    def forward(self, x: Tensor) -> Tensor:          # [..., dim] -> [..., out]
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention over a token sequence."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        assert dim % heads == 0
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:          # x [B, T, D]
        B, T, D = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]             # [B, h, T, hd]
        attn = (q * self.scale) @ k.transpose(-2, -1)  # [B, h, T, T]
        attn = attn.softmax(dim=-1)
        out = attn @ v                               # [B, h, T, hd]
        out = out.transpose(1, 2).reshape(B, T, D)
        return self.proj(out)


class Block(nn.Module):
    """Pre-norm ViT block: x + Attn(LN(x)); x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:          # [B, T, D]
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x
