"""The camera reader process (run by `perception camera`, perception/commands/camera.py).

Reads frames from one source and publishes them at a target rate: a FrameHeader (protobuf)
followed by the raw pixels as their own message part. Simulated cameras capture on a shared
time grid (plus a per-camera phase, like cameras triggered in turn), so independent processes
render one consistent world and the fusion node can group them by capture time.
"""
from __future__ import annotations

import logging
import time

from perception import config as cfg
from perception import topics

log = logging.getLogger("perception.camera")

CALIBRATION_EVERY = 50      # frames between full calibrations in the header (late joiners learn it)


class CameraReader:
    def __init__(self, config: cfg.CameraProcessConfig):
        from perception.cameras.sources import open_source
        from perception.transport import Publisher

        if config.rate <= 0:
            raise cfg.ConfigError(f"--rate must be positive, got {config.rate}")
        if config.truth and config.source != "sim":
            raise cfg.ConfigError("--truth needs --source sim (only the simulator knows the truth)")
        rig = cfg.load_rig(config.rig)
        self.rig = rig                          # the truth's visibility is measured in every camera
        self.camera = rig.camera(config.name)
        index = rig.index(config.name)
        self.config = config
        self.period_ns = int(1e9 / config.rate)
        phase_ms = 5.0 * index if config.phase_ms is None else config.phase_ms
        self.phase_ns = int(phase_ms * 1e6) % self.period_ns
        self.endpoint = config.endpoint or cfg.camera_endpoint(index)
        self.topic = topics.camera(config.name)
        self.source = open_source(config.source, self.camera, uri=config.uri, seed=config.seed, loop=config.loop)
        self.pub = Publisher(self.endpoint)
        self.calibration = self.camera.to_proto()
        self.sequence = 0
        self.overruns = 0
        self.truth_period_ns = int(1e9 / config.truth_rate) if config.truth_rate > 0 else 0
        self.last_truth_ns: int | None = None
        self.running = True
        log.info("camera %s: %s at %.1f Hz on %s (%s)", config.name, self.source.name, config.rate, self.endpoint,
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

        self.pub.publish(topics.TRUTH, ground_truth_message(self.source.world, stamp_ns, self.config.seed, self.rig))

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
            if self.config.truth and (self.last_truth_ns is None
                                    or end - self.last_truth_ns >= self.truth_period_ns - self.period_ns // 2):
                self._publish_truth(end)
                self.last_truth_ns = end
            self.sequence += 1
            k += 1
            if self.config.count is not None and self.sequence >= self.config.count:
                return 0
        return 0

    def close(self) -> None:
        self.source.close()
        self.pub.close()
        log.info("camera %s stopped: %d frames, %d overruns, %d skipped inputs", self.camera.name, self.sequence,
                 self.overruns, self.source.skipped)
