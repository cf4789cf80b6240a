"""The BEV ViT: shapes, missing cameras, calibration as an input, ablations, weights, ONNX."""
from __future__ import annotations

import logging
import math
import pickle

import numpy as np
import pytest
import torch

from perception.config import ConfigError, load_rig
from perception.geometry import camera_rotation, make_transform
from perception.model import (
    INPUT_NAMES,
    OUTPUT_NAMES,
    BEVViT,
    ModelConfig,
    WeightsError,
    count_parameters,
    flops_per_frameset,
    load_model,
    load_model_config,
    save_model,
    save_model_config,
)

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def cfg():
    return ModelConfig()


@pytest.fixture(scope="module")
def model(cfg):
    torch.manual_seed(0)
    return BEVViT(cfg).eval()


def make_inputs(cfg, batch=1, seed=0):
    from perception.inputs import example_inputs

    return example_inputs(cfg, batch, seed)


def run(model, *inputs):
    with torch.inference_mode():
        return model(*inputs)


def test_output_shapes_and_dtypes(cfg, model):
    out = run(model, *make_inputs(cfg, batch=2))
    C, n, k = cfg.num_classes, cfg.bev_cells, cfg.max_detections
    expected = {"heatmap": ((2, C, n, n), torch.float32), "regression": ((2, 10, n, n), torch.float32),
                "det_boxes": ((2, k, 9), torch.float32), "det_scores": ((2, k), torch.float32),
                "det_labels": ((2, k), torch.int64)}
    assert set(out) == set(expected) == set(OUTPUT_NAMES)
    for name, (shape, dtype) in expected.items():
        assert tuple(out[name].shape) == shape, name
        assert out[name].dtype == dtype, name
        assert torch.isfinite(out[name].float()).all(), name
    assert ((out["heatmap"] >= 0) & (out["heatmap"] <= 1)).all()
    assert (out["det_scores"][:, :-1] >= out["det_scores"][:, 1:]).all()
    assert ((out["det_labels"] >= 0) & (out["det_labels"] < C)).all()
    # freshly initialised heatmap sits near the focal-loss prior 0.1
    assert abs(out["heatmap"].mean().item() - 0.1) < 0.05


def test_training_path_runs_backward(cfg, model):
    model.train()
    try:
        out = model.forward_train(*make_inputs(cfg, batch=2))
        loss = out["heatmap_logits"].sigmoid().mean() + out["regression"].square().mean()
        loss.backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert model.patch_embed.proj.weight.grad.abs().sum() > 0
        assert model.cross.attn.geo.weight.grad.abs().sum() > 0
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_training_under_bf16_autocast(cfg, model):
    model.train()
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.forward_train(*make_inputs(cfg, batch=1))
        loss = out["heatmap_logits"].float().sigmoid().mean() + out["regression"].float().square().mean()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


@pytest.mark.parametrize("missing", [[1], [0, 3]])
def test_missing_camera_pixels_never_reach_the_output(cfg, model, missing):
    images, k_inv, t, mask = make_inputs(cfg, batch=2)
    mask[:, missing] = 0.0
    ref = run(model, images, k_inv, t, mask)
    noisy = images.clone()
    g = torch.Generator().manual_seed(7)
    noisy[:, missing] = torch.randint(0, 256, noisy[:, missing].shape, dtype=torch.uint8, generator=g)
    # garbage calibration of a missing camera must not matter either
    k_bad, t_bad = k_inv.clone(), t.clone()
    k_bad[:, missing] = float("nan")
    t_bad[:, missing] = 1e6
    out = run(model, noisy, k_bad, t_bad, mask)
    for name in OUTPUT_NAMES:
        assert torch.equal(out[name], ref[name]), name
    # and the mask matters: with the camera present the noise changes the output
    present = run(model, noisy, k_inv, t, torch.ones_like(mask))
    assert not torch.allclose(present["heatmap"], ref["heatmap"])


def test_all_cameras_missing_is_finite(cfg, model):
    images, k_inv, t, mask = make_inputs(cfg)
    out = run(model, images, k_inv, t, torch.zeros_like(mask))
    for name in OUTPUT_NAMES:
        assert torch.isfinite(out[name].float()).all(), name
    other = run(model, torch.randint(0, 256, images.shape, dtype=torch.uint8), k_inv, t, torch.zeros_like(mask))
    assert torch.equal(out["heatmap"], other["heatmap"])   # no pixel reaches the output


def test_calibration_is_an_input(cfg, model):
    images, k_inv, t, mask = make_inputs(cfg)
    ref = run(model, images, k_inv, t, mask)
    # turn the front camera 10 degrees to the left
    t2 = t.clone()
    rot = torch.from_numpy(make_transform(camera_rotation(math.radians(10.0)), t[0, 0, :3, 3].numpy())).float()
    t2[0, 0] = rot
    moved = run(model, images, k_inv, t2, mask)
    assert not torch.allclose(moved["heatmap"], ref["heatmap"], atol=1e-6)
    # a different focal length
    k2 = k_inv.clone()
    k2[0, :, 0, 0] *= 1.2
    zoomed = run(model, images, k2, t, mask)
    assert not torch.allclose(zoomed["heatmap"], ref["heatmap"], atol=1e-6)


def test_geometric_selection_picks_the_camera_that_sees_the_cell(cfg, model):
    _, k_inv, t, mask = make_inputs(cfg)
    geo = model.geometry(k_inv, t, mask)
    T = cfg.tokens_per_view
    n = cfg.bev_cells
    cams = geo["index"][0] // T                                   # [Q, K]
    # cell straight ahead (x = +20 m, y = 0) -> front camera (0); straight behind -> back (3)
    def cell(x, y):
        i = int((x - cfg.bev_x_range[0]) / cfg.cell_size[0])
        j = int((y - cfg.bev_y_range[0]) / cfg.cell_size[1])
        return i * n + j
    assert (cams[cell(20.0, 0.0)] == 0).all()
    assert (cams[cell(-20.0, 0.0)] == 3).all()
    # a masked front camera is never selected
    mask2 = mask.clone()
    mask2[0, 0] = 0
    geo2 = model.geometry(k_inv, t, mask2)
    assert not (geo2["index"][0] // T == 0).any()
    assert bool((geo2["key_valid"] == 1).all())


def test_selected_tokens_contain_the_patch_the_cell_projects_into(cfg, model):
    """Checks the whole convention chain (K^-1 of the resized image, pixel centres, OpenCV camera
    frame, T_ego_from_camera) against perception.geometry.project_points."""
    from perception.geometry import project_points
    from perception.model.bev import bev_points

    rig = load_rig().resized(cfg.image_width, cfg.image_height)
    _, k_inv, t, mask = make_inputs(cfg)
    index = model.geometry(k_inv, t, mask)["index"][0]               # [Q, K]
    points = bev_points(cfg).numpy().astype(np.float64)
    checked = 0
    for n, cam in enumerate(rig.cameras):
        uv, depth = project_points(points, cam.K, cam.T_ego_from_camera)
        inside = (depth > 1.0) & (uv[:, 0] >= 0) & (uv[:, 0] < cfg.image_width - 0.5) \
            & (uv[:, 1] >= 0) & (uv[:, 1] < cfg.image_height - 0.5)
        for q in np.flatnonzero(inside)[::7]:
            r, c = int((uv[q, 1] + 0.5) // cfg.patch_size), int((uv[q, 0] + 0.5) // cfg.patch_size)
            token = n * cfg.tokens_per_view + r * cfg.grid_w + c
            assert token in index[q].tolist(), (cam.name, q, uv[q])
            checked += 1
    assert checked > 100


def test_ablation_flags_build_and_run(cfg):
    x = make_inputs(cfg)
    no_pos = {"use_position_embedding": False, "token_depth": False}
    for kw in (no_pos, {"cross_view": False}, {"token_depth": False}, {**no_pos, "cross_view": False}):
        c = ModelConfig(**kw)
        torch.manual_seed(0)
        m = BEVViT(c).eval()
        out = run(m, *x)
        assert out["heatmap"].shape == (1, c.num_classes, c.bev_cells, c.bev_cells)
        assert torch.isfinite(out["det_boxes"]).all()
        if not c.use_position_embedding:
            assert not hasattr(m, "pos_embed") and not hasattr(m, "ray_embed")
            assert not hasattr(m, "token_depth")
            assert not m.cross.attn.use_geometry
            names = [k for k, _ in m.named_parameters()]
            assert not any(k.startswith(("pos_embed", "ray_embed", "cross.attn.geo")) for k in names)
        if not c.cross_view:
            geo = m.geometry(*x[1:])
            cams = geo["index"][0] // c.tokens_per_view          # [Q, K]
            assert (cams == cams[:, :1]).all()                   # one camera per cell
            geo_x = BEVViT(ModelConfig()).geometry(*x[1:])
            many = geo_x["index"][0] // c.tokens_per_view
            assert (many != many[:, :1]).any(dim=1).sum() > 50   # cross-view cells exist by default


def test_parameter_and_flop_budget(cfg, model):
    assert count_parameters(model) < 1_500_000
    assert 1.0e9 < flops_per_frameset(cfg) < 3.0e9          # ~2.5 GFLOP with the conv stem
    assert flops_per_frameset(ModelConfig(use_position_embedding=False, token_depth=False)) < flops_per_frameset(cfg)


def test_config_yaml_round_trip_and_errors(tmp_path, cfg):
    path = tmp_path / "config.yaml"
    c = ModelConfig(dim=64, heads=2, classes=("car", "pedestrian"), cross_view=False)
    save_model_config(c, path)
    assert load_model_config(path) == c
    path.write_text(path.read_text() + "wdith: 3\n")
    with pytest.raises(ConfigError, match="wdith"):
        load_model_config(path)
    path.write_text("dim: 100\nheads: 3\n")
    with pytest.raises(ConfigError, match="divisible"):
        load_model_config(path)
    path.write_text("cross_view: maybe\n")
    with pytest.raises(ConfigError, match="cross_view"):
        load_model_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_model_config(tmp_path / "nope.yaml")


def test_save_load_round_trip_without_pickle(tmp_path, cfg, model, monkeypatch):
    save_model(model, cfg, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.yaml", "model.safetensors"]

    def no_pickle(*a, **k):
        raise AssertionError("pickle used while loading a model")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    loaded, cfg2 = load_model(tmp_path / "m")
    monkeypatch.undo()
    assert cfg2 == cfg and not loaded.training
    x = make_inputs(cfg, seed=3)
    a, b = run(model, *x), run(loaded, *x)
    for name in OUTPUT_NAMES:
        assert torch.equal(a[name], b[name]), name


def test_load_errors_and_random_init(tmp_path, cfg, model, caplog):
    save_model(model, cfg, tmp_path / "m")
    # a config that no longer matches the weights
    save_model_config(ModelConfig(dim=64), tmp_path / "m" / "config.yaml")
    with pytest.raises(WeightsError, match="shape mismatch"):
        load_model(tmp_path / "m")
    # no weights: an error unless a random init is allowed, then seeded and logged
    save_model_config(cfg, tmp_path / "empty" / "config.yaml")
    with pytest.raises(WeightsError, match="does not exist"):
        load_model(tmp_path / "empty")
    with caplog.at_level(logging.WARNING):
        m1, _ = load_model(tmp_path / "empty", allow_random_init=True, seed=5)
    assert "RANDOM" in caplog.text
    m2, _ = load_model(tmp_path / "empty", allow_random_init=True, seed=5)
    for (k, v1), (_, v2) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(v1, v2), k


def test_custom_value_backward_matches_autograd():
    from perception.model.bev import _attend_selected, _AttendSelected

    g = torch.Generator().manual_seed(0)
    B, H, Q, K, D, S = 2, 4, 5, 3, 8, 7
    attn = torch.randn(B, H, Q, K, dtype=torch.float64, generator=g).requires_grad_()
    values = torch.randn(B, S, D, dtype=torch.float64, generator=g).requires_grad_()
    index = torch.stack([torch.randperm(S, generator=g)[:K] for _ in range(B * Q)]).reshape(B, Q, K)
    mask = torch.zeros(H, D, dtype=torch.float64)
    for h in range(H):
        mask[h, 2 * h:2 * h + 2] = 1
    assert torch.autograd.gradcheck(lambda a, v: _AttendSelected.apply(a, v, index, mask), (attn, values))
    assert torch.equal(_AttendSelected.apply(attn, values, index, mask), _attend_selected(attn, values, index, mask))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_export_matches_pytorch(tmp_path, cfg, model):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    onnx = pytest.importorskip("onnx", reason="onnx is not installed")
    x = make_inputs(cfg, seed=1)
    x[3][0, 4] = 0.0                                  # one camera missing
    path = tmp_path / "bev_vit.onnx"
    with torch.no_grad():
        torch.onnx.export(model, x, str(path), input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                          opset_version=17, dynamo=False)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    graph = proto.graph
    ops = {n.op_type for n in graph.node}
    forbidden = {"NonZero", "Inverse", "Loop", "If", "Scan", "ScatterND", "Einsum", "EyeLike"}
    assert not ops & forbidden, ops & forbidden
    assert {"TopK", "Softmax", "MatMul", "MaxPool"} <= ops
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    outs = dict(zip(OUTPUT_NAMES, sess.run(None, {n: v.numpy() for n, v in zip(INPUT_NAMES, x)})))
    ref = run(model, *x)
    np.testing.assert_allclose(outs["heatmap"], ref["heatmap"].numpy(), atol=1e-4)
    np.testing.assert_allclose(outs["regression"], ref["regression"].numpy(), atol=1e-4)
    np.testing.assert_allclose(outs["det_scores"], ref["det_scores"].numpy(), atol=1e-4)
