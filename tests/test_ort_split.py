"""ONNX Runtime on the split pair (geometry.onnx once per calibration, features.onnx every frame)
against the single full graph, on the shipped weights: same outputs within the FP32 parity bound,
geometry recomputed only when the calibration or the camera mask changes."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from perception.config import DEFAULT_MODEL_DIR, load_rig
from perception.model.weights import CONFIG_FILE, WEIGHTS_FILE
from perception.runtime.parity import FP32_HEATMAP_ATOL, compare_outputs

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[onnx]')")
pytest.importorskip("onnx", reason="the onnx package is not installed (pip install -e '.[onnx]')")

if not (DEFAULT_MODEL_DIR / WEIGHTS_FILE).exists():
    pytest.skip("no shipped weights", allow_module_level=True)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The shipped config and weights, copied so that the exports land in a temporary folder."""
    d = tmp_path_factory.mktemp("model") / "bev_vit"
    d.mkdir()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        shutil.copy(DEFAULT_MODEL_DIR / name, d / name)
    return d


@pytest.fixture(scope="module")
def cfg(model_dir):
    from perception.model import load_model_config

    return load_model_config(model_dir / CONFIG_FILE)


def _scene(cfg, seed: int, randomization):
    from perception.dataset import render_sample

    images, k_inv, t, _ = render_sample(seed, load_rig(), cfg, randomization)
    return {"images": images[None], "intrinsics_inv": k_inv[None].astype(np.float32),
            "ego_from_camera": t[None].astype(np.float32),
            "camera_mask": np.ones((1, cfg.num_cameras), np.float32)}


@pytest.fixture(scope="module")
def engines(model_dir):
    from perception.runtime import create_engine

    split = create_engine("onnxruntime", model_dir, threads=1, device="cpu")
    full = create_engine("onnxruntime", model_dir, threads=1, device="cpu", split=False)
    assert split.geometry_session is not None and split.onnx_path.name == "bev_vit.features.onnx"
    assert full.geometry_session is None and full.onnx_path.name == "bev_vit.onnx"
    return split, full


def _assert_same(full_out, split_out):
    assert set(split_out) == set(full_out)
    cmp = compare_outputs(full_out, split_out)
    assert cmp["heatmap_max_abs_diff"] <= FP32_HEATMAP_ATOL, cmp
    assert cmp["same_detections"], cmp


def test_split_matches_full_graph_and_caches_geometry(engines, cfg):
    from perception.dataset import RigRandomization

    split, full = engines
    nominal = _scene(cfg, 3, RigRandomization.none())
    runs0 = split.geometry_runs
    _assert_same(full.infer(nominal), split.infer(nominal))
    assert split.geometry_runs == runs0 + 1

    # more frames, same calibration (fresh arrays with the same bytes): no geometry run
    for seed in (4, 5):
        frame = _scene(cfg, seed, RigRandomization.none())
        frame = {k: v.copy() for k, v in frame.items()}
        _assert_same(full.infer(frame), split.infer(frame))
    assert split.geometry_runs == runs0 + 1

    # a calibration change: geometry recomputed, still equal to the full graph
    moved = {k: v.copy() for k, v in nominal.items()}
    moved["ego_from_camera"][0, :, :3, 3] += np.float32(0.05)
    moved["intrinsics_inv"][0, 1, 0, 0] *= np.float32(1.02)
    _assert_same(full.infer(moved), split.infer(moved))
    assert split.geometry_runs == runs0 + 2
    split.infer(moved)
    assert split.geometry_runs == runs0 + 2

    # a masked camera (its calibration garbage, as the model allows): recomputed and equal
    masked = {k: v.copy() for k, v in nominal.items()}
    masked["camera_mask"][0, 2] = 0.0
    masked["intrinsics_inv"][0, 2] = np.nan
    got = split.infer(masked)
    _assert_same(full.infer(masked), got)
    assert split.geometry_runs == runs0 + 3
    assert np.isfinite(got["heatmap"]).all()

    # and back to the nominal calibration
    _assert_same(full.infer(nominal), split.infer(nominal))
    assert split.geometry_runs == runs0 + 4


def test_split_pair_freshness_and_reexport(engines, model_dir):
    from perception.runtime.onnx_export import ensure_split_onnx, read_sidecar, split_onnx_paths, split_status

    geo_path, feat_path = split_onnx_paths(model_dir / "bev_vit.onnx")
    assert split_status(model_dir / "bev_vit.onnx", model_dir) == (True, "up to date")
    geo_side, feat_side = read_sidecar(geo_path), read_sidecar(feat_path)
    assert [v["name"] for v in geo_side["inputs"]] == ["intrinsics_inv", "ego_from_camera", "camera_mask"]
    assert [v["name"] for v in geo_side["outputs"]] == geo_side["geometry_names"]
    assert "logit_bias" in geo_side["geometry_names"]
    assert [v["name"] for v in feat_side["outputs"]] == ["heatmap", "regression", "det_boxes", "det_scores",
                                                         "det_labels"]
    # the features graph takes images, then geometry tensors in geometry_names order
    feat_inputs = [v["name"] for v in feat_side["inputs"]]
    assert feat_inputs[0] == "images"
    assert feat_inputs[1:] == [n for n in geo_side["geometry_names"] if n in feat_inputs]
    assert feat_side["verified_vs_torch"]["heatmap_max_abs_diff"] <= FP32_HEATMAP_ATOL

    with open(feat_path, "ab") as f:                        # a truncated / edited file is stale
        f.write(b"\0")
    fresh, why = split_status(model_dir / "bev_vit.onnx", model_dir)
    assert not fresh and "sha256" in why
    ensure_split_onnx(model_dir)                            # re-exported
    assert split_status(model_dir / "bev_vit.onnx", model_dir) == (True, "up to date")
