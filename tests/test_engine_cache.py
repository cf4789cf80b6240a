"""The TensorRT engine cache: a key covering everything an engine depends on, and a lookup that
rebuilds on any mismatch or damage, never loads. Runs everywhere with faked TensorRT/GPU facts;
the tests that need TensorRT and a GPU skip with a reason."""
from __future__ import annotations

import dataclasses
import json

import pytest

from perception.runtime.engine_cache import (
    KEY_FIELDS,
    EngineKey,
    engine_path,
    engine_sidecar_path,
    lookup,
    make_key,
    store,
    timing_cache_path,
)

FACTS = {"tensorrt_version": "10.9.0.34", "gpu_name": "NVIDIA H200", "compute_capability": "9.0"}
SHAPES = {"images": [1, 6, 72, 128, 3], "intrinsics_inv": [1, 6, 3, 3], "ego_from_camera": [1, 6, 4, 4],
          "camera_mask": [1, 6]}
SHA = "a" * 64
ENGINE = b"serialized engine bytes"

# one changed value per key field
CHANGES = {
    "onnx_sha256": "b" * 64,
    "tensorrt_version": "10.12.0.36",
    "gpu_name": "NVIDIA GeForce RTX 4090",
    "compute_capability": "8.9",
    "precision": "fp32",
    "input_shapes": (("images", (2, 6, 72, 128, 3)), ("intrinsics_inv", (2, 6, 3, 3)),
                     ("ego_from_camera", (2, 6, 4, 4)), ("camera_mask", (2, 6))),
}


def base_key() -> EngineKey:
    return make_key(SHA, FACTS, "fp16", SHAPES)


def test_changes_cover_every_key_field():
    assert set(CHANGES) == set(KEY_FIELDS) == {f.name for f in dataclasses.fields(EngineKey)}


def test_matching_key_loads(tmp_path):
    key = base_key()
    path = store(tmp_path, "bev_vit", key, ENGINE, extra={"build": {"build_seconds": 1.0}})
    assert path == engine_path(tmp_path, "bev_vit", key) and path.read_bytes() == ENGINE
    found = lookup(tmp_path, "bev_vit", make_key(SHA, dict(FACTS), "fp16", dict(SHAPES)))
    assert found.load and found.action == "load" and found.path == path
    side = json.loads(engine_sidecar_path(path).read_text())
    assert side["key"] == key.as_dict() and side["engine_bytes"] == len(ENGINE)


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_each_field_changes_the_key_and_forces_a_rebuild(tmp_path, field):
    key = base_key()
    store(tmp_path, "bev_vit", key, ENGINE)
    other = dataclasses.replace(key, **{field: CHANGES[field]})
    assert other.digest() != key.digest()
    assert other.as_dict() != key.as_dict()
    found = lookup(tmp_path, "bev_vit", other)
    assert found.action == "rebuild", found
    assert found.path != engine_path(tmp_path, "bev_vit", key)


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_lookup_compares_the_whole_key_not_the_file_name(tmp_path, field):
    """An engine whose file name matches but whose sidecar key differs (renamed, copied from another
    machine, digest collision) is rebuilt, and the reason names the differing field."""
    key = base_key()
    other = dataclasses.replace(key, **{field: CHANGES[field]})
    path = store(tmp_path, "bev_vit", key, ENGINE)
    target = engine_path(tmp_path, "bev_vit", other)
    path.rename(target)
    engine_sidecar_path(path).rename(engine_sidecar_path(target))
    found = lookup(tmp_path, "bev_vit", other)
    assert found.action == "rebuild" and field in found.reason, found


def test_missing_or_corrupt_sidecar_rebuilds(tmp_path):
    key = base_key()
    path = store(tmp_path, "bev_vit", key, ENGINE)
    side = engine_sidecar_path(path)
    good = side.read_text()

    side.unlink()
    assert lookup(tmp_path, "bev_vit", key).action == "rebuild"
    side.write_text("{ not json")
    assert "unreadable" in lookup(tmp_path, "bev_vit", key).reason
    side.write_text("[]")
    assert lookup(tmp_path, "bev_vit", key).action == "rebuild"
    side.write_text(json.dumps({"engine_sha256": "x"}))
    assert "no key" in lookup(tmp_path, "bev_vit", key).reason
    side.write_text(good)
    assert lookup(tmp_path, "bev_vit", key).load


def test_damaged_or_missing_engine_rebuilds(tmp_path):
    key = base_key()
    path = store(tmp_path, "bev_vit", key, ENGINE)
    path.write_bytes(ENGINE[:-3])                     # truncated by a crash or a full disk
    found = lookup(tmp_path, "bev_vit", key)
    assert found.action == "rebuild" and "sha256" in found.reason
    path.unlink()
    assert lookup(tmp_path, "bev_vit", key).action == "rebuild"


def test_key_validation_and_stability():
    with pytest.raises(ValueError, match="precision"):
        make_key(SHA, FACTS, "int4", SHAPES)
    a, b = base_key(), make_key(SHA, FACTS, "fp16", list(SHAPES.items()))
    assert a == b and a.digest() == b.digest() and len(a.digest()) == 16
    assert a.as_dict()["input_shapes"] == SHAPES
    assert set(KEY_FIELDS) <= set(a.as_dict())


def test_timing_cache_is_per_gpu_and_tensorrt_version(tmp_path):
    p = timing_cache_path(tmp_path, FACTS)
    assert p.suffix == ".timing_cache" and p.parent == tmp_path
    for field in ("tensorrt_version", "gpu_name", "compute_capability"):
        assert timing_cache_path(tmp_path, {**FACTS, field: CHANGES[field]}) != p


def test_int8_is_refused_before_touching_tensorrt(tmp_path):
    from perception.commands.build_engine import main
    from perception.runtime.tensorrt_backend import INT8_REFUSAL, BuildError, build_serialized_engine

    with pytest.raises(BuildError, match="calibration set"):
        build_serialized_engine(tmp_path / "x.onnx", "int8", None)
    assert main(["--backend", "tensorrt", "--precision", "int8", "--model", str(tmp_path)]) == 2
    assert "accuracy delta" in INT8_REFUSAL


def test_build_engine_without_tensorrt_exits_with_the_reason(tmp_path, capsys):
    from perception.commands.build_engine import main
    from perception.runtime.tensorrt_backend import tensorrt_importable

    if tensorrt_importable():
        pytest.skip("TensorRT is installed here")
    assert main(["--backend", "tensorrt", "--model", str(tmp_path), "--dry-run"]) == 2
    assert "TensorRT is not installed" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Needs TensorRT 10 and a CUDA GPU (scripts/gpu_check.sh runs the same path on a GPU machine).
# ---------------------------------------------------------------------------------------------
def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.slow
@pytest.mark.skipif(not _torch_cuda(),
                    reason="needs TensorRT 10 and a CUDA GPU; torch.cuda.is_available() is False here")
def test_tensorrt_fp32_engine_builds_caches_and_matches_torch(tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (NVIDIA pip index, GPU machines only)")
    import numpy as np

    from perception.config import DEFAULT_MODEL_DIR, load_rig
    from perception.dataset import RigRandomization, render_sample
    from perception.model import load_model, save_model
    from perception.runtime import create_engine
    from perception.runtime.parity import compare_outputs

    model, cfg = load_model(DEFAULT_MODEL_DIR, allow_random_init=True)
    d = tmp_path / "bev_vit"
    save_model(model, cfg, d)
    images, k_inv, t, _ = render_sample(3, load_rig(), cfg, RigRandomization.none())
    inputs = {"images": images[None], "intrinsics_inv": k_inv[None], "ego_from_camera": t[None],
              "camera_mask": np.ones((1, cfg.num_cameras), np.float32)}
    ref = create_engine("torch", d, device="cpu").infer(inputs)
    trt_engine = create_engine("tensorrt:fp32", d)
    assert trt_engine.name == "tensorrt-fp32"
    cmp = compare_outputs(ref, trt_engine.infer(inputs))
    assert cmp["heatmap_max_abs_diff"] <= 1e-4 and cmp["same_detections"], cmp
    # second start: the cache answers "load"
    from perception.runtime.onnx_export import file_sha256, read_sidecar
    from perception.runtime.tensorrt_backend import target_facts

    side = read_sidecar(d / "bev_vit.onnx")
    key = make_key(file_sha256(d / "bev_vit.onnx"), target_facts(), "fp32",
                   {v["name"]: v["shape"] for v in side["inputs"]})
    assert lookup(d, "bev_vit", key).load
