"""The camera reader process: `perception camera`.

Reads frames from one source and publishes them at a target rate: a FrameHeader (protobuf)
followed by the raw pixels as their own message part. Simulated cameras capture on a shared
time grid (plus a per-camera phase, like cameras triggered in turn), so independent processes
render one consistent world and the fusion node can group them by capture time.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time

from perception import config as cfg
from perception import topics
from perception.lifecycle import run_until_stopped

log = logging.getLogger("perception.camera")

CALIBRATION_EVERY = 50      # frames between full calibrations in the header (late joiners learn it)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="perception camera",
        description="Camera reader: publish one camera's frames over ZeroMQ on topic 'camera/<name>'.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--name", required=True, help="camera name in the rig file (e.g. front)")
    p.add_argument("--rig", default=str(cfg.DEFAULT_RIG), help="rig YAML with this camera's calibration")
    p.add_argument("--source", choices=("sim", "video", "images"), default="sim",
                   help="sim: built-in simulated world; video: OpenCV file/device/RTSP/GStreamer; images: a folder")
    p.add_argument("--uri", help="video file, device index, RTSP URL or GStreamer pipeline; or image folder")
    p.add_argument("--loop", action="store_true", help="restart a video or image folder at its end")
    p.add_argument("--seed", type=int, default=0, help="world seed of the sim source")
    p.add_argument("--rate", type=float, default=10.0, help="frames per second")
    p.add_argument("--phase-ms", type=float, default=None,
                   help="capture offset within the period (default: 5 ms x the camera's index in the rig)")
    p.add_argument("--endpoint", default=None, help="endpoint to bind (default: tcp://127.0.0.1:5550+index)")
    p.add_argument("--truth", action="store_true", help="also publish the sim's ground truth on 'sim/truth'")
    p.add_argument("--truth-rate", type=float, default=10.0,
                   help="publish ground truth at most this often (Hz), at the stamp of a frame: the visibility "
                        "renders behind it cost more than the frame itself")
    p.add_argument("--count", type=int, default=None, help="stop after this many frames")
    p.add_argument("--log-level", default="INFO")
    return p


class CameraReader:
    def __init__(self, args: argparse.Namespace):
        from perception.cameras.sources import open_source
        from perception.transport import Publisher

        if args.rate <= 0:
            raise cfg.ConfigError(f"--rate must be positive, got {args.rate}")
        if args.truth and args.source != "sim":
            raise cfg.ConfigError("--truth needs --source sim (only the simulator knows the truth)")
        rig = cfg.load_rig(args.rig)
        self.rig = rig                          # the truth's visibility is measured in every camera
        self.camera = rig.camera(args.name)
        index = rig.index(args.name)
        self.args = args
        self.period_ns = int(1e9 / args.rate)
        phase_ms = 5.0 * index if args.phase_ms is None else args.phase_ms
        self.phase_ns = int(phase_ms * 1e6) % self.period_ns
        self.endpoint = args.endpoint or cfg.camera_endpoint(index)
        self.topic = topics.camera(args.name)
        self.source = open_source(args.source, self.camera, uri=args.uri, seed=args.seed, loop=args.loop)
        self.pub = Publisher(self.endpoint)
        self.calibration = self.camera.to_proto()
        self.sequence = 0
        self.overruns = 0
        self.truth_period_ns = int(1e9 / args.truth_rate) if args.truth_rate > 0 else 0
        self.last_truth_ns: int | None = None
        self.running = True
        log.info("camera %s: %s at %.1f Hz on %s (%s)", args.name, self.source.name, args.rate, self.endpoint,
                 self.topic)

    def _header(self, capture_start_ns: int, capture_end_ns: int, image):
        from perception.v1 import frame_pb2

        h = frame_pb2.FrameHeader(
            camera_name=self.camera.name, sequence=self.sequence, capture_start_ns=capture_start_ns,
            capture_end_ns=capture_end_ns, publish_ns=time.time_ns(), width=image.shape[1],
            height=image.shape[0], encoding=frame_pb2.PIXEL_ENCODING_BGR8, row_stride=image.strides[0],
            calibration_id=self.camera.calibration_id, source=self.source.name)
        # Periodically, and whenever a subscriber (re)joins, so a restarted node learns it at once.
        if self.sequence % CALIBRATION_EVERY == 0 or self.pub.new_subscriptions() > 0:
            h.calibration.CopyFrom(self.calibration)
        return h

    def _publish_truth(self, stamp_ns: int) -> None:
        from perception.sim.truth import ground_truth_message

        self.pub.publish(topics.TRUTH, ground_truth_message(self.source.world, stamp_ns, self.args.seed, self.rig))

    def run(self) -> int:
        k = (time.time_ns() - self.phase_ns) // self.period_ns + 1
        exposure_ns = 5_000_000
        while self.running:
            tick = k * self.period_ns + self.phase_ns
            delay = tick - time.time_ns()
            if delay > 0:
                time.sleep(delay / 1e9)
            elif -delay > self.period_ns:            # fell behind: skip ticks, never burst
                skipped = -delay // self.period_ns
                self.overruns += skipped
                k += skipped
                continue
            image = self.source.read(tick)
            if image is None:
                log.info("camera %s: source %s ended after %d frames", self.camera.name, self.source.name, self.sequence)
                return 0
            # A timed source renders the world exactly at `tick`; others were captured just now.
            end = tick if self.source.timed else time.time_ns()
            self.pub.publish(self.topic, self._header(end - exposure_ns, end, image), image)
            if self.args.truth and (self.last_truth_ns is None
                                    or end - self.last_truth_ns >= self.truth_period_ns - self.period_ns // 2):
                self._publish_truth(end)
                self.last_truth_ns = end
            self.sequence += 1
            k += 1
            if self.args.count is not None and self.sequence >= self.args.count:
                return 0
        return 0

    def close(self) -> None:
        self.source.close()
        self.pub.close()
        log.info("camera %s stopped: %d frames, %d overruns, %d skipped inputs", self.camera.name, self.sequence,
                 self.overruns, self.source.skipped)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from perception.logs import setup_logging

    setup_logging(args.log_level)
    from perception.cameras.sources import SourceError

    try:
        reader = CameraReader(args)
    except (cfg.ConfigError, SourceError) as e:
        log.error("camera %s cannot start: %s", args.name, e)
        return 1

    try:
        return run_until_stopped(reader)
    except SourceError as e:
        log.error("camera %s: source failed: %s", args.name, e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
