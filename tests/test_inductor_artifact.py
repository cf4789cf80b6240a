"""The compiled CPU engine as an artifact (runtime/inductor_artifact.py): a real AOTInductor
build in its own process, the cache key, refusal of a truncated package, and the live switch
from eager to compiled between two frame sets (no set lost or repeated, outputs within the
parity bound)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from perception.config import DEFAULT_MODEL_DIR, load_rig
from perception.runtime import create_engine
from perception.runtime import inductor_artifact as ia
from perception.runtime.engine_cache import engine_sidecar_path, store_artifact
from perception.runtime.parity import FP32_HEATMAP_ATOL, compare_outputs
from perception.runtime.torch_backend import cxx_compiler

pytestmark = pytest.mark.skipif(cxx_compiler() is None, reason="Inductor's CPU code generation needs a C++ compiler")

THREADS = 1


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from perception.model import load_model, save_model

    model, cfg = load_model(DEFAULT_MODEL_DIR, allow_random_init=True, seed=1)
    d = tmp_path_factory.mktemp("model") / "bev_vit"
    save_model(model, cfg, d)
    return d


@pytest.fixture(scope="module")
def model(model_dir):
    from perception.model.weights import load_model

    m, cfg = load_model(model_dir)
    return m.eval(), cfg


@pytest.fixture(scope="module")
def built(model_dir, tmp_path_factory):
    """One real build, as the node starts it: `perception build-engine --backend inductor` in its
    own process. -> the cache folder holding the package."""
    cache = tmp_path_factory.mktemp("engine_cache")
    cmd = [sys.executable, "-m", "perception.cli", "build-engine", "--backend", "inductor", "--model", str(model_dir),
           "--cache-dir", str(cache), "--threads", str(THREADS)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "wrote" in out.stdout and len(list(cache.glob("*.pt2"))) == 1, out.stdout
    return cache


def scene_inputs(cfg, seed: int) -> dict[str, np.ndarray]:
    from perception.inputs import example_inputs

    images, k, t, m = example_inputs(cfg, 1, seed=seed)
    return {"images": images.numpy(), "intrinsics_inv": k.numpy(), "ego_from_camera": t.numpy(),
            "camera_mask": m.numpy()}


def test_the_key_names_every_fact_the_package_depends_on(model):
    m, cfg = model
    key = ia.artifact_key(m, cfg, THREADS)
    assert {"weights_sha256", "code_sha256", "torch_version", "cpu_isa", "threads", "input_shapes"} <= set(key)
    assert key["torch_version"] == torch.__version__ and key["threads"] == THREADS
    assert key["input_shapes"]["images"] == [1, cfg.num_cameras, cfg.image_height, cfg.image_width, 3]
    assert key == ia.artifact_key(m, cfg, THREADS)                      # deterministic
    assert ia.artifact_key(m, cfg, THREADS + 1)["threads"] == THREADS + 1


def test_a_key_mismatch_is_rebuilt_never_loaded(model, tmp_path):
    m, cfg = model
    key = ia.artifact_key(m, cfg, THREADS)
    path = ia.artifact_path(tmp_path, cfg.name, key)
    store_artifact(path, key, b"package bytes", extra={"geometry_names": []})
    assert ia.find_artifact(tmp_path, cfg.name, key).load
    # another thread count, torch version, CPU or set of weights: another file, and a stored
    # package under the wanted name with a foreign key is refused with the field named
    for field, value in (("threads", THREADS + 1), ("torch_version", "0.0.1"), ("cpu_isa", "AVX2"),
                         ("weights_sha256", "0" * 64), ("code_sha256", "0" * 64)):
        other = {**key, field: value}
        assert ia.artifact_path(tmp_path, cfg.name, other) != path
        assert not ia.find_artifact(tmp_path, cfg.name, other).load
        store_artifact(ia.artifact_path(tmp_path, cfg.name, other), key, b"package bytes")
        found = ia.find_artifact(tmp_path, cfg.name, other)
        assert found.action == "rebuild" and field in found.reason, found.reason
    # changed weights change the digest
    with torch.no_grad():
        p = next(m.parameters())
        original = p.clone()
        p.add_(1.0)
        try:
            changed = ia.artifact_key(m, cfg, THREADS)
        finally:
            p.copy_(original)
    assert changed["weights_sha256"] != key["weights_sha256"]


def test_the_built_package_serves_within_the_parity_bound(built, model_dir, model):
    m, cfg = model
    engine = create_engine("inductor", model_dir, threads=THREADS, cache_dir=built)
    assert engine.name == "torch-cpu-inductor", "a valid cached package is used from the start"
    assert "found in the cache" in engine.switches[0]["reason"]
    eager = create_engine("torch", model_dir, threads=THREADS)
    for seed in (3, 4):
        inputs = scene_inputs(cfg, seed)
        cmp = compare_outputs(eager.infer(inputs), engine.infer(inputs))
        assert cmp["heatmap_max_abs_diff"] <= FP32_HEATMAP_ATOL and cmp["same_detections"], cmp
    # the build left no private Inductor cache folder behind
    assert not list(built.glob(".*inductor-build*"))


@pytest.mark.timeout(960)    # a rebuild under a loaded machine; its own deadline is 900 s
def test_a_truncated_package_is_refused_then_rebuilt_and_the_switch_loses_no_frame_set(built, model_dir, model,
                                                                                       tmp_path):
    """Serving starts eagerly (the truncated package is never loaded), the background build
    replaces it, and the engine switches between two frame sets: every set gets exactly one
    message, in order, each within the parity bound of the eager model."""
    from perception.fusion.bench import make_frameset
    from perception.fusion.pipeline import FusionPipeline

    m, cfg = model
    pkg = next(built.glob("*.pt2"))
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(pkg, cache / pkg.name)
    shutil.copy(engine_sidecar_path(pkg), engine_sidecar_path(cache / pkg.name))
    with open(cache / pkg.name, "r+b") as f:
        f.truncate(pkg.stat().st_size // 2)
    found = ia.find_artifact(cache, cfg.name, ia.artifact_key(m, cfg, THREADS))
    assert found.action == "rebuild" and "truncated" in found.reason

    engine = create_engine("inductor", model_dir, threads=THREADS, cache_dir=cache)
    assert engine.name == "torch-cpu"                       # serving now, eagerly
    eager = create_engine("torch", model_dir, threads=THREADS)
    rig = load_rig()
    pipe = FusionPipeline(rig, engine, cfg, score_threshold=0.05)
    rng = np.random.default_rng(0)
    messages, worst = [], 0.0
    deadline = time.monotonic() + 900
    after_switch = 0
    while after_switch < 3:
        assert time.monotonic() < deadline, f"no switch within 900 s; build log: {engine._build_log.read_text()}"
        frames = {c.name: rng.integers(0, 256, (c.height, c.width, 3), dtype=np.uint8) for c in rig.cameras}
        msg = pipe.process(make_frameset(rig, frames, (len(messages) + 1) * 100_000_000))
        messages.append(msg)
        ref = eager.infer(pipe.preprocess(frames))
        cmp = compare_outputs(ref, pipe.last_outputs)
        assert cmp["heatmap_max_abs_diff"] <= FP32_HEATMAP_ATOL and cmp["same_detections"], (msg.backend, cmp)
        worst = max(worst, cmp["heatmap_max_abs_diff"])
        after_switch += msg.backend == "torch-cpu-inductor"
        time.sleep(0.05)       # leave the idle-priority build some CPU, as a 10 Hz camera rig does
    assert [x.sequence for x in messages] == list(range(1, len(messages) + 1))     # none lost, none twice
    assert [x.stamp_ns for x in messages] == [(i + 1) * 100_000_000 for i in range(len(messages))]
    backends = [x.backend for x in messages]
    first = backends.index("torch-cpu-inductor")
    assert first > 0 and set(backends[:first]) == {"torch-cpu"} and set(backends[first:]) == {"torch-cpu-inductor"}
    assert len(engine.switches) == 1 and "background build" in engine.switches[0]["reason"]
    assert ia.find_artifact(cache, cfg.name, ia.artifact_key(m, cfg, THREADS)).load     # rebuilt
    engine.close()
