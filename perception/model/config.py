"""ModelConfig: every size of the BEV ViT, saved next to the weights as YAML.

A model directory holds `config.yaml` (this dataclass) and `model.safetensors`; the config
alone decides every tensor shape, so a checkpoint and its config can always be checked
against each other (see weights.py).

Sizes (the budget: train from scratch on 2 CPU cores in < 45 min, run >= 20
six-camera frame sets/s on 2 cores, ~1-2 GFLOP per frame set, < 1.5 M parameters):

- 72x128 input, 8x8 patches -> 9x16 = 144 tokens per view, 864 over 6 views.
- dim 128, 4 heads of 32: on a CPU, fp32 matmuls at width 64 run far below the GEMM peak
  (README, "The model"), so 128 costs little more wall time than 64 and doubles capacity.
- view_depth 2 with mlp_ratio 4: ~0.8 GFLOP, the largest share. The BEV side works on 1600
  cells (more than the 864 image tokens), so its MLPs use bev_mlp_ratio 2.
- one geometric top-K cross-attention layer (K = 32 keys per cell). What a CPU
  pays for is memory traffic per (cell, key) pair (51 200 pairs per frame set), not FLOPs, so
  the pair-wise work is kept narrow: geo_hidden 32 channels for the geometric bias MLP, the raw
  7 geometry features for the value term, content logits from one dense GEMM (+0.35 GFLOP but
  no per-pair key rows).
- bev_depth 2 ConvNeXt-style refinement blocks (depthwise 5x5 + pointwise MLP): a 9x9-cell
  (14 m) receptive field for clean heatmap peaks.
- token_depth: a 2-channel head per token (Laplace mean and scale of log distance) and one
  log-likelihood per (cell, key) pair: ~0 FLOPs (depth.py).
- Parameter count and FLOPs: weights.count_parameters / weights.flops_per_frameset; measured
  speed in the README.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from perception.boxes import CLASSES
from perception.config import ConfigError, read_yaml


@dataclass(frozen=True)
class ModelConfig:
    name: str = "bev_vit"
    classes: tuple[str, ...] = CLASSES          # names, in label order (perception.boxes)
    num_cameras: int = 6
    image_height: int = 72        # model input per view (the node resizes 320x180 frames to this)
    image_width: int = 128
    patch_size: int = 8
    # "conv": a strided 3x3 conv stem makes each patch token (one stride-2 layer per factor 2 of
    # patch_size; Xiao et al. 2021, "Early convolutions help transformers see better": far
    # faster optimisation than a linear patchify, which on a 45-minute CPU budget decides
    # everything). "linear": the original ViT patchify (reshape + Linear).
    patch_stem: str = "conv"
    stem_width: int = 32          # channels of the first stem conv; doubled per layer, capped at dim
    dim: int = 128                # token width (see module docstring)
    heads: int = 4
    view_depth: int = 2           # self-attention blocks per view, weights shared across views
    bev_x_range: tuple[float, float] = (-32.0, 32.0)   # metres, ego frame
    bev_y_range: tuple[float, float] = (-32.0, 32.0)
    bev_cells: int = 40           # bev_cells x bev_cells grid
    bev_query_height: float = 0.8 # metres: height of the point each BEV query looks at
    topk: int = 32                # keys per BEV query, chosen by geometry across all cameras
    bev_depth: int = 2            # refinement blocks on the BEV grid
    max_detections: int = 100
    # Initial sharpness (per head, learned) of a geometric attention prior: logit -= tau *
    # (1 - cos angle between a key's ray and the direction to the cell). 0 = off. It starts
    # each cell looking at the keys whose rays pass through it, instead of an average of 32.
    geometric_prior: float = 100.0
    # Tokens predict the distance of what they see (depth.py) and each cell weighs its keys by
    # how well that matches its own distance from the key's camera: picks the right cell along
    # a viewing ray. Needs use_position_embedding (the pair distance is relative geometry).
    token_depth: bool = True
    # ablation switches
    # False: no patch position, no ray embedding, no BEV position, no relative geometry on keys
    use_position_embedding: bool = True
    cross_view: bool = True               # False: each BEV cell sees only the single camera it projects best into
    # secondary sizes (defaults are the budgeted model)
    mlp_ratio: float = 4.0        # view blocks
    bev_mlp_ratio: float = 2.0    # cross-attention MLP and BEV refinement blocks
    geo_hidden: int = 32          # hidden width of the geometric attention-bias MLP per (cell, key) pair
    bev_kernel: int = 5           # depthwise kernel of the BEV refinement blocks
    head_hidden: int = 64         # hidden width of each CenterPoint head branch

    # ---- derived sizes ------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def grid_h(self) -> int:      # patches per view, vertically
        return self.image_height // self.patch_size

    @property
    def grid_w(self) -> int:
        return self.image_width // self.patch_size

    @property
    def tokens_per_view(self) -> int:
        return self.grid_h * self.grid_w

    @property
    def num_bev_queries(self) -> int:
        return self.bev_cells * self.bev_cells

    @property
    def cell_size(self) -> tuple[float, float]:
        """(metres per cell along x, along y)."""
        return ((self.bev_x_range[1] - self.bev_x_range[0]) / self.bev_cells,
                (self.bev_y_range[1] - self.bev_y_range[0]) / self.bev_cells)

    def __post_init__(self):
        validate_model_config(self)


def validate_model_config(cfg: ModelConfig, where: str = "model config") -> None:
    def bad(msg):
        raise ConfigError(f"{where}: {msg}")

    if not cfg.classes:
        bad("classes must not be empty")
    if len(set(cfg.classes)) != len(cfg.classes):
        bad(f"duplicate class names in {list(cfg.classes)}")
    for key in ("num_cameras", "image_height", "image_width", "patch_size", "dim", "heads",
                "bev_cells", "topk", "max_detections", "geo_hidden", "head_hidden", "bev_kernel"):
        if getattr(cfg, key) < 1:
            bad(f"{key} must be >= 1, got {getattr(cfg, key)}")
    for key in ("view_depth", "bev_depth"):
        if getattr(cfg, key) < 0:
            bad(f"{key} must be >= 0, got {getattr(cfg, key)}")
    if cfg.image_height % cfg.patch_size or cfg.image_width % cfg.patch_size:
        bad(f"image {cfg.image_width}x{cfg.image_height} is not a multiple of patch_size {cfg.patch_size}")
    if cfg.dim % cfg.heads:
        bad(f"dim {cfg.dim} is not divisible by heads {cfg.heads}")
    if cfg.patch_stem not in ("conv", "linear"):
        bad(f"patch_stem must be 'conv' or 'linear', got {cfg.patch_stem!r}")
    if cfg.patch_stem == "conv" and (cfg.patch_size & (cfg.patch_size - 1) or cfg.patch_size < 2):
        bad(f"patch_stem 'conv' needs a power-of-two patch_size >= 2, got {cfg.patch_size}")
    if cfg.bev_kernel % 2 == 0:
        bad(f"bev_kernel must be odd, got {cfg.bev_kernel}")
    for key in ("bev_x_range", "bev_y_range"):
        lo, hi = getattr(cfg, key)
        if not hi > lo:
            bad(f"{key} must be (low, high) with high > low, got {(lo, hi)}")
    if cfg.topk > cfg.tokens_per_view:
        # cross_view=False restricts a cell to one camera's tokens, so K must fit in one view
        bad(f"topk {cfg.topk} exceeds the {cfg.tokens_per_view} tokens of one view")
    if cfg.max_detections > cfg.num_classes * cfg.num_bev_queries:
        bad(f"max_detections {cfg.max_detections} exceeds classes x cells")
    if cfg.token_depth and not cfg.use_position_embedding:
        bad("token_depth needs use_position_embedding (it compares a token's depth with the "
            "cell's distance from the token's camera); set token_depth=false as well")
    if cfg.mlp_ratio <= 0 or cfg.bev_mlp_ratio <= 0:
        bad("mlp ratios must be positive")


_TUPLE_FIELDS = {"classes", "bev_x_range", "bev_y_range"}

# Fields added after models had been saved, with the value that rebuilds those older models.
# save_model_config writes every field, so a file holding all other fields but not these is a
# saved model from before they existed (partial override files keep the current defaults).
ADDED_LATER = {"token_depth": False}


def model_config_from_dict(data, where: str = "model config") -> ModelConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(ModelConfig)}
    unknown = set(data) - set(known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    if set(known) - set(data) <= set(ADDED_LATER):
        data = {**ADDED_LATER, **data}
    kw = {}
    defaults = ModelConfig.__dataclass_fields__
    for key, value in data.items():
        default = defaults[key].default
        try:
            if key in _TUPLE_FIELDS:
                if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                    raise TypeError("expected a list")
                value = tuple(str(v) for v in value) if key == "classes" else tuple(float(v) for v in value)
                if key != "classes" and len(value) != 2:
                    raise ValueError("expected [low, high]")
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise TypeError("expected true or false")
            elif isinstance(default, int):
                if isinstance(value, bool) or int(value) != value:
                    raise TypeError("expected an integer")
                value = int(value)
            elif isinstance(default, float):
                if isinstance(value, bool):
                    raise TypeError("expected a number")
                value = float(value)
            elif isinstance(default, str):
                value = str(value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}.{key}: {e} (got {value!r})") from None
        kw[key] = value
    try:
        return ModelConfig(**kw)
    except ConfigError as e:
        raise ConfigError(str(e).replace("model config", where, 1)) from None


def load_model_config(path) -> ModelConfig:
    return model_config_from_dict(read_yaml(path, "model config"), str(path))


def model_config_to_dict(cfg: ModelConfig) -> dict:
    out = {}
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def save_model_config(cfg: ModelConfig, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(model_config_to_dict(cfg), sort_keys=False))


def replace_config(cfg: ModelConfig, **changes) -> ModelConfig:
    """A copy of cfg with some fields changed (validated like a loaded config)."""
    return dataclasses.replace(cfg, **changes)
