"""Quick CPU timing of the model (the command: `python -m perception.commands.model_bench [--threads 2] [--batch 8]`).

Prints parameters, analytic FLOPs, forward latency at batch 1 (inference_mode; with --onnx also
ONNX Runtime on the CPU) and the time of a forward+backward+AdamW step at --batch, medians over a
few repetitions. Random weights and inputs: timing does not depend on them. On a shared machine
run it when nothing else is busy (the numbers scale with the load).
"""
from __future__ import annotations

import statistics
import time

import torch

from perception.inputs import example_inputs
from perception.model.config import ModelConfig
from perception.model.cpu_tuning import tune_cpu_allocator
from perception.model.vit import BEVViT
from perception.model.weights import count_parameters, flops_per_frameset


def _median_ms(fn, reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def onnxruntime_latency_ms(model: BEVViT, cfg: ModelConfig, threads: int = 2, reps: int = 10) -> float:
    """Export to ONNX (opset 17) in a temporary directory and time ONNX Runtime (CPU) at batch 1."""
    import tempfile
    import warnings
    from pathlib import Path

    import onnxruntime as ort

    from perception.inputs import INPUT_NAMES, OUTPUT_NAMES

    x = example_inputs(cfg, 1)
    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "model.onnx")
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.eval(), x, path, input_names=list(INPUT_NAMES),
                              output_names=list(OUTPUT_NAMES), opset_version=17, dynamo=False)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feeds = {n: v.numpy() for n, v in zip(INPUT_NAMES, x)}
    return _median_ms(lambda: sess.run(None, feeds), reps)


def benchmark(cfg: ModelConfig | None = None, threads: int = 2, batch: int = 8, reps: int = 10,
              train_reps: int = 6, tune: bool = True, bf16: bool = False, onnx: bool = False) -> dict:
    cfg = cfg or ModelConfig()
    torch.set_num_threads(threads)
    tuned = tune_cpu_allocator() if tune else False
    torch.manual_seed(0)
    model = BEVViT(cfg)
    out = {"params": count_parameters(model), "gflop_per_frameset": flops_per_frameset(cfg) / 1e9,
           "threads": threads, "allocator_tuned": tuned}
    model.eval()
    x1 = example_inputs(cfg, 1)
    with torch.inference_mode():
        out["forward_b1_ms"] = _median_ms(lambda: model(*x1), reps)
    if onnx:
        out["onnxruntime_b1_ms"] = onnxruntime_latency_ms(model, cfg, threads, reps)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    xb = example_inputs(cfg, batch)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            o = model.forward_train(*xb)
        loss = o["heatmap_logits"].float().sigmoid().mean() + o["regression"].float().square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    out[f"train_step_b{batch}_ms"] = _median_ms(step, train_reps)
    return out
