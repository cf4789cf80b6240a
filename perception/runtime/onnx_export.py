"""The BEV ViT as a static-shape ONNX graph that TensorRT parses natively (the `perception export`
command is perception/commands/export.py; the backends call ensure_onnx).

What the exported graph is:
- inputs images uint8 [B, N, H, W, 3] (normalisation is inside the graph), intrinsics_inv
  float32 [B, N, 3, 3], ego_from_camera float32 [B, N, 4, 4], camera_mask float32 [B, N]
  (calibration and the camera mask are inputs, never constants); outputs as base.OUTPUT_NAMES.
- every shape static (batch included): after export the graph is constant-folded so that even
  the shape operands of Expand/Reshape are initializers, and ONNX shape inference must then give
  a static shape to every tensor (no data-dependent shapes).
- only operators of TENSORRT_OPS below, with TensorRT's restrictions checked
  (check_tensorrt_compatible); `perception export` refuses to write a graph that fails them.

Beside the .onnx a JSON sidecar (<file>.json) records the ONNX sha256, the opset, input/output
names, dtypes and shapes, the op histogram, the FP32-pinned nodes for TensorRT FP16 builds and
the fingerprint of what it was exported from (config, weights, model source): the ONNX Runtime
and TensorRT backends re-export when that fingerprint no longer matches (ensure_onnx).
"""
from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perception.model.weights import CONFIG_FILE, WEIGHTS_FILE
from perception.runtime.base import GEOMETRY_INPUT_NAMES, INPUT_NAMES, OUTPUT_NAMES
from perception.runtime.engine_cache import atomic_write

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17          # LayerNormalization is an opset-17 op; TensorRT 10.0 parses opsets 9..20
EXPORT_FORMAT = 1           # bump when the post-processing below changes what is written

# ---------------------------------------------------------------------------------------------
# The TensorRT allow-list: the one place that decides which ONNX operators an exported graph may
# contain. Source: onnx-tensorrt docs/operators.md, "Supported ONNX Operators" (TensorRT 10.x:
# "TensorRT 10.0 supports operators in the inclusive range of opset 9 to opset 20"; 10.15: 9..24),
# https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md. Every op below is listed
# there as supported (Y) by the built-in parser, i.e. a native layer, no plugin. The list is a
# curated subset: ops that TensorRT supports but that this project never wants are left out on
# purpose (NonZero/Unique/Compress: data-dependent shapes; Loop/If/Scan: control flow; Einsum,
# EyeLike, ScatterND, Resize, Random*: not needed, kept out so that a model change that starts
# emitting them is noticed). There is no matrix inverse in ONNX's default domain at all
# (com.microsoft Inverse / Det are rejected as custom-domain or unlisted ops).
# Restrictions from the same table that check_tensorrt_compatible() enforces:
#   TopK            `sorted` must be 1 and `K` must be a build-time constant below 3840 (10.x
#                   table; 8.x: "K input must be an initializer")
#   LayerNormalization  only the first output Y is supported (opset >= 17)
#   MaxPool         2D or 3D only, the Indices output is unsupported
#   Conv            2D or 3D only
#   Reduce*/Squeeze/Unsqueeze  `axes` must be a constant (initializer)
#   UINT8           only as a network input or output tensor type (so: graph input -> Cast)
# Types: INT64 is supported natively since TensorRT 10 (indices, det_labels).
# ---------------------------------------------------------------------------------------------
TENSORRT_OPS = frozenset({
    # elementwise and math
    "Abs", "Add", "Sub", "Mul", "Div", "Neg", "Pow", "Sqrt", "Reciprocal", "Exp", "Log", "Erf",
    "Sin", "Cos", "Atan", "Tanh", "Sigmoid", "Relu", "LeakyRelu", "Sign", "Floor", "Ceil",
    "Clip", "Max", "Min", "Where", "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual",
    "Not", "And", "Or", "Cast",
    # linear algebra, normalisation, pooling
    "MatMul", "Gemm", "Conv", "Softmax", "LayerNormalization", "MaxPool", "AveragePool",
    "GlobalAveragePool", "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ArgMax", "ArgMin",
    # selection and indexing
    "TopK", "Gather", "GatherElements", "GatherND",
    # shape and data movement
    "Reshape", "Transpose", "Concat", "Split", "Slice", "Squeeze", "Unsqueeze", "Expand",
    "Flatten", "Tile", "Pad", "Shape", "Identity", "Constant", "ConstantOfShape",
})

# Ops with a specific reason to be rejected (the message says why); anything else outside
# TENSORRT_OPS is rejected as "not in the TensorRT allow-list".
FORBIDDEN_REASONS = {
    "NonZero": "data-dependent output shape (boolean indexing); use an additive mask or TopK",
    "Unique": "data-dependent output shape",
    "Compress": "data-dependent output shape",
    "NonMaxSuppression": "data-dependent output shape",
    "Loop": "control flow", "If": "control flow", "Scan": "control flow",
    "Inverse": "no matrix inverse in TensorRT: pass K^-1 / T^-1 as inputs",
    "Det": "not supported by TensorRT",
    "Einsum": "kept out of this graph (write it as MatMul)",
    "EyeLike": "kept out of this graph (pass a constant)",
    "ScatterND": "kept out of this graph",
}
TOPK_MAX_K = 3840
TENSORRT_OPSET_RANGE = (9, 20)      # TensorRT 10.0's parser; later 10.x accept more

# Ops whose outputs are all small and deterministic enough to fold at export time.
_NEVER_FOLD = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
               "Bernoulli"}
FOLD_MAX_ELEMENTS = 1 << 16


class ExportError(RuntimeError):
    """The export failed or produced a graph that TensorRT would not parse natively."""


# ---------------------------------------------------------------------------------------------
# checking
# ---------------------------------------------------------------------------------------------
def _const_names(graph) -> set[str]:
    names = {i.name for i in graph.initializer}
    names |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return names


def _const_value(graph, name: str):
    from onnx import numpy_helper

    for i in graph.initializer:
        if i.name == name:
            return numpy_helper.to_array(i)
    for n in graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
    return None


def _attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _static_dims(value_info) -> list[int] | None:
    t = value_info.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims = []
    for d in t.shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(int(d.dim_value))
    return dims


def check_tensorrt_compatible(model, require_static: bool = True) -> list[str]:
    """Every reason why TensorRT's ONNX parser would not import `model` (an onnx.ModelProto) as
    native layers with static shapes; [] when it would. Runs the ONNX checker first."""
    import onnx

    problems: list[str] = []
    try:
        onnx.checker.check_model(model, full_check=False)
    except onnx.checker.ValidationError as e:
        return [f"ONNX checker: {str(e).strip().splitlines()[0]}"]
    graph = model.graph
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    for domain in opsets:
        if domain != "ai.onnx":
            problems.append(f"custom operator domain {domain!r} (would need a TensorRT plugin)")
    opset = opsets.get("ai.onnx", 0)
    lo, hi = TENSORRT_OPSET_RANGE
    if not lo <= opset <= hi:
        problems.append(f"opset {opset} outside TensorRT 10.0's range {lo}..{hi}")
    consts = _const_names(graph)
    graph_inputs = {i.name for i in graph.input}
    uint8 = {i.name for i in graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.UINT8}

    for node in graph.node:
        where = f"{node.op_type} node {node.name or node.output[0]!r}"
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{where}: custom domain {node.domain!r} (needs a plugin)")
            continue
        if node.op_type not in TENSORRT_OPS:
            why = FORBIDDEN_REASONS.get(node.op_type, "not in the TensorRT allow-list (runtime/onnx_export.py)")
            problems.append(f"{where}: {why}")
            continue
        if node.op_type == "TopK":
            if int(_attr(node, "sorted", 1)) != 1:
                problems.append(f"{where}: sorted=0 (TensorRT 10.x requires sorted=1)")
            k = node.input[1] if len(node.input) > 1 else ""
            if k not in consts:
                problems.append(f"{where}: K is not a build-time constant")
            else:
                kv = _const_value(graph, k)
                if kv is not None and int(np.asarray(kv).reshape(-1)[0]) >= TOPK_MAX_K:
                    problems.append(f"{where}: K={int(np.asarray(kv).reshape(-1)[0])} >= {TOPK_MAX_K}")
        elif node.op_type == "LayerNormalization":
            if any(o for o in node.output[1:]):
                problems.append(f"{where}: only the first output (Y) is supported")
            if opset < 17:
                problems.append(f"{where}: needs opset >= 17")
        elif node.op_type == "MaxPool":
            if len(node.output) > 1 and node.output[1]:
                problems.append(f"{where}: the Indices output is unsupported")
            if len(_attr(node, "kernel_shape", [])) not in (2, 3):
                problems.append(f"{where}: only 2D/3D pooling")
        elif node.op_type == "Conv":
            ks = _attr(node, "kernel_shape", None)
            if ks is not None and len(ks) not in (2, 3):
                problems.append(f"{where}: only 2D/3D convolutions")
        elif node.op_type in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "Squeeze", "Unsqueeze"):
            if len(node.input) > 1 and node.input[1] and node.input[1] not in consts:
                problems.append(f"{where}: axes must be a constant")
        if node.op_type != "Cast":
            for i in node.input:
                if i in uint8:
                    problems.append(f"{where}: consumes UINT8 tensor {i!r} (TensorRT: UINT8 only as I/O, Cast it first)")
    for v in list(graph.input) + list(graph.output):
        if _static_dims(v) is None:
            problems.append(f"graph {'input' if v.name in graph_inputs else 'output'} {v.name!r} has a dynamic shape")
    if require_static and not problems:
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
        except Exception as e:  # onnx raises InferenceError and friends
            problems.append(f"ONNX shape inference failed: {e}")
        else:
            known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
            dynamic = [o for n in graph.node for o in n.output
                       if o and (o not in known or _static_dims(known[o]) is None)]
            if dynamic:
                problems.append(f"{len(dynamic)} tensors without a static shape (data-dependent or unresolved), "
                                f"e.g. {dynamic[:5]}")
    return problems


def assert_tensorrt_compatible(model, require_static: bool = True) -> None:
    problems = check_tensorrt_compatible(model, require_static)
    if problems:
        raise ExportError("graph is not TensorRT-native:\n  " + "\n  ".join(problems))


# ---------------------------------------------------------------------------------------------
# post-processing of the exported graph
# ---------------------------------------------------------------------------------------------
def fold_constants(model, max_elements: int = FOLD_MAX_ELEMENTS) -> int:
    """Evaluate (onnx.reference) every node whose inputs are all constants and whose outputs are
    small, replacing it by initializers. The TorchScript exporter leaves chains such as
    ConstantOfShape -> Where -> Expand that are constant but hide static shapes from shape
    inference. Constant nodes become initializers. Returns the number of nodes folded."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    opset = {o.domain or "": o.version for o in model.opset_import}
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    keep, folded, new_inits = [], 0, []
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            attr = {a.name: a for a in node.attribute}
            if "value" in attr:
                arr = numpy_helper.to_array(attr["value"].t)
                values[node.output[0]] = arr
                new_inits.append(numpy_helper.from_array(arr, node.output[0]))
                folded += 1
                continue
        ins = [i for i in node.input if i]
        if (node.domain in ("", "ai.onnx") and node.op_type not in _NEVER_FOLD and ins
                and all(i in values for i in ins)
                and all(values[i].size <= 4 * max_elements for i in ins)):
            try:
                outs = ReferenceEvaluator(node, opsets={"": opset.get("", DEFAULT_OPSET)}).run(
                    None, {i: values[i] for i in ins})
            except Exception:       # an op the reference cannot run: leave it to the runtime
                outs = None
            if outs is not None and all(np.asarray(o).size <= max_elements for o in outs):
                for name, out in zip(node.output, outs):
                    if name:
                        arr = np.asarray(out)
                        values[name] = arr
                        new_inits.append(numpy_helper.from_array(arr, name))
                folded += 1
                continue
        keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    graph.initializer.extend(new_inits)
    return folded


def remove_identities_and_dead_nodes(model) -> None:
    graph = model.graph
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    kept = []
    for node in graph.node:
        for k, i in enumerate(node.input):
            if i in rename:
                node.input[k] = rename[i]
        if node.op_type == "Identity" and node.output[0] not in outputs:
            rename[node.output[0]] = node.input[0]
            continue
        kept.append(node)
    needed = set(outputs)
    live = []
    for node in reversed(kept):
        if any(o in needed for o in node.output):
            live.append(node)
            needed.update(i for i in node.input if i)
    live.reverse()
    del graph.node[:]
    graph.node.extend(live)
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    vi = [v for v in graph.value_info if v.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(vi)


def make_topk_sorted(model) -> int:
    """Set sorted=1 on every TopK (TensorRT 10.x rejects sorted=0). The model's token-selection
    TopK is unsorted because the order of the K keys does not matter (one softmax over them,
    bev.select_tokens): a sorted result is one of the valid unsorted results."""
    from onnx import helper

    changed = 0
    for node in model.graph.node:
        if node.op_type == "TopK" and int(_attr(node, "sorted", 1)) != 1:
            for a in list(node.attribute):
                if a.name == "sorted":
                    node.attribute.remove(a)
            node.attribute.append(helper.make_attribute("sorted", 1))
            changed += 1
    return changed


def fp32_node_names(model) -> list[str]:
    """Nodes a TensorRT FP16 build should keep in FP32: the calibration-only subgraph (rays,
    geometric scores, the top-K token choice and key geometry: fp32 even under autocast in the
    model, the choice needs the cosine resolution), every Softmax / LayerNormalization /
    Sigmoid / TopK, and everything after the heatmap Sigmoid (decode: peaks, TopK, gathers)."""
    graph = model.graph
    from_images = {"images"}
    for node in graph.node:
        if any(i in from_images for i in node.input):
            from_images.update(node.output)
    after_sigmoid: set[str] = set()
    for node in graph.node:
        if node.op_type == "Sigmoid" and "heatmap" in node.output:
            after_sigmoid.update(node.output)
        elif any(i in after_sigmoid for i in node.input):
            after_sigmoid.update(node.output)
    names = []
    for node in graph.node:
        calib_only = not any(o in from_images for o in node.output)
        score = node.op_type in ("Softmax", "LayerNormalization", "Sigmoid", "TopK")
        decode = any(o in after_sigmoid for o in node.output)
        if (calib_only or score or decode) and node.name:
            names.append(node.name)
    return names


# ---------------------------------------------------------------------------------------------
# fingerprints, sidecars, freshness
# ---------------------------------------------------------------------------------------------
def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_onnx_path(model_dir) -> Path:
    """engines/<model>/<model>.onnx (ignored by git)."""
    model_dir = Path(model_dir)
    return model_dir / f"{model_dir.name}.onnx"


def sidecar_path(onnx_path) -> Path:
    p = Path(onnx_path)
    return p.with_name(p.name + ".json")


def source_fingerprint(model_dir, *, batch: int = 1, opset: int = DEFAULT_OPSET) -> dict:
    """What an export depends on: config.yaml, model.safetensors (or the seeded random init that
    replaces it), the model's source code, the batch, the opset and the export format."""
    from perception.model.weights import WEIGHTS_FILE

    model_dir = Path(model_dir)
    weights = model_dir / WEIGHTS_FILE
    code = hashlib.sha256()
    model_pkg = Path(__file__).resolve().parents[1] / "model"
    for p in sorted(model_pkg.glob("*.py")):
        code.update(p.name.encode() + b"\0" + p.read_bytes())
    return {"config_sha256": file_sha256(model_dir / CONFIG_FILE),
            "weights_sha256": file_sha256(weights) if weights.exists() else "random-init-seed-0",
            "model_code_sha256": code.hexdigest(),
            "batch": int(batch), "opset": int(opset), "export_format": EXPORT_FORMAT}


def read_sidecar(onnx_path) -> dict | None:
    try:
        data = json.loads(sidecar_path(onnx_path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def onnx_status(onnx_path, model_dir, *, batch: int = 1, opset: int = DEFAULT_OPSET) -> tuple[bool, str]:
    """(fresh, reason): is the ONNX at onnx_path an export of model_dir as it is now?"""
    onnx_path = Path(onnx_path)
    if not onnx_path.exists():
        return False, f"{onnx_path} does not exist"
    side = read_sidecar(onnx_path)
    if side is None:
        return False, f"{sidecar_path(onnx_path)} is missing or unreadable"
    if side.get("onnx_sha256") != file_sha256(onnx_path):
        return False, f"{onnx_path} does not match the sha256 in its sidecar (edited or truncated)"
    current = source_fingerprint(model_dir, batch=batch, opset=opset)
    stored = side.get("source") or {}
    changed = sorted(k for k in current if stored.get(k) != current[k])
    if changed:
        return False, f"stale: {', '.join(changed)} changed since the export"
    return True, "up to date"


def _io_spec(values) -> list[dict]:
    import onnx

    return [{"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
             "shape": _static_dims(v)} for v in values]


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------
@dataclass
class ExportResult:
    path: Path
    sidecar: dict
    seconds: float


def export_onnx(model_dir, output=None, *, batch: int = 1, opset: int = DEFAULT_OPSET,
                allow_random_init: bool = False, verify: bool = True, check: bool = True) -> ExportResult:
    """Export model_dir to ONNX (static shapes), post-process it for TensorRT, check it and write
    it with its sidecar. `verify` runs ONNX Runtime (when installed) against PyTorch once and
    records the max abs heatmap difference in the sidecar."""

    from perception.inputs import example_inputs
    from perception.model.weights import load_model

    t0 = time.perf_counter()
    model_dir = Path(model_dir)
    output = Path(output) if output else default_onnx_path(model_dir)
    model, cfg = load_model(model_dir, allow_random_init=allow_random_init)
    model.eval()
    x = example_inputs(cfg, batch)
    proto, post = _trace_to_onnx(model, x, INPUT_NAMES, OUTPUT_NAMES, opset)
    if check:
        assert_tensorrt_compatible(proto)
    data = proto.SerializeToString()
    sidecar = _sidecar(proto, data, output, model_dir, cfg, batch, opset, post)
    sidecar["tensorrt_fp32_nodes"] = fp32_node_names(proto)
    if verify:
        sidecar["verified_vs_torch"] = _verify_with_onnxruntime(data, model, x)
    atomic_write(output, data)
    atomic_write(sidecar_path(output), (json.dumps(sidecar, indent=1) + "\n").encode())
    return ExportResult(output, sidecar, time.perf_counter() - t0)


def _trace_to_onnx(module, args, input_names, output_names, opset: int):
    """torch.onnx.export (the TorchScript tracer, so the model takes its export path: bev._exporting)
    plus the post-processing above -> (onnx.ModelProto with inferred static shapes, what was done)."""
    import onnx
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, tuple(args), str(raw), input_names=list(input_names),
                              output_names=list(output_names), opset_version=opset, dynamo=False,
                              do_constant_folding=True)
        proto = onnx.load(str(raw))
    folded = fold_constants(proto)
    remove_identities_and_dead_nodes(proto)
    resorted = make_topk_sorted(proto)
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    proto.producer_name = "perception.runtime.onnx_export"
    return proto, {"folded_nodes": folded, "topk_made_sorted": resorted}


def _sidecar(proto, data: bytes, output: Path, model_dir: Path, cfg, batch: int, opset: int, post: dict) -> dict:
    import onnx
    import torch

    ops: dict[str, int] = {}
    for n in proto.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {
        "onnx_file": output.name,
        "onnx_sha256": hashlib.sha256(data).hexdigest(),
        "opset": opset,
        "inputs": _io_spec(proto.graph.input),
        "outputs": _io_spec(proto.graph.output),
        "source": source_fingerprint(model_dir, batch=batch, opset=opset),
        "model_name": cfg.name,
        "weights": WEIGHTS_FILE if (model_dir / WEIGHTS_FILE).exists() else "RANDOM INIT (seed 0)",
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "exported_unix": int(time.time()),
        "post_processing": post,
        "ops": dict(sorted(ops.items())),
    }


# ---------------------------------------------------------------------------------------------
# the split pair: geometry (calibration -> geo tensors) and features (pixels + geo -> outputs)
# ---------------------------------------------------------------------------------------------
def geometry_module(model, geometry_names: tuple[str, ...]):
    """BEVViT.geometry as a module with flat outputs, in the order `geometry_names` (the order of
    the dict BEVViT.geometry returns, as the Inductor package records it)."""
    from torch import nn

    class GeometryGraph(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, intrinsics_inv, ego_from_camera, camera_mask):
            geo = self.model.geometry(intrinsics_inv, ego_from_camera, camera_mask)
            return tuple(geo[n] for n in geometry_names)

    return GeometryGraph().eval()


def split_onnx_paths(onnx_path) -> tuple[Path, Path]:
    """The split pair beside the full graph: <stem>.geometry.onnx and <stem>.features.onnx."""
    p = Path(onnx_path)
    return p.with_name(f"{p.stem}.geometry.onnx"), p.with_name(f"{p.stem}.features.onnx")


def split_status(onnx_path, model_dir, *, batch: int = 1, opset: int = DEFAULT_OPSET) -> tuple[bool, str]:
    """(fresh, reason) of the split pair of the full graph at onnx_path (see onnx_status): both
    files up to date and written by the same export (same geometry names, same export id)."""
    geo_path, feat_path = split_onnx_paths(onnx_path)
    for p in (geo_path, feat_path):
        fresh, reason = onnx_status(p, model_dir, batch=batch, opset=opset)
        if not fresh:
            return False, reason
    a, b = read_sidecar(geo_path) or {}, read_sidecar(feat_path) or {}
    if not a.get("geometry_names") or a.get("geometry_names") != b.get("geometry_names") \
            or a.get("split_id") != b.get("split_id"):
        return False, f"{geo_path.name} and {feat_path.name} are not from the same export"
    return True, "up to date"


def export_split_onnx(model_dir, onnx_path=None, *, batch: int = 1, opset: int = DEFAULT_OPSET,
                      allow_random_init: bool = False, verify: bool = True,
                      check: bool = True) -> tuple[ExportResult, ExportResult]:
    """Export the model as two graphs beside the full one (split_onnx_paths), each with a sidecar
    like the full graph's plus `geometry_names`:
    - geometry: inputs intrinsics_inv, ego_from_camera, camera_mask -> the tensors of
      BEVViT.geometry, named and ordered as geometry_names (what a runtime caches per calibration);
    - features: inputs images then the geometry tensors in that order (the Inductor package's
      convention, inductor_artifact.ServedGraph) -> outputs as base.OUTPUT_NAMES.
    Both are traced like the full graph (ONNX export path of the model: Gather + MatMul). `verify`
    runs both in ONNX Runtime (when installed) against the PyTorch model once."""
    import torch

    from perception.inputs import example_inputs
    from perception.model.weights import load_model
    from perception.runtime.inductor_artifact import ServedGraph

    t0 = time.perf_counter()
    model_dir = Path(model_dir)
    onnx_path = Path(onnx_path) if onnx_path else default_onnx_path(model_dir)
    geo_path, feat_path = split_onnx_paths(onnx_path)
    model, cfg = load_model(model_dir, allow_random_init=allow_random_init)
    model.eval()
    x = example_inputs(cfg, batch)
    with torch.no_grad():
        geo = model.geometry(*x[1:])
    names = tuple(geo)
    geo_proto, geo_post = _trace_to_onnx(geometry_module(model, names), x[1:], GEOMETRY_INPUT_NAMES, names, opset)
    feat_proto, feat_post = _trace_to_onnx(ServedGraph(model, names).eval(), (x[0], *(geo[n] for n in names)),
                                           ("images", *names), OUTPUT_NAMES, opset)
    if check:
        assert_tensorrt_compatible(geo_proto)
        assert_tensorrt_compatible(feat_proto)
    geo_data, feat_data = geo_proto.SerializeToString(), feat_proto.SerializeToString()
    split_id = hashlib.sha256(geo_data + feat_data).hexdigest()[:16]
    sides = []
    for part, proto, data, path, post in (("geometry", geo_proto, geo_data, geo_path, geo_post),
                                          ("features", feat_proto, feat_data, feat_path, feat_post)):
        side = _sidecar(proto, data, path, model_dir, cfg, batch, opset, post)
        side.update({"part": part, "split_of": onnx_path.name, "split_id": split_id, "geometry_names": list(names)})
        sides.append(side)
    if verify:
        sides[1]["verified_vs_torch"] = _verify_split_with_onnxruntime(geo_data, feat_data, names, model, x)
    for path, data, side in ((geo_path, geo_data, sides[0]), (feat_path, feat_data, sides[1])):
        atomic_write(path, data)
        atomic_write(sidecar_path(path), (json.dumps(side, indent=1) + "\n").encode())
    seconds = time.perf_counter() - t0
    return ExportResult(geo_path, sides[0], seconds), ExportResult(feat_path, sides[1], seconds)


def _verify_split_with_onnxruntime(geo_data: bytes, feat_data: bytes, names, model, x) -> dict | str:
    def run(ort, so):
        geo_sess = ort.InferenceSession(geo_data, so, providers=["CPUExecutionProvider"])
        feat_sess = ort.InferenceSession(feat_data, so, providers=["CPUExecutionProvider"])
        geo_feed = {n: v.numpy() for n, v in zip(GEOMETRY_INPUT_NAMES, x[1:])}
        geo = dict(zip(names, geo_sess.run(list(names), geo_feed)))
        feed = {"images": x[0].numpy(), **{i.name: geo[i.name] for i in feat_sess.get_inputs() if i.name != "images"}}
        return feat_sess.run(list(OUTPUT_NAMES), feed)

    return _compare_with_torch(run, model, x)


def ensure_split_onnx(model_dir, onnx_path=None, *, batch: int = 1, opset: int = DEFAULT_OPSET,
                      allow_random_init: bool = False) -> tuple[Path, Path]:
    """The (geometry, features) paths of an up-to-date split export of model_dir, exporting the
    pair first when either file is missing or stale (split_status)."""
    onnx_path = Path(onnx_path) if onnx_path else default_onnx_path(model_dir)
    fresh, reason = split_status(onnx_path, model_dir, batch=batch, opset=opset)
    if not fresh:
        log.info("exporting the split ONNX pair (%s)", reason)
        geo, feat = export_split_onnx(model_dir, onnx_path, batch=batch, opset=opset,
                                      allow_random_init=allow_random_init)
        log.info("exported %s and %s in %.1f s", geo.path.name, feat.path.name, geo.seconds)
    return split_onnx_paths(onnx_path)


def _verify_with_onnxruntime(data: bytes, model, x) -> dict | str:
    def run(ort, so):
        sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        return sess.run(list(OUTPUT_NAMES), {n: v.numpy() for n, v in zip(INPUT_NAMES, x)})

    return _compare_with_torch(run, model, x)


def _compare_with_torch(run, model, x) -> dict | str:
    """Max heatmap/regression differences between an ONNX Runtime run (run(ort, session_options) ->
    outputs in OUTPUT_NAMES order) and the torch model on the same example inputs."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "skipped (onnxruntime not installed)"
    import torch

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    got = dict(zip(OUTPUT_NAMES, run(ort, so)))
    with torch.inference_mode():
        ref = model(*x)
    return {"heatmap_max_abs_diff": float(np.abs(got["heatmap"] - ref["heatmap"].numpy()).max()),
            "regression_max_abs_diff": float(np.abs(got["regression"] - ref["regression"].numpy()).max()),
            "inputs": "random uint8 images, default rig calibration"}


def ensure_onnx(model_dir, onnx_path=None, *, batch: int = 1, opset: int = DEFAULT_OPSET,
                allow_random_init: bool = False) -> Path:
    """The path of an up-to-date ONNX export of model_dir, exporting it first when it is missing or
    stale (weights, config or model code changed since; see onnx_status)."""
    onnx_path = Path(onnx_path) if onnx_path else default_onnx_path(model_dir)
    fresh, reason = onnx_status(onnx_path, model_dir, batch=batch, opset=opset)
    if fresh:
        return onnx_path
    log.info("exporting ONNX (%s)", reason)
    res = export_onnx(model_dir, onnx_path, batch=batch, opset=opset, allow_random_init=allow_random_init)
    log.info("exported %s in %.1f s (sha256 %s)", res.path, res.seconds, res.sidecar["onnx_sha256"][:12])
    return res.path
