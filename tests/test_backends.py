"""Engine backends behind one interface: torch vs ONNX Runtime parity on a simulated scene,
backend selection, and the fusion pipeline running on the ONNX Runtime engine."""
from __future__ import annotations

import numpy as np
import pytest

from perception.config import DEFAULT_MODEL_DIR, load_rig
from perception.runtime import BACKEND_CHOICES, create_engine, parse_backend, resolve_backend
from perception.runtime.parity import CENTRE_TOL_M, FP32_HEATMAP_ATOL, SCORE_MIN, compare_outputs

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install -e '.[onnx]')")
pytest.importorskip("onnx", reason="the onnx package is not installed (pip install -e '.[onnx]')")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from perception.model import load_model, save_model

    model, cfg = load_model(DEFAULT_MODEL_DIR, allow_random_init=True, seed=1)
    d = tmp_path_factory.mktemp("model") / "bev_vit"
    save_model(model, cfg, d)
    return d


@pytest.fixture(scope="module")
def cfg(model_dir):
    from perception.model import load_model_config

    return load_model_config(model_dir / "config.yaml")


@pytest.fixture(scope="module")
def scene(cfg):
    """One fixed simulated frame set at model resolution, nominal rig."""
    from perception.dataset import RigRandomization, render_sample

    images, k_inv, t, _ = render_sample(3, load_rig(), cfg, RigRandomization.none())
    return {"images": images[None], "intrinsics_inv": k_inv[None], "ego_from_camera": t[None],
            "camera_mask": np.ones((1, cfg.num_cameras), np.float32)}


@pytest.fixture(scope="module")
def torch_engine(model_dir):
    # one thread: on a loaded machine two OpenMP threads can be 30x slower (docs/engines.md)
    return create_engine("torch", model_dir, threads=1, device="cpu")


@pytest.fixture(scope="module")
def ort_engine(model_dir):
    # the ONNX does not exist yet: the backend exports its split geometry/features pair on first use
    names = ("bev_vit.geometry.onnx", "bev_vit.features.onnx")
    assert not any((model_dir / n).exists() for n in names)
    engine = create_engine("onnxruntime", model_dir, threads=1, device="cpu")
    assert all((model_dir / n).exists() and (model_dir / f"{n}.json").exists() for n in names)
    assert engine.options["split"]
    return engine


def test_torch_and_onnxruntime_agree_on_a_simulated_scene(torch_engine, ort_engine, scene):
    assert torch_engine.name == "torch-cpu"
    assert ort_engine.name == "onnxruntime-cpu"
    ref = torch_engine.infer(scene)
    got = ort_engine.infer(scene)
    assert set(got) == set(ref)
    heat_diff = float(np.abs(ref["heatmap"] - got["heatmap"]).max())
    assert heat_diff <= FP32_HEATMAP_ATOL
    cmp = compare_outputs(ref, got)
    assert cmp["detections_ref"] > 0
    assert cmp["same_detections"], cmp
    assert cmp["max_centre_diff_m"] <= CENTRE_TOL_M
    # and explicitly: the top detections above the score floor, in order where scores are not tied
    keep = ref["det_scores"][0] > SCORE_MIN
    top = np.flatnonzero(keep)[:10]
    gaps = np.diff(ref["det_scores"][0][top])
    if np.all(np.abs(gaps) > 10 * FP32_HEATMAP_ATOL):          # well separated: the order must match too
        np.testing.assert_array_equal(ref["det_labels"][0][top], got["det_labels"][0][top])
        np.testing.assert_allclose(ref["det_boxes"][0][top, :2], got["det_boxes"][0][top, :2], atol=CENTRE_TOL_M)


def test_torch_geometry_cache_is_exact_and_follows_the_mask(torch_engine, scene):
    import torch

    model = torch_engine.model
    names = ("images", "intrinsics_inv", "ego_from_camera", "camera_mask")
    for mask_off in (None, 2, None):              # cached, changed mask, back again
        inputs = {k: v.copy() for k, v in scene.items()}
        if mask_off is not None:
            inputs["camera_mask"][0, mask_off] = 0.0
        got = torch_engine.infer(inputs)
        with torch.inference_mode():
            ref = model(*[torch.from_numpy(inputs[n]) for n in names])
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k].numpy(), err_msg=k)


def test_torch_bf16_autocast_serves_close_to_fp32(torch_engine, model_dir, scene):
    """bf16 autocast takes the eager path's gather instead of sampled_addmm (no CPU bf16 kernel);
    its heatmap stays within bf16 rounding of fp32."""
    bf16 = create_engine("torch:bf16", model_dir, device="cpu")
    ref, out = torch_engine.infer(scene), bf16.infer(scene)
    assert out["heatmap"].dtype == np.float32 and np.isfinite(out["heatmap"]).all()
    assert np.abs(out["heatmap"] - ref["heatmap"]).max() < 0.05


def test_auto_picks_the_fastest_available_backend(monkeypatch, model_dir):
    import perception.runtime as rt
    import perception.runtime.torch_backend as tb

    real = rt._importable
    # CPU only: Inductor where a C++ compiler exists, else eager PyTorch (both measured faster
    # than ONNX Runtime here), ONNX Runtime without torch
    monkeypatch.setattr(rt, "_importable", lambda m: False if m == "tensorrt" else real(m))
    monkeypatch.setattr(rt, "gpu_present", lambda: False)
    monkeypatch.setattr(tb, "cxx_compiler", lambda: "/usr/bin/g++")
    assert resolve_backend("auto") == ("inductor", None)
    monkeypatch.setattr(tb, "cxx_compiler", lambda: None)
    assert resolve_backend("auto") == ("torch", None)
    with pytest.raises(ValueError, match="C\\+\\+ compiler"):
        create_engine("inductor", model_dir, threads=1)
    engine = create_engine("auto", model_dir, threads=1)
    assert engine.name == "torch-cpu"
    monkeypatch.setattr(rt, "_importable", lambda m: m == "onnxruntime" or (m != "torch" and real(m)))
    assert resolve_backend("auto") == ("onnxruntime", None)
    # TensorRT importable but no GPU: not TensorRT
    monkeypatch.setattr(rt, "_importable", lambda m: True if m == "tensorrt" else real(m))
    assert resolve_backend("auto") == ("torch", None)
    # a GPU: TensorRT, else ONNX Runtime (CUDA provider), else PyTorch
    monkeypatch.setattr(rt, "gpu_present", lambda: True)
    assert resolve_backend("auto") == ("tensorrt", None)
    monkeypatch.setattr(rt, "_importable", lambda m: m != "tensorrt" and real(m))
    assert resolve_backend("auto") == ("onnxruntime", None)
    monkeypatch.setattr(rt, "_importable", lambda m: m == "torch")
    assert resolve_backend("auto") == ("torch", None)


def test_unknown_backend_is_a_clear_error(model_dir):
    with pytest.raises(ValueError, match="unknown backend 'tensorflow'.*onnxruntime"):
        create_engine("tensorflow", model_dir)
    with pytest.raises(ValueError, match="no precision 'fp16'"):
        parse_backend("onnxruntime:fp16")
    with pytest.raises(ValueError, match="no precision"):
        parse_backend("torch:int4")
    assert parse_backend("TensorRT:FP32") == ("tensorrt", "fp32")
    for spec in BACKEND_CHOICES:
        parse_backend(spec)


def test_tensorrt_int8_is_refused_with_the_reason(model_dir):
    with pytest.raises(ValueError, match="INT8 engines are not built.*calibration set"):
        create_engine("tensorrt:int8", model_dir)


def test_tensorrt_without_tensorrt_says_why(model_dir):
    from perception.runtime.tensorrt_backend import tensorrt_importable

    if tensorrt_importable():
        pytest.skip("TensorRT is installed here; tests/test_engine_cache.py runs it")
    with pytest.raises(ValueError, match="TensorRT is not installed"):
        create_engine("tensorrt", model_dir)


def test_fusion_pipeline_runs_with_the_onnxruntime_engine(ort_engine, cfg):
    from perception.fusion.bench import make_frameset
    from perception.fusion.pipeline import FusionPipeline

    rig = load_rig()
    rng = np.random.default_rng(0)
    frames = {c.name: rng.integers(0, 256, (c.height, c.width, 3), dtype=np.uint8) for c in rig.cameras}
    assert next(iter(frames.values())).shape == (180, 320, 3)
    pipe = FusionPipeline(rig, ort_engine, cfg, score_threshold=0.05)
    msg = pipe.process(make_frameset(rig, frames, 1_000_000_000))
    assert msg.backend == "onnxruntime-cpu"
    assert msg.timings.inference_ms > 0 and msg.timings.total_ms >= msg.timings.inference_ms
    assert len(msg.objects) == int((pipe.last_outputs["det_scores"][0] >= 0.05).sum())
    # a missing camera is masked, the step still runs
    del frames[rig.cameras[1].name]
    fs = make_frameset(rig, frames, 2_000_000_000)
    fs.missing.append(rig.cameras[1].name)
    msg = pipe.process(fs)
    assert list(msg.missing_cameras) == [rig.cameras[1].name]
    assert pipe.preprocess.camera_mask[0, 1] == 0.0


def test_fusion_node_accepts_the_backend_choices():
    from perception.commands.fuse import build_parser

    p = build_parser()
    for spec in ("auto", "torch", "inductor", "onnxruntime", "tensorrt", "torch:bf16", "tensorrt:fp32"):
        assert p.parse_args(["--backend", spec]).backend == spec
    with pytest.raises(SystemExit):
        p.parse_args(["--backend", "tensorflow"])
