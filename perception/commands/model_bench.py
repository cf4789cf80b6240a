"""Quick CPU timing of the model: `python -m perception.commands.model_bench [--threads 2] [--batch 8]`.

Prints parameters, analytic FLOPs, forward latency at batch 1 (inference_mode; with --onnx also
ONNX Runtime on the CPU) and the time of a forward+backward+AdamW step at --batch, medians over a
few repetitions (perception.model.bench.benchmark). Random weights and inputs: timing does not
depend on them. On a shared machine run it when nothing else is busy (the numbers scale with the
load). `perception bench` times the serving engines; this times the bare model and a training step.
"""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--no-tune", action="store_true", help="leave glibc malloc settings alone")
    p.add_argument("--bf16", action="store_true", help="train step under CPU bf16 autocast")
    p.add_argument("--onnx", action="store_true", help="also time ONNX Runtime (CPU) at batch 1")
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    from perception.model.bench import benchmark

    res = benchmark(threads=a.threads, batch=a.batch, reps=a.reps, tune=not a.no_tune, bf16=a.bf16,
                    onnx=a.onnx)
    for k, v in res.items():
        print(f"{k:24s} {v:.3f}" if isinstance(v, float) else f"{k:24s} {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
