"""The BEV ViT: patches, camera-aware embeddings, per-view blocks, geometric cross-view
attention onto a BEV grid, CenterPoint head and in-graph decode."""
from perception.model.config import ModelConfig, load_model_config, save_model_config
from perception.model.decode import REGRESSION_CHANNELS, bev_cell_centers, decode, encode_targets
from perception.model.vit import INPUT_NAMES, OUTPUT_NAMES, BEVViT
from perception.model.weights import (WeightsError, count_parameters, flops_per_frameset, load_model,
                                      save_model)

__all__ = ["ModelConfig", "load_model_config", "save_model_config", "BEVViT", "decode",
           "bev_cell_centers", "encode_targets", "REGRESSION_CHANNELS", "INPUT_NAMES", "OUTPUT_NAMES",
           "save_model", "load_model", "count_parameters", "flops_per_frameset", "WeightsError"]
