"""The fusion node process: `perception fuse`.

Subscribes to every camera of the rig, groups frames into frame sets by capture time,
runs the model through an engine and publishes Detections, plus NodeStatus about once per
second. Bad input (malformed messages, wrong sizes, stale calibration, late or duplicate
frames) is counted and logged, never fatal.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from perception import config as cfg
from perception import topics
from perception.fusion.pipeline import CameraFrame, FrameRejected, FusionPipeline
from perception.fusion.stats import CameraCounters, RateMeter, Rolling
from perception.fusion.sync import ApproximateTimeSync, TimedFrame
from perception.lifecycle import run_until_stopped
from perception.model.weights import CONFIG_FILE

log = logging.getLogger("perception.fuse")

STAGES = ("sync_wait", "preprocess", "inference", "postprocess", "total")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="perception fuse",
        description="Fusion node: subscribe to the rig's cameras, sync frames by capture time, run "
                    "the multi-view ViT and publish 3D detections (topic 'detections') and node "
                    "status (topic 'status/fusion', ~1 Hz).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rig", default=str(cfg.DEFAULT_RIG), help="rig YAML (cameras and calibration)")
    p.add_argument("--model", default=str(cfg.DEFAULT_MODEL_DIR), help="model directory (config.yaml + model.safetensors)")
    from perception.runtime import BACKEND_CHOICES

    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, metavar="BACKEND",
                   help="engine backend, NAME or NAME:PRECISION: " + ", ".join(BACKEND_CHOICES) + ". auto: on a GPU "
                        "TensorRT (fp16) when importable, else ONNX Runtime, else PyTorch; on a CPU inductor (serves "
                        "eagerly from the first frame set and switches to the compiled artifact once it is built, "
                        "in a background process, or found in the engine cache), else PyTorch, else ONNX Runtime. "
                        "Status and every Detections message name what runs (e.g. torch-cpu, torch-cpu-inductor)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for the engine")
    p.add_argument("--camera-endpoints", nargs="*", default=None,
                   help="endpoints to subscribe to (default: tcp://127.0.0.1:5550+i for camera i of the rig)")
    p.add_argument("--publish", default=cfg.FUSION_ENDPOINT, help="endpoint to bind for detections and status")
    p.add_argument("--max-span-ms", type=float, default=50.0, help="max capture-time spread within a frame set")
    p.add_argument("--timeout-ms", type=float, default=120.0,
                   help="publish an incomplete set this long after its first frame, missing cameras masked")
    p.add_argument("--min-cameras", type=int, default=1, help="never publish a set with fewer cameras")
    p.add_argument("--score-threshold", type=float, default=0.3, help="minimum detection score published")
    p.add_argument("--stale-ms", type=float, default=500.0, help="camera age above which status reports it STALE")
    p.add_argument("--no-online-score", action="store_true",
                   help="do not subscribe to sim/truth (by default, when the simulator publishes ground truth, "
                        "status carries a live nuScenes-style mAP over the last 100 frame sets)")
    p.add_argument("--allow-random-init", action="store_true",
                   help="run with seeded random weights when the model directory has none (smoke tests)")
    p.add_argument("--duration", type=float, default=None, help="exit after this many seconds")
    p.add_argument("--log-level", default="INFO")
    return p


class FusionNode:
    def __init__(self, args: argparse.Namespace):
        from perception.model.config import load_model_config
        from perception.runtime import create_engine
        from perception.transport import Publisher, Subscriber

        self.args = args
        self.rig = cfg.load_rig(args.rig)
        names = self.rig.camera_names
        model_dir = Path(args.model)
        self.model_cfg = load_model_config(model_dir / CONFIG_FILE)
        if self.model_cfg.num_cameras != len(names):
            raise cfg.ConfigError(f"model {model_dir} expects {self.model_cfg.num_cameras} cameras, "
                                  f"rig {args.rig} has {len(names)}")
        self.engine = create_engine(args.backend, model_dir, threads=args.threads,
                                    allow_random_init=args.allow_random_init)
        self.pipeline = FusionPipeline(self.rig, self.engine, self.model_cfg, args.score_threshold)
        self.sync = ApproximateTimeSync(names, int(args.max_span_ms * 1e6), int(args.timeout_ms * 1e6),
                                        min_cameras=args.min_cameras)
        endpoints = args.camera_endpoints or [cfg.camera_endpoint(i) for i in range(len(names))]
        self.online = None
        wanted = [topics.camera(n) for n in names]
        if not args.no_online_score:
            from perception.fusion.online_score import OnlineScore

            self.online = OnlineScore(self.model_cfg.classes, self.model_cfg.bev_x_range, self.model_cfg.bev_y_range)
            wanted.append(topics.TRUTH)
        self.sub = Subscriber(endpoints, wanted)
        self.pub = Publisher(args.publish)
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
                 len(names), ", ".join(endpoints), self.model_cfg.name, self.engine.name, args.publish)

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
        end = None if self.args.duration is None else time.time_ns() + int(self.args.duration * 1e9)
        while self.running and (end is None or time.time_ns() < end):
            deadline = self.sync.next_deadline_ns()
            wait_ns = min(next_status, deadline if deadline is not None else next_status) - time.time_ns()
            received = self.sub.drain_latest(timeout_ms=max(0, min(100, int(wait_ns / 1e6))))
            now = time.time_ns()
            ready = []
            for rx in received:
                if rx.topic == topics.TRUTH:
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
            level = status_pb2.LEVEL_OK if age < self.args.stale_ms else status_pb2.LEVEL_STALE
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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from perception.logs import setup_logging

    setup_logging(args.log_level)
    try:
        node = FusionNode(args)
    except (cfg.ConfigError, FileNotFoundError, ValueError) as e:
        log.error("cannot start: %s", e)
        return 2

    try:
        return run_until_stopped(node)
    finally:
        log.info("fusion node stopped after %d outputs", node.pipeline.outputs_count)
