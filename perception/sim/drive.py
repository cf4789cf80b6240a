"""A recorded drive made by the simulator, without running the pipeline: the MCAP file that
`perception record` would write while `perception launch` runs the simulated rig (camera frames as
perception.v1.RecordedFrame, ground truth on sim/truth), rendered directly at exact capture times.

Used by the tests and to make the regression drive (docs/recording.md): a few seconds of the
default rig, no sockets, the same bytes on every machine for the same arguments.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from perception import config as pconfig
from perception import topics

EXPOSURE_NS = 5_000_000             # as perception.cameras.process.CameraReader
PHASE_NS = 5_000_000                # camera i captures i x 5 ms after the tick (triggered in turn)
CALIBRATION_EVERY = 50              # a full calibration in the header every this many frames


def write_sim_drive(path: str | Path, *, seconds: float = 1.0, rate_hz: float = 10.0, seed: int = 11,
                    t0_ns: int = 1_000_000_000_000, rig_path=pconfig.DEFAULT_RIG,
                    cameras: list[str] | None = None, truth: bool = True) -> dict:
    """Render `seconds` of world `seed` into the rig's cameras (or `cameras` of it) at `rate_hz` and
    write them, with ground truth per tick stamped like the front camera, to `path`.
    -> {"frames": n, "truth": n, "ticks": n, "stamps": {camera: [capture_end_ns, ...]}}."""
    from perception.record import McapFileWriter
    from perception.sim import World, render
    from perception.sim.truth import ground_truth_message
    from perception.v1 import frame_pb2, recording_pb2

    if not (0 < rate_hz <= 1000) or not (0 < seconds <= 3600):
        raise ValueError(f"rate_hz {rate_hz} / seconds {seconds} out of range")
    rig = pconfig.load_rig(rig_path)
    names = rig.camera_names if cameras is None else list(cameras)
    period_ns = int(1e9 / rate_hz)
    ticks = max(1, int(round(seconds * rate_hz)))
    world = World(seed)
    out = McapFileWriter(path)
    stamps: dict[str, list[int]] = {n: [] for n in names}
    n_frames = n_truth = 0
    try:
        for k in range(ticks):
            tick = t0_ns + k * period_ns
            if truth:
                msg = ground_truth_message(world, tick, seed, rig)
                out.write(topics.TRUTH, msg, tick, tick)
                n_truth += 1
            for name in names:
                cam = rig.camera(name)
                end = tick + PHASE_NS * rig.index(name)
                image = np.ascontiguousarray(render(world.scene_at(end), cam))      # (H, W, 3) uint8 BGR
                h = frame_pb2.FrameHeader(
                    camera_name=name, sequence=k, capture_start_ns=end - EXPOSURE_NS, capture_end_ns=end,
                    publish_ns=end, width=image.shape[1], height=image.shape[0],
                    encoding=frame_pb2.PIXEL_ENCODING_BGR8, row_stride=image.strides[0],
                    calibration_id=cam.calibration_id, source="sim")
                if k % CALIBRATION_EVERY == 0:
                    h.calibration.CopyFrom(cam.to_proto())
                out.write(topics.camera(name), recording_pb2.RecordedFrame(header=h, pixels=image.tobytes()), end, end)
                stamps[name].append(end)
                n_frames += 1
    finally:
        out.close()
    return {"frames": n_frames, "truth": n_truth, "ticks": ticks, "stamps": stamps}
