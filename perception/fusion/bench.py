"""The fusion step under the benchmarks: a simulated frame set, its model inputs through the
serving preprocessor, and the timing of FusionPipeline.process (`perception bench`,
scripts/gpu_check.py, tests). The engine-side timing helpers are in perception/runtime/bench.py."""
from __future__ import annotations

import numpy as np

from perception.config import RigConfig
from perception.runtime.bench import latencies_ms, summarize


def scene_frames(rig: RigConfig, seed: int = 11):
    """One simulated frame set at the rig's own resolution (320x180 for the default rig)."""
    from perception.sim import World, render

    world = World(seed)
    t_ns = 12_000_000_000
    scene = world.scene_at(t_ns)
    return {cam.name: render(scene, cam) for cam in rig.cameras}, t_ns


def make_frameset(rig: RigConfig, frames: dict, t_ns: int):
    """A complete FrameSet of `frames` (camera name -> pixels), every frame stamped t_ns."""
    from perception.fusion.pipeline import CameraFrame
    from perception.fusion.sync import FrameSet, TimedFrame

    timed = {name: TimedFrame(name, 1, t_ns, t_ns, CameraFrame(name, 1, t_ns, px)) for name, px in frames.items()}
    return FrameSet(frames=timed, missing=[], opened_ns=t_ns, ready_ns=t_ns)


def frameset_inputs(rig: RigConfig, frames: dict, cfg) -> dict:
    """The model inputs of `frames` at cfg's input size, as the live node's Preprocessor makes them
    (copies: the preprocessor reuses its buffers)."""
    from perception.fusion.pipeline import Preprocessor

    pre = Preprocessor(rig, cfg.image_width, cfg.image_height)
    return {k: v.copy() for k, v in pre(frames).items()}


def time_fusion_step(rig: RigConfig, engine, cfg, frames: dict, t_ns: int, *, iters: int, warmup: int,
                     max_seconds: float | None) -> dict:
    """Latency summary of the whole fusion step (FusionPipeline.process: preprocess + engine +
    decode to protobuf) on one frame set, plus the median of each stage."""
    from perception.fusion.pipeline import FusionPipeline

    pipe = FusionPipeline(rig, engine, cfg)
    fs = make_frameset(rig, frames, t_ns)
    stages: dict[str, list[float]] = {"preprocess": [], "inference": [], "postprocess": []}

    def step():
        msg = pipe.process(fs)
        stages["preprocess"].append(msg.timings.preprocess_ms)
        stages["inference"].append(msg.timings.inference_ms)
        stages["postprocess"].append(msg.timings.postprocess_ms)

    f = summarize(latencies_ms(step, iters, warmup, max_seconds))
    f.update({f"{k}_ms_p50": round(float(np.median(v[warmup:] or v)), 3) for k, v in stages.items()})
    return f
