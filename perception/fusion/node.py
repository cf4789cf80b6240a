"""The fusion node process (run by `perception fuse`, perception/commands/fuse.py).

Subscribes to every camera of the rig, groups frames into frame sets by capture time,
runs the model through an engine and publishes Detections, plus NodeStatus about once per
second. Bad input (malformed messages, wrong sizes, stale calibration, late or duplicate
frames) is counted and logged, never fatal.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from perception import config as cfg
from perception import topics
from perception.fusion.pipeline import CameraFrame, FrameRejected, FusionPipeline
from perception.fusion.stats import CameraCounters, RateMeter, Rolling
from perception.fusion.sync import ApproximateTimeSync, TimedFrame
from perception.model.weights import CONFIG_FILE

log = logging.getLogger("perception.fuse")

STAGES = ("sync_wait", "preprocess", "inference", "postprocess", "total")


class FusionNode:
    def __init__(self, config: cfg.FusionNodeConfig):
        from perception.model.config import load_model_config
        from perception.runtime import create_engine
        from perception.transport import Publisher, Subscriber

        self.config = config
        self.rig = cfg.load_rig(config.rig)
        names = self.rig.camera_names
        model_dir = Path(config.model)
        self.model_cfg = load_model_config(model_dir / CONFIG_FILE)
        if self.model_cfg.num_cameras != len(names):
            raise cfg.ConfigError(f"model {model_dir} expects {self.model_cfg.num_cameras} cameras, "
                                  f"rig {config.rig} has {len(names)}")
        self.engine = create_engine(config.backend, model_dir, threads=config.threads,
                                    allow_random_init=config.allow_random_init)
        self.pipeline = FusionPipeline(self.rig, self.engine, self.model_cfg, config.score_threshold)
        self.sync = ApproximateTimeSync(names, int(config.max_span_ms * 1e6), int(config.timeout_ms * 1e6),
                                        min_cameras=config.min_cameras)
        endpoints = list(config.camera_endpoints or [cfg.camera_endpoint(i) for i in range(len(names))])
        self.online = None
        wanted = [topics.camera(n) for n in names]
        if config.online_score:
            from perception.fusion.online_score import OnlineScore

            self.online = OnlineScore(self.model_cfg.classes, self.model_cfg.bev_x_range, self.model_cfg.bev_y_range)
            wanted.append(topics.TRUTH)
        self.sub = Subscriber(endpoints, wanted)
        self.pub = Publisher(config.publish)
        self.cameras = {n: CameraCounters() for n in names}
        self.rejected: dict[str, int] = {}
        self.stages = {s: Rolling() for s in STAGES}
        self.latency = Rolling()
        self.output_rate = RateMeter()
        self.sets_dropped_overload = 0
        self._last_sequence: dict[str, int] = {}    # per camera, in the last processed set
        self.started_ns = time.time_ns()
        self.running = True
        log.info("fusion node: %d cameras from %s, model %s on %s, publishing on %s",
                 len(names), ", ".join(endpoints), self.model_cfg.name, self.engine.name, config.publish)

    # -- input ---------------------------------------------------------------------------
    def _reject(self, camera: str | None, reason: str, detail: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if camera in self.cameras:
            self.cameras[camera].rejected += 1
        n = self.rejected[reason]
        if n & (n - 1) == 0:          # log the 1st, 2nd, 4th, 8th ... of each reason
            log.warning("dropped frame (%s, %d so far): %s", reason, n, detail)

    def _accept(self, rx, now_ns: int) -> TimedFrame | None:
        from perception.config import CameraConfig
        from perception.transport import MalformedMessage, frame_pixels

        h = rx.msg
        camera = h.camera_name
        if rx.topic != topics.camera(camera):
            self._reject(None, "topic_mismatch", f"{camera!r} on topic {rx.topic!r}")
            return None
        try:
            if h.HasField("calibration") and camera in self.cameras:
                self._maybe_update_calibration(CameraConfig.from_proto(h.calibration))
            self.pipeline.preprocess.check(camera, h.calibration_id, h.width, h.height)
            pixels = frame_pixels(rx)
        except FrameRejected as e:
            self._reject(camera, e.reason, str(e))
            return None
        except (MalformedMessage, cfg.ConfigError) as e:
            self._reject(camera, "malformed", str(e))
            return None
        self.cameras[camera].on_frame(h.sequence, h.capture_end_ns, now_ns, rx.superseded)
        return TimedFrame(camera, h.sequence, h.capture_end_ns, now_ns,
                          CameraFrame(camera, h.sequence, h.capture_end_ns, pixels))

    def _maybe_update_calibration(self, cam) -> None:
        """A frame carrying a calibration that differs from the held one replaces it: calibration
        is a model input, so a recalibrated camera needs no restart."""
        held = self.pipeline.preprocess.calibrations[cam.name]
        if cam.calibration_id != held.calibration_id:
            self.pipeline.preprocess.update_calibration(cam)
            log.info("camera %s: calibration %s replaces %s", cam.name, cam.calibration_id, held.calibration_id)

    # -- main loop -------------------------------------------------------------------------
    def run(self) -> int:
        status_period_ns = 1_000_000_000
        next_status = time.time_ns() + status_period_ns
        end = None if self.config.duration is None else time.time_ns() + int(self.config.duration * 1e9)
        while self.running and (end is None or time.time_ns() < end):
            deadline = self.sync.next_deadline_ns()
            wait_ns = min(next_status, deadline if deadline is not None else next_status) - time.time_ns()
            received = self.sub.drain_latest(timeout_ms=max(0, min(100, int(wait_ns / 1e6))))
            now = time.time_ns()
            ready = []
            for rx in received:
                if rx.topic == topics.TRUTH:
                    if self.online is not None:
                        self.online.add_truth(rx.msg)
                    continue
                frame = self._accept(rx, now)
                if frame is not None:
                    ready += self.sync.push(frame, now)
            ready += self.sync.poll(now)
            if ready:
                # Only the newest set is worth computing; older ones would only add latency
                # (cameras faster than the engine): drop the oldest, count them, never queue.
                self._count_skipped(ready[-1])
                self._process(ready[-1])
            if time.time_ns() >= next_status:
                self._publish_status()
                next_status = time.time_ns() + status_period_ns
        return 0

    def _count_skipped(self, frameset) -> None:
        """Frame sets the rig captured since the last processed one and never computed (a newer
        set was ready, or their frames were superseded in the receive queues while the engine was
        busy): the largest per-camera sequence gap. A camera whose sequence went back (restart)
        does not count."""
        gaps = [f.sequence - self._last_sequence[name] - 1 for name, f in frameset.frames.items()
                if name in self._last_sequence and f.sequence > self._last_sequence[name]]
        self.sets_dropped_overload += max(gaps, default=0)
        for name, f in frameset.frames.items():
            self._last_sequence[name] = f.sequence

    def _process(self, frameset) -> None:
        msg = self.pipeline.process(frameset, publish_ns=time.time_ns())
        now = time.time_ns()
        self.pub.publish(topics.DETECTIONS, msg)
        if self.online is not None:
            self.online.add_detections(msg)
        t = msg.timings
        for stage, v in zip(STAGES, (t.sync_wait_ms, t.preprocess_ms, t.inference_ms, t.postprocess_ms, t.total_ms)):
            self.stages[stage].add(v)
        self.latency.add((now - frameset.stamp_ns) / 1e6)
        self.output_rate.tick(now)

    def status_message(self):
        from perception.v1 import status_pb2

        now = time.time_ns()
        msg = status_pb2.NodeStatus(node="fusion", stamp_ns=now, model_name=self.model_cfg.name,
                                    backend=self.engine.name, outputs=self.pipeline.outputs_count,
                                    output_rate_hz=self.output_rate.rate(now),
                                    sync_complete=self.sync.stats.complete, sync_partial=self.sync.stats.partial,
                                    sync_dropped=self.sync.stats.dropped,
                                    sets_dropped_overload=self.sets_dropped_overload,
                                    latency_ms_p50=self.latency.percentile(50),
                                    latency_ms_p99=self.latency.percentile(99),
                                    uptime_s=(now - self.started_ns) / 1e9)
        for sw in getattr(self.engine, "switches", ()):
            msg.engine_switches.add(stamp_ns=sw["unix_ns"], from_backend=sw["from"], to_backend=sw["to"],
                                    reason=sw["reason"])
        worst = status_pb2.LEVEL_OK
        for name, c in self.cameras.items():
            age = (now - c.last_stamp_ns) / 1e6 if c.last_stamp_ns else float("inf")
            level = status_pb2.LEVEL_OK if age < self.config.stale_ms else status_pb2.LEVEL_STALE
            worst = max(worst, status_pb2.LEVEL_WARN if level != status_pb2.LEVEL_OK else worst)
            msg.cameras.add(camera_name=name, rate_hz=c.rate.rate(now), age_ms=min(age, 1e9), received=c.received,
                            dropped=c.dropped, rejected=c.rejected, level=level)
        for stage in STAGES:
            r = self.stages[stage]
            msg.stages.add(stage=stage, p50_ms=r.percentile(50), p99_ms=r.percentile(99), max_ms=r.max())
        score = self.online.score() if self.online is not None else None
        if score is not None:
            msg.online_score, msg.online_score_name = score, f"{self.online.name} (last {len(self.online.pairs)} sets)"
        stale = [s.camera_name for s in msg.cameras if s.level == status_pb2.LEVEL_STALE]
        msg.level = worst
        msg.message = f"stale cameras: {', '.join(stale)}" if stale else "ok"
        for reason, n in {**self.rejected, **{f"sync_{k}": v for k, v in self.sync.stats.rejected.items()},
                          **{f"malformed_{k}": v for k, v in self.sub.malformed.items()}}.items():
            msg.counters[reason] = float(n)
        return msg

    def _publish_status(self) -> None:
        self.pub.publish(topics.FUSION_STATUS, self.status_message())

    def close(self) -> None:
        self.sub.close()
        self.pub.close()
        self.engine.close()
