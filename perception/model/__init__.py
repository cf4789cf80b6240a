"""The BEV ViT: patches, camera-aware embeddings, per-view blocks, geometric cross-view
attention onto a BEV grid, CenterPoint head and in-graph decode.

Files: config.py (ModelConfig, YAML), embed.py (patches, rays, BEV queries), attention.py
(Mlp/Attention/Block), bev.py (top-K cross-view attention, BEV blocks), head.py, decode.py
(targets and decode), vit.py (BEVViT), weights.py (safetensors, counts), cpu_tuning.py,
bench.py (`python -m perception.commands.model_bench`). The model-input contract (names, resize,
calibration inputs, example inputs) is perception/inputs.py.

Feeding the model (fusion node):

    model, cfg = load_model("engines/bev_vit")            # eval mode, safetensors only
    k_inv, T = calibration_inputs(rig, cfg)               # inv(cam.resized(W, H).K), T_ego_from_camera
    out = model(images,                                   # uint8 [B, N, H, W, 3] BGR, resized to
                                                          # (cfg.image_width, cfg.image_height)
                torch.from_numpy(k_inv)[None],            # float32 [B, N, 3, 3]
                torch.from_numpy(T)[None],                # float32 [B, N, 4, 4]
                camera_mask)                              # float32 [B, N], 1 present / 0 missing

- Camera order is the rig's order, the same for all four inputs.
- A missing camera: set its mask to 0; its pixels and calibration may be anything (zeros, the
  last frame, even NaN calibration): they never reach the output. All cameras missing gives a
  finite, empty-ish result.
- Outputs: heatmap [B, C, Hb, Wb] sigmoid probabilities, regression [B, 10, Hb, Wb],
  det_boxes [B, K, 9] = (x, y, z, l, w, h, yaw, vx, vy) in the ego frame (x forward, y left,
  z up; yaw about +z from +x), det_scores [B, K] sorted descending (non-peaks have score 0:
  threshold them), det_labels [B, K] int64 into cfg.classes.
- BEV orientation: heatmap[..., i, j] is the cell centred at x = x_min + (i + 0.5) * cell,
  y = y_min + (j + 0.5) * cell (rows along x, columns along y); decode.bev_cell_centers(cfg).
- Everything that depends on calibration only (rays, top-K keys) is BEVViT.geometry(); a
  runtime may compute it once per (calibration, camera mask) and call forward_features().
- CPU: call cpu_tuning.tune_cpu_allocator() once at process start (glibc keeps large freed
  blocks instead of page-faulting them in again: ~1.5x faster here).
- ONNX: torch.onnx.export(model, inputs, path, input_names=INPUT_NAMES,
  output_names=OUTPUT_NAMES, opset_version=17) under torch.no_grad(); batch may be a dynamic
  axis. Ops: MatMul/Gemm, Softmax, LayerNormalization, Erf, Relu, Conv, MaxPool, TopK, Gather,
  GatherElements, Where, Atan, elementwise - no NonZero, no inverse, no control flow.
"""
from perception.inputs import INPUT_NAMES, OUTPUT_NAMES, calibration_inputs, example_inputs
from perception.model.config import ModelConfig, load_model_config, save_model_config
from perception.model.decode import REGRESSION_CHANNELS, bev_cell_centers, decode, encode_targets
from perception.model.vit import BEVViT
from perception.model.weights import WeightsError, count_parameters, flops_per_frameset, load_model, save_model

__all__ = ["ModelConfig", "load_model_config", "save_model_config", "BEVViT", "decode",
           "bev_cell_centers", "encode_targets", "REGRESSION_CHANNELS", "INPUT_NAMES", "OUTPUT_NAMES",
           "save_model", "load_model", "count_parameters", "flops_per_frameset", "WeightsError",
           "calibration_inputs", "example_inputs"]
