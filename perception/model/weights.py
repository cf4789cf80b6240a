"""Saving and loading models (safetensors only, never pickle), parameter and FLOP counts.

A model directory holds:
    config.yaml          ModelConfig (config.py), decides every tensor shape
    model.safetensors    the state dict (weights only; buffers derived from the config are not saved)
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from perception.config import ConfigError
from perception.model.config import ModelConfig, load_model_config, save_model_config
from perception.model.decode import REGRESSION_CHANNELS

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"


class WeightsError(ConfigError):
    """Weights missing or not matching their config; the message says which tensors."""


def save_model(model: nn.Module, cfg: ModelConfig, directory) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_model_config(cfg, directory / CONFIG_FILE)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt", "model": cfg.name})


def load_model(directory, *, allow_random_init: bool = False, seed: int = 0):
    """-> (BEVViT in eval mode, ModelConfig). Reads config.yaml and model.safetensors; with
    allow_random_init and no weights file, a seeded random init (logged as a warning)."""
    from perception.model.vit import BEVViT

    directory = Path(directory)
    cfg = load_model_config(directory / CONFIG_FILE)
    weights = directory / WEIGHTS_FILE
    with torch.random.fork_rng(devices=[]):       # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        model = BEVViT(cfg)
    if weights.exists():
        try:
            state = load_file(str(weights), device="cpu")
        except Exception as e:  # safetensors raises its own error types
            raise WeightsError(f"{weights}: not a readable safetensors file ({e})") from None
        load_state_dict_checked(model, state, str(weights))
    elif allow_random_init:
        log.warning("%s does not exist: using a RANDOM initialisation (seed %d); detections are "
                    "meaningless until a trained model is installed", weights, seed)
    else:
        raise WeightsError(f"{weights} does not exist (train a model, or allow a random init for testing)")
    model.eval()
    return model, cfg


def load_state_dict_checked(model: nn.Module, state: dict, where: str = "weights") -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs config {tuple(v.shape)}"
                  for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    if mismatched:
        problems.append("shape mismatch " + "; ".join(mismatched[:8]) + (" ..." if len(mismatched) > 8 else ""))
    if problems:
        raise WeightsError(f"{where} does not match its config.yaml: " + " | ".join(problems))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _num_tokens(cfg: ModelConfig) -> int:
    return cfg.num_cameras * cfg.tokens_per_view


def flops_per_frameset(cfg: ModelConfig) -> int:
    """Analytic FLOPs (2 x multiply-adds) of one forward pass on one frame set (batch 1): the
    work the model needs, which `perception bench` divides by the time to get a share of the
    GEMM peak.

    Counts every matrix product: linear layers, attention score and value products, the
    depthwise convs, the geometric score (cosine) matmul and the relative-geometry MLP (the last
    two are calibration-only work that a runtime may cache, counted anyway). Cross-view content
    logits and values count only the K selected keys per cell: a backend that computes the
    dense [Q, N*T] product (the ONNX graph does) spends more than this, and that extra shows as
    a lower share. Does not count elementwise ops, normalisations, softmax, GELU, TopK/Gather or
    decode (memory-bound, not FLOPs in the usual sense).
    """
    N, T, D, P, H = cfg.num_cameras, cfg.tokens_per_view, cfg.dim, cfg.patch_size, cfg.heads
    Q, K, G, C = cfg.num_bev_queries, cfg.topk, cfg.geo_hidden, cfg.num_classes
    mlp = int(D * cfg.mlp_ratio)
    bev_mlp = int(D * cfg.bev_mlp_ratio)
    pos = cfg.use_position_embedding
    if cfg.patch_stem == "conv":                                      # stride-2 3x3 convs, 1x1 proj
        from perception.model.embed import stem_channels

        macs, cin, h, w = 0, 3, cfg.image_height, cfg.image_width
        for cout in stem_channels(cfg):
            h, w = (h + 1) // 2, (w + 1) // 2
            macs += N * h * w * 9 * cin * cout
            cin = cout
        macs += N * T * cin * D
    else:
        macs = N * T * P * P * 3 * D                                  # patch embedding
    if pos:
        macs += N * T * (6 * 64 + 64 * D)                             # ray embedding MLP
        macs += Q * (18 * 64 + 64 * D)                                # BEV query MLP
    macs += cfg.view_depth * N * (T * (4 * D * D + 2 * D * mlp)       # qkv, proj, MLP
                                  + 2 * T * T * D)                    # q k^T and attn v
    macs += N * Q * N * T * 3                                         # geometric scores (block-diagonal)
    macs += Q * D * D + N * T * 2 * D * D + Q * D * D                 # q, kv, out projections
    macs += Q * K * D                                                 # q k^T: the K selected keys per cell
    if cfg.token_depth:
        macs += _num_tokens(cfg) * D * 2                              # token depth head (pairs: elementwise)
    macs += Q * K * D                                                 # attn v: per head [K] @ [K, D / H] per cell
    if pos:
        macs += Q * K * 7 * G + Q * K * G * H                         # geometric attention bias MLP
        macs += Q * K * 7 + Q * 7 * D                                 # attended geometry -> value
    macs += Q * 2 * D * bev_mlp                                       # cross block MLP
    macs += cfg.bev_depth * Q * (D * cfg.bev_kernel ** 2 + 2 * D * bev_mlp)
    macs += Q * (2 * D * cfg.head_hidden + cfg.head_hidden * (C + len(REGRESSION_CHANNELS)))
    return 2 * macs
