"""The fusion node process (run by `perception fuse`, perception/commands/fuse.py).

Subscribes to every camera of the rig, groups frames into frame sets by capture time,
runs the model through an engine and publishes Detections, plus NodeStatus about once per
second. Bad input (a message of the wrong type for its topic, malformed messages, invalid
calibrations, wrong sizes or encodings, stale calibration, stamps far from the node's clock,
late or duplicate frames) is counted per reason and logged (rate-limited), never fatal: see
`handle`, and docs/faults.md.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from perception import config as cfg
from perception import topics
from perception.fusion.pipeline import CameraFrame, FrameRejected, FusionPipeline
from perception.fusion.stats import MAX_SEQUENCE_GAP, CameraCounters, RateMeter, Rolling
from perception.fusion.sync import ApproximateTimeSync, TimedFrame
from perception.model.weights import CONFIG_FILE
from perception.transport import MalformedMessage, type_name

log = logging.getLogger("perception.fuse")

STAGES = ("sync_wait", "preprocess", "inference", "postprocess", "total")
# Rejection reasons counted per frame set or loop pass, not per input message.
PER_SET_REASONS = frozenset({"process_error", "sync_poll_error"})
# A rejection reason (and internal errors, with their traceback) is logged at most this often.
LOG_EVERY_S = 5.0


class FusionNode:
    def __init__(self, config: cfg.FusionNodeConfig, engine=None):
        """engine: an Engine to serve with instead of creating config.backend's (tests, fuzzing)."""
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
        self.engine = engine if engine is not None else create_engine(
            config.backend, model_dir, threads=config.threads, allow_random_init=config.allow_random_init)
        self.pipeline = FusionPipeline(self.rig, self.engine, self.model_cfg, config.score_threshold,
                                       tracking=config.tracking)
        self.sync = ApproximateTimeSync(names, int(config.max_span_ms * 1e6), int(config.timeout_ms * 1e6),
                                        min_cameras=config.min_cameras)
        endpoints = list(config.camera_endpoints or [cfg.camera_endpoint(i) for i in range(len(names))])
        self.online = None
        wanted = [topics.camera(n) for n in names]
        if config.online_score:
            from perception.fusion.online_score import OnlineScore

            self.online = OnlineScore(self.model_cfg.classes)
            wanted.append(topics.TRUTH)
        self.sub = Subscriber(endpoints, wanted)
        self.pub = Publisher(config.publish)
        self.cameras = {n: CameraCounters() for n in names}
        self.rejected: dict[str, int] = {}
        self.stages = {s: Rolling() for s in STAGES}
        self.latency = Rolling()
        self.output_rate = RateMeter()
        self.sets_dropped_overload = 0
        self.inputs = 0                 # messages through handle()
        self.frames_pushed = 0          # frames that passed the node's checks into the sync
        self.truth_received = 0
        self.last_output_ns: int | None = None
        self._last_accept_ns = 0        # any camera, node clock
        self._fresh_since_ns: int | None = None   # start of the current run of accepted frames
        self._last_log: dict[str, float] = {}
        self._last_sequence: dict[str, int] = {}    # per camera, in the last processed set
        self.started_ns = time.time_ns()
        self.running = True
        log.info("fusion node: %d cameras from %s, model %s on %s, publishing on %s",
                 len(names), ", ".join(endpoints), self.model_cfg.name, self.engine.name, config.publish)

    # -- input ---------------------------------------------------------------------------
    def _log_limited(self, key: str, msg: str, *args, exc_info: bool = False) -> None:
        """A warning at most once per LOG_EVERY_S per key (a broken sender at 30 Hz must not
        flood the log); the count so far is in the arguments."""
        now = time.monotonic()
        if now - self._last_log.get(key, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._last_log[key] = now
            log.warning(msg, *args, exc_info=exc_info)

    def _reject(self, camera: str | None, reason: str, detail: str, now_ns: int | None = None,
                exc_info: bool = False) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if camera in self.cameras:
            self.cameras[camera].on_reject(reason, time.time_ns() if now_ns is None else now_ns)
        self._log_limited(reason, "dropped input (%s, %d so far): %s", reason, self.rejected[reason], detail,
                          exc_info=exc_info)

    def handle(self, rx, now_ns: int) -> list:
        """The per-message path: check one received message and push it into the sync; returns
        the frame sets that became ready. Never raises: every input ends in exactly one of
        `rejected` (per reason, "internal_error" for an unexpected exception, logged with its
        traceback), `truth_received`, or `frames_pushed` (the sync accepts or counts it)."""
        self.inputs += 1
        try:
            return self._handle(rx, now_ns)
        except Exception as e:    # noqa: BLE001 - input must never stop the node
            self._reject(self._camera_of(rx), "internal_error", f"{type(e).__name__}: {e}", now_ns, exc_info=True)
            return []

    def _camera_of(self, rx) -> str | None:
        """The rig camera a message's topic names, if any (for per-camera counters)."""
        topic = getattr(rx, "topic", None)
        if isinstance(topic, str) and topic.startswith(topics.CAMERA_PREFIX):
            name = topic[len(topics.CAMERA_PREFIX):]
            return name if name in self.cameras else None
        return None

    def _handle(self, rx, now_ns: int) -> list:
        topic = rx.topic
        expected = topics.message_type(topic)
        actual = type_name(rx.msg)
        if expected is None or actual != expected:
            self._reject(self._camera_of(rx), "wrong_type", f"{actual} on topic {topic!r} (carries {expected})", now_ns)
            return []
        if topic == topics.TRUTH:
            self.truth_received += 1
            if self.online is not None:
                self.online.add_truth(rx.msg)
            return []
        if not topic.startswith(topics.CAMERA_PREFIX):
            self._reject(None, "unexpected_topic", f"{actual} on topic {topic!r}", now_ns)
            return []
        frame = self._accept(rx, now_ns)
        if frame is None:
            return []
        before = self.sync.stats.total_rejected
        ready = self.sync.push(frame, now_ns)
        self.frames_pushed += 1
        counters = self.cameras[frame.camera]
        if self.sync.stats.total_rejected > before:
            counters.on_reject(f"sync_{self.sync.stats.last_reason}", now_ns)
        else:
            counters.last_accept_ns = now_ns
            if self._fresh_since_ns is None or now_ns - self._last_accept_ns > self.config.stale_ms * 1e6:
                self._fresh_since_ns = now_ns
            self._last_accept_ns = now_ns
        return ready

    def _accept(self, rx, now_ns: int) -> TimedFrame | None:
        """Validate a FrameHeader (+ pixels) from a camera topic; a TimedFrame of BGR pixels, or
        None (counted). A calibration the frame carries replaces the held one only when the
        whole frame is valid (checked by Preprocessor.accept, shared with offline replay)."""
        h = rx.msg
        camera = h.camera_name
        topic_camera = self._camera_of(rx)
        if rx.topic != topics.camera(camera):
            self._reject(topic_camera, "topic_mismatch", f"{camera!r} on topic {rx.topic!r}", now_ns)
            return None
        if camera not in self.cameras:
            self._reject(None, "unknown_camera", f"{camera!r} is not in rig {self.rig.name!r}", now_ns)
            return None
        stamp = h.capture_end_ns
        if stamp - now_ns > self.config.max_future_ms * 1e6:
            self._reject(camera, "stamp_future", f"{camera} #{h.sequence}: stamped {(stamp - now_ns) / 1e9:.3f} s "
                         f"ahead of the node's clock (max {self.config.max_future_ms} ms)", now_ns)
            return None
        if now_ns - stamp > self.config.max_past_ms * 1e6:
            self._reject(camera, "stamp_past", f"{camera} #{h.sequence}: stamped {(now_ns - stamp) / 1e9:.3f} s "
                         f"behind the node's clock (max {self.config.max_past_ms} ms)", now_ns)
            return None
        try:
            pixels = self.pipeline.preprocess.accept(rx)
        except (FrameRejected, cfg.CalibrationError) as e:
            self._reject(camera, e.reason, str(e), now_ns)
            return None
        except MalformedMessage as e:
            self._reject(camera, f"frame_{e.reason}", str(e), now_ns)
            return None
        self.cameras[camera].on_frame(h.sequence, stamp, now_ns, rx.superseded)
        return TimedFrame(camera, h.sequence, stamp, now_ns, CameraFrame.from_header(camera, h, stamp, pixels))

    # -- main loop -------------------------------------------------------------------------
    def run(self) -> int:
        status_period_ns = 1_000_000_000
        next_status = time.time_ns() + status_period_ns
        end = None if self.config.duration is None else time.time_ns() + int(self.config.duration * 1e9)
        while self.running and (end is None or time.time_ns() < end):
            deadline = self.sync.next_deadline_ns()
            wait_ns = min(next_status, deadline if deadline is not None else next_status) - time.time_ns()
            received = self.sub.drain_latest(timeout_ms=max(0, min(100, int(wait_ns / 1e6))))
            self.step(received, time.time_ns())
            if time.time_ns() >= next_status:
                self._publish_status()
                next_status = time.time_ns() + status_period_ns
        return 0

    def step(self, received, now_ns: int) -> list:
        """One pass of the loop without the socket: every message through `handle`, the sync's
        timeouts, then the newest ready set computed and published. Returns the ready sets.
        Never raises (a failure computing a set is counted as "process_error" and logged)."""
        ready = []
        for rx in received:
            ready += self.handle(rx, now_ns)
        try:
            ready += self.sync.poll(now_ns)
        except Exception as e:    # noqa: BLE001
            self._reject(None, "sync_poll_error", f"{type(e).__name__}: {e}", now_ns, exc_info=True)
        if ready:
            # Only the newest set is worth computing; older ones would only add latency
            # (cameras faster than the engine): drop the oldest, count them, never queue.
            try:
                self._count_skipped(ready[-1])
                self._process(ready[-1])
                self.last_output_ns = now_ns
            except Exception as e:    # noqa: BLE001
                self._reject(None, "process_error", f"{type(e).__name__}: {e}", now_ns, exc_info=True)
        return ready

    def _count_skipped(self, frameset) -> None:
        """Frame sets the rig captured since the last processed one and never computed (a newer
        set was ready, or their frames were superseded in the receive queues while the engine was
        busy): the largest per-camera sequence gap. A camera whose sequence went back (restart)
        does not count."""
        gaps = [f.sequence - self._last_sequence[name] - 1 for name, f in frameset.frames.items()
                if name in self._last_sequence
                and self._last_sequence[name] < f.sequence <= self._last_sequence[name] + MAX_SEQUENCE_GAP]
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

    def status_message(self, now_ns: int | None = None):
        from perception.v1 import status_pb2

        now = time.time_ns() if now_ns is None else now_ns
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
        stale_ns = self.config.stale_ms * 1e6
        problems: list[tuple[Any, str]] = []             # (status_pb2 Level, text) for the node's message
        stale, rejecting, fresh = [], [], []
        for name, c in self.cameras.items():
            age = (now - c.last_stamp_ns) / 1e6 if c.last_stamp_ns else float("inf")
            level, text = status_pb2.LEVEL_OK, ""
            accepted_recently = c.last_accept_ns is not None and now - c.last_accept_ns <= stale_ns
            if c.last_reject_ns is not None and now - c.last_reject_ns <= stale_ns and not accepted_recently:
                level, text = status_pb2.LEVEL_WARN, f"every frame rejected (last: {c.last_reject_reason})"
                rejecting.append(f"{name} ({c.last_reject_reason})")
            elif age >= self.config.stale_ms:
                level, text = status_pb2.LEVEL_STALE, f"no frame for {min(age, 1e9):.0f} ms"
                stale.append(name)
            if accepted_recently:
                fresh.append(name)
            msg.cameras.add(camera_name=name, rate_hz=c.rate.rate(now), age_ms=min(age, 1e9), received=c.received,
                            dropped=c.dropped, rejected=c.rejected, level=level,
                            restarts=self.sync.stats.restarts.get(name, 0), message=text)
        if rejecting:
            problems.append((status_pb2.LEVEL_WARN, f"cameras with every frame rejected: {', '.join(rejecting)}"))
        if stale:
            problems.append((status_pb2.LEVEL_WARN, f"stale cameras: {', '.join(stale)}"))
        if fresh and self._fresh_since_ns is not None:
            since = max(self.last_output_ns or 0, self._fresh_since_ns)
            if now - since > self.config.output_stall_ms * 1e6:
                problems.append((status_pb2.LEVEL_ERROR, f"no output for {(now - since) / 1e9:.1f} s while cameras "
                                 f"{', '.join(fresh)} are fresh"))
        for stage in STAGES:
            r = self.stages[stage]
            msg.stages.add(stage=stage, p50_ms=r.percentile(50), p99_ms=r.percentile(99), max_ms=r.max())
        online = self.online
        score = online.score() if online is not None else None
        if online is not None and score is not None:
            msg.online_score, msg.online_score_name = score, f"{online.name} (last {len(online.pairs)} sets)"
        msg.level = max((lv for lv, _ in problems), default=status_pb2.LEVEL_OK)
        msg.message = "; ".join(t for _, t in problems) or "ok"
        for reason, n in self.rejected_counts().items():
            msg.rejected[reason] = n
            msg.counters[reason] = float(n)
        # CurveZMQ handshakes refused by this process's sockets (only when security is on)
        from perception.transport import security_stats

        for name, n in security_stats().items():
            msg.counters[f"security_{name}"] = float(n)
        return msg

    def unaccounted_inputs(self) -> int:
        """Inputs through `handle` not in exactly one outcome (0 unless there is a bug): every
        message is rejected for one reason, taken as ground truth, or pushed into the sync."""
        per_input = sum(n for k, n in self.rejected.items() if k not in PER_SET_REASONS)
        return self.inputs - per_input - self.truth_received - self.frames_pushed

    def rejected_counts(self) -> dict[str, int]:
        """Every refused input and dropped output, per reason: the node's checks, the sync's
        (sync_*), the transport's (malformed_*) and boxes never published (box_*)."""
        return {**self.rejected, **{f"sync_{k}": v for k, v in self.sync.stats.rejected.items()},
                **{f"malformed_{k}": v for k, v in self.sub.malformed.items()}, **self.pipeline.dropped_boxes}

    def _publish_status(self) -> None:
        self.pub.publish(topics.FUSION_STATUS, self.status_message())

    def close(self) -> None:
        self.sub.close()
        self.pub.close()
        self.engine.close()
