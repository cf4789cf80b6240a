"""`perception export`: a static-shape ONNX graph of TensorRT-native operators, with its sidecar."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the onnx package is not installed (pip install -e '.[onnx]')")

from onnx import TensorProto, helper  # noqa: E402

from perception.commands.export import main  # noqa: E402
from perception.config import DEFAULT_MODEL_DIR  # noqa: E402
from perception.runtime.base import INPUT_NAMES, OUTPUT_NAMES  # noqa: E402
from perception.runtime.onnx_export import (  # noqa: E402
    FORBIDDEN_REASONS,
    TENSORRT_OPS,
    ExportError,
    assert_tensorrt_compatible,
    check_tensorrt_compatible,
    export_onnx,
    file_sha256,
    onnx_status,
    sidecar_path,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The shipped config with seeded random weights saved beside it (safetensors)."""
    from perception.model import load_model, save_model

    model, cfg = load_model(DEFAULT_MODEL_DIR, allow_random_init=True)
    d = tmp_path_factory.mktemp("model") / "bev_vit"
    save_model(model, cfg, d)
    return d


@pytest.fixture(scope="module")
def exported(model_dir):
    return export_onnx(model_dir)


@pytest.fixture(scope="module")
def proto(exported):
    return onnx.load(str(exported.path))


def test_export_writes_onnx_and_sidecar(exported, model_dir):
    from perception.model import load_model_config

    cfg = load_model_config(model_dir / "config.yaml")
    assert exported.path == model_dir / "bev_vit.onnx"
    side = json.loads(sidecar_path(exported.path).read_text())
    assert side == exported.sidecar
    assert side["onnx_sha256"] == file_sha256(exported.path)
    assert side["opset"] == 17
    assert [v["name"] for v in side["inputs"]] == list(INPUT_NAMES)
    assert [v["name"] for v in side["outputs"]] == list(OUTPUT_NAMES)
    shapes = {v["name"]: (v["dtype"], v["shape"]) for v in side["inputs"] + side["outputs"]}
    N, H, W = cfg.num_cameras, cfg.image_height, cfg.image_width
    assert shapes["images"] == ("uint8", [1, N, H, W, 3])
    assert shapes["intrinsics_inv"] == ("float32", [1, N, 3, 3])
    assert shapes["ego_from_camera"] == ("float32", [1, N, 4, 4])
    assert shapes["camera_mask"] == ("float32", [1, N])
    assert shapes["heatmap"] == ("float32", [1, cfg.num_classes, cfg.bev_cells, cfg.bev_cells])
    assert shapes["det_labels"] == ("int64", [1, cfg.max_detections])
    assert side["weights"] == "model.safetensors"
    # the exporter ran ONNX Runtime against PyTorch once (when installed)
    v = side["verified_vs_torch"]
    if isinstance(v, dict):
        assert v["heatmap_max_abs_diff"] <= 1e-4


def test_onnx_checker_passes(proto):
    onnx.checker.check_model(proto, full_check=True)


def test_every_op_is_in_the_tensorrt_allow_list(proto):
    ops = {n.op_type for n in proto.graph.node}
    assert ops <= TENSORRT_OPS, sorted(ops - TENSORRT_OPS)
    assert {"TopK", "Softmax", "MatMul", "LayerNormalization", "MaxPool"} <= ops
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    assert check_tensorrt_compatible(proto) == []


def test_topk_is_sorted_with_constant_k(proto):
    inits = {i.name for i in proto.graph.initializer}
    topks = [n for n in proto.graph.node if n.op_type == "TopK"]
    assert topks
    for n in topks:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        assert attrs.get("sorted", 1) == 1
        assert n.input[1] in inits


def test_static_shapes_on_all_inputs_and_outputs(proto):
    for v in list(proto.graph.input) + list(proto.graph.output):
        dims = v.type.tensor_type.shape.dim
        assert dims, v.name
        assert all(d.HasField("dim_value") and d.dim_value > 0 for d in dims), (v.name, dims)
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8   # normalisation in the graph


def _tiny(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_checker_rejects_a_forbidden_op():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [1, 4])
    model = _tiny([helper.make_node("NonZero", ["x"], ["y"], name="nz")], [x], [y])
    problems = check_tensorrt_compatible(model, require_static=False)
    assert any("NonZero" in p and "data-dependent" in p for p in problems), problems
    with pytest.raises(ExportError, match="NonZero"):
        assert_tensorrt_compatible(model, require_static=False)
    assert "NonZero" not in TENSORRT_OPS and {"Loop", "If", "Scan"}.isdisjoint(TENSORRT_OPS)
    assert set(FORBIDDEN_REASONS).isdisjoint(TENSORRT_OPS)


def test_checker_rejects_unsorted_topk_dynamic_k_and_dynamic_shapes():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 10])
    k = helper.make_tensor_value_info("k", TensorProto.INT64, [1])
    v = helper.make_tensor_value_info("v", TensorProto.FLOAT, ["B", None])
    i = helper.make_tensor_value_info("i", TensorProto.INT64, ["B", None])
    model = _tiny([helper.make_node("TopK", ["x", "k"], ["v", "i"], name="tk", sorted=0)], [x, k], [v, i])
    problems = "\n".join(check_tensorrt_compatible(model))
    assert "sorted=0" in problems
    assert "K is not a build-time constant" in problems
    assert "dynamic shape" in problems


def test_checker_rejects_custom_domain_and_uint8_compute():
    x = helper.make_tensor_value_info("x", TensorProto.UINT8, [4])
    y = helper.make_tensor_value_info("y", TensorProto.UINT8, [4])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [3, 3])
    model = _tiny([helper.make_node("Add", ["x", "x"], ["y"], name="add"),
                   helper.make_node("Inverse", ["w"], ["z"], name="inv", domain="com.microsoft")],
                  [x, helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 3])], [y, z])
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    problems = "\n".join(check_tensorrt_compatible(model, require_static=False))
    assert "custom" in problems and "UINT8" in problems


def test_stale_export_is_detected(exported, model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    assert onnx_status(exported.path, model_dir) == (True, "up to date")
    other = tmp_path / "bev_vit"
    shutil.copytree(model_dir, other)
    state = load_file(str(other / "model.safetensors"))
    name = sorted(state)[0]
    state[name] = state[name] + 1.0
    save_file(state, str(other / "model.safetensors"))
    fresh, why = onnx_status(other / "bev_vit.onnx", other)
    assert not fresh and "weights_sha256" in why
    # an edited or truncated ONNX no longer matches its sidecar
    shutil.copy(model_dir / "model.safetensors", other / "model.safetensors")
    assert onnx_status(other / "bev_vit.onnx", other)[0]
    with open(other / "bev_vit.onnx", "ab") as f:
        f.write(b"\0")
    fresh, why = onnx_status(other / "bev_vit.onnx", other)
    assert not fresh and "sha256" in why
    (other / "bev_vit.onnx.json").unlink()
    assert not onnx_status(other / "bev_vit.onnx", other)[0]


def test_export_cli_reports_up_to_date(exported, model_dir, capsys):
    assert main(["--model", str(model_dir)]) == 0
    assert "up to date" in capsys.readouterr().out


def test_exported_graph_runs_in_onnxruntime(exported, model_dir):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    import torch

    from perception.inputs import example_inputs
    from perception.model import load_model

    model, cfg = load_model(model_dir)
    x = list(example_inputs(cfg, 1, seed=3))
    x[3][0, 2] = 0.0                               # one camera missing
    sess = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    got = dict(zip(OUTPUT_NAMES, sess.run(list(OUTPUT_NAMES), {n: v.numpy() for n, v in zip(INPUT_NAMES, x)})))
    with torch.inference_mode():
        ref = model(*x)
    np.testing.assert_allclose(got["heatmap"], ref["heatmap"].numpy(), atol=1e-4)
    # Regression channels are metres, log sizes and m/s up to a few units: fp32 kernels that
    # sum in another order differ in proportion to the values (1.1e-4 on a log size of 2.2
    # with the batch 2 weights), so the bound scales with the largest value.
    reg = ref["regression"].numpy()
    np.testing.assert_allclose(got["regression"], reg, atol=1e-4 * max(1.0, float(np.abs(reg).max())))
