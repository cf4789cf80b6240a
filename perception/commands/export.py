"""`perception export`: the BEV ViT as a static-shape ONNX graph that TensorRT parses natively
(perception/runtime/onnx_export.py says what the graph is and how it is checked).

    perception export [--model engines/bev_vit] [--output FILE] [--batch 1] [--opset 17] [--no-split]

Beside FILE it writes the split pair that the ONNX Runtime backend runs (FILE's stem +
.geometry.onnx: calibration -> geometry tensors, + .features.onnx: images + geometry tensors ->
outputs), each with its sidecar; --no-split writes FILE alone. TensorRT uses FILE.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from perception.config import DEFAULT_MODEL_DIR
    from perception.runtime.onnx_export import DEFAULT_OPSET

    p = argparse.ArgumentParser(
        prog="perception export",
        description="Export the model to ONNX with static shapes (uint8 images, calibration and camera mask "
                    "as inputs), constant-folded, checked with the ONNX checker and against the operators "
                    "TensorRT parses natively; writes FILE and FILE.json (sha256, opset, I/O, source fingerprint).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="model directory (config.yaml + model.safetensors)")
    p.add_argument("--output", default=None, help="ONNX file (default: <model>/<model name>.onnx)")
    p.add_argument("--batch", type=int, default=1, help="static batch size of the graph")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--no-split", action="store_true",
                   help="do not write the split geometry/features pair beside FILE (the ONNX Runtime backend's graphs)")
    p.add_argument("--force", action="store_true", help="export even when the existing file is up to date")
    p.add_argument("--allow-random-init", action="store_true",
                   help="export seeded random weights when the model directory has none (testing)")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from perception.logs import setup_logging

    setup_logging(args.log_level)
    from perception.config import ConfigError
    from perception.runtime.onnx_export import (
        ExportError,
        default_onnx_path,
        export_onnx,
        export_split_onnx,
        onnx_status,
        sidecar_path,
        split_onnx_paths,
        split_status,
    )

    output = Path(args.output) if args.output else default_onnx_path(args.model)
    try:
        if not args.no_split:
            split_fresh, _ = split_status(output, args.model, batch=args.batch, opset=args.opset)
            if split_fresh and not args.force:
                print(f"{', '.join(p.name for p in split_onnx_paths(output))}: up to date")
            else:
                geo, feat = export_split_onnx(args.model, output, batch=args.batch, opset=args.opset,
                                              allow_random_init=args.allow_random_init)
                v = feat.sidecar.get("verified_vs_torch")
                diff = f", ONNX Runtime vs PyTorch heatmap max |diff| {v['heatmap_max_abs_diff']:.2e}" \
                    if isinstance(v, dict) else ""
                print(f"wrote {geo.path.name} and {feat.path.name} (geometry: {', '.join(geo.sidecar['geometry_names'])}) "
                      f"in {geo.seconds:.1f} s{diff}")
        fresh, reason = onnx_status(output, args.model, batch=args.batch, opset=args.opset)
        if fresh and not args.force:
            print(f"{output}: up to date (use --force to export again)")
            return 0
        res = export_onnx(args.model, output, batch=args.batch, opset=args.opset,
                          allow_random_init=args.allow_random_init)
    except (ConfigError, ExportError, FileNotFoundError) as e:
        print(f"perception export: {e}", file=sys.stderr)
        return 2
    s = res.sidecar
    print(f"wrote {res.path} ({res.path.stat().st_size / 1e6:.2f} MB) and {sidecar_path(res.path).name} "
          f"in {res.seconds:.1f} s")
    print(f"  sha256  {s['onnx_sha256']}")
    print(f"  opset   {s['opset']}   weights: {s['weights']}")
    for kind in ("inputs", "outputs"):
        for v in s[kind]:
            print(f"  {kind[:-1]:6s}  {v['name']:16s} {v['dtype']:8s} {v['shape']}")
    print(f"  ops     {len(s['ops'])} types, {sum(s['ops'].values())} nodes: "
          + ", ".join(f"{k} {v}" for k, v in s["ops"].items()))
    print("  check   ONNX checker ok, every op in the TensorRT allow-list, all shapes static")
    v = s.get("verified_vs_torch")
    if isinstance(v, dict):
        print(f"  verify  ONNX Runtime vs PyTorch: heatmap max |diff| {v['heatmap_max_abs_diff']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
