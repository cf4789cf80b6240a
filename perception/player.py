"""Live replay of a recorded drive (`perception replay IN.mcap` without --offline, docs/recording.md):
a player that publishes the recorded camera frames (FrameHeader + pixel part, as
perception/cameras/process.py does) and the simulator's ground truth on the cameras' topics and
endpoints, so an unmodified fusion node runs on them.

Input: any iterator of perception.record.RecordedMessage (our MCAP through read_messages, or a
foreign-drive reader yielding the same stream) and the rig. Every frame is checked as the node
checks it (Preprocessor.accept: camera, calibration, size, stride, encoding; plus its stamps); a bad
one is counted by reason and never sent.

Frame sets: the recorded frames are grouped with the node's own ApproximateTimeSync in recording
time (as offline replay does), so the player knows which frames form a set, and frames the node's
sync would refuse (duplicates, stragglers, superseded partial sets) are counted, not sent.

Clock: the node rejects frames stamped far from its clock, so frames are restamped onto the wall
clock. Set k gets a virtual time T_k; a frame recorded at s in a set whose first frame was recorded
at f_k is stamped T_k + (s - f_k) * min(1, 1/rate). T_k advances by the recorded gap between sets
divided by the rate (real time and --rate), or, in lock-step, to at least the wall clock when the
previous set's Detections came back. Sequences are the recorded ones (plus an offset per --loop
pass so they keep rising). Every Detections received is translated back to recording time
(stamps and sequences of the frames as recorded) through the player's map of what it sent.

Lock-step: a set is published only when the Detections of the previous one came back (matched by
the (camera, sequence) of the frames they list), so nothing is dropped and the results do not
depend on the machine's speed; no answer within `set_timeout_s` is a LockstepTimeout.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from perception import config as pconfig
from perception import topics
from perception.framelink import FrameLink, lists_any
from perception.record import RECORDED_FRAME_TYPE, RecordedMessage

log = logging.getLogger("perception.player")

TRUTH_TYPE = "perception.v1.GroundTruth"
MAX_EXPOSURE_NS = 1_000_000_000      # capture_end - capture_start of a valid frame, at most


class PlayerError(RuntimeError):
    """The player cannot go on (no node to play to, a lock-step set never answered)."""


class LockstepTimeout(PlayerError):
    pass


@dataclass
class PlayerConfig:
    rig: str = str(pconfig.DEFAULT_RIG)
    model: str = str(pconfig.DEFAULT_MODEL_DIR)     # only its input size: the node's frame checks use it
    camera_endpoints: tuple[str, ...] | None = None   # one per rig camera, rig order; None: launch/sim.yaml's
    node_endpoint: str = pconfig.FUSION_ENDPOINT      # where the node publishes detections and status
    rate: float | None = None            # x real time; None: 1.0, or as fast as the node answers in lock-step
    start_s: float = 0.0                 # seconds from the drive's first frame
    end_s: float | None = None
    loop: bool = False                   # replay again from --start after the end (until stopped)
    max_passes: int | None = None        # with loop: stop after this many passes
    lockstep: bool = False
    set_timeout_s: float = 10.0          # lock-step: no Detections for a set this long is an error
    wait_node_s: float = 30.0            # before the first set: the node's subscriptions (and status in lock-step)
    max_lag_s: float = 0.5               # real time: behind the schedule by more than this, the clock skips ahead
    max_gap_s: float = 5.0               # a longer gap between recorded sets is shortened to this (counted)
    linger_s: float = 1.0                # after the last set: wait this long for the last Detections
    truth: bool = True                   # republish sim/truth when the drive has it
    max_span_ms: float = pconfig.FusionNodeConfig.max_span_ms    # the node's sync, to group frames as it does
    timeout_ms: float = pconfig.FusionNodeConfig.timeout_ms
    min_cameras: int = pconfig.FusionNodeConfig.min_cameras

    def validate(self) -> None:
        if self.rate is not None and not (math.isfinite(self.rate) and 0.001 <= self.rate <= 1000):
            raise pconfig.ConfigError(f"--rate must be in [0.001, 1000], got {self.rate}")
        if not (math.isfinite(self.start_s) and self.start_s >= 0):
            raise pconfig.ConfigError(f"--start must be >= 0, got {self.start_s}")
        if self.end_s is not None and not (math.isfinite(self.end_s) and self.end_s > self.start_s):
            raise pconfig.ConfigError(f"--end must be after --start ({self.start_s}), got {self.end_s}")
        for name in ("set_timeout_s", "wait_node_s", "max_lag_s", "max_gap_s", "linger_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise pconfig.ConfigError(f"{name} must be a finite number >= 0, got {v}")
        if self.max_passes is not None and self.max_passes < 1:
            raise pconfig.ConfigError(f"max_passes must be >= 1, got {self.max_passes}")


@dataclass
class PlayerSummary:
    passes: int = 0
    frames_read: int = 0                 # camera frames read from the drive
    frames_sent: int = 0
    sets_sent: int = 0
    partial_sets: int = 0                # sets sent with cameras missing
    rejected: dict[str, int] = field(default_factory=dict)    # frames not sent: the node's checks, by reason
    sync_rejected: dict[str, int] = field(default_factory=dict)   # frames the node's sync would refuse
    sets_dropped: int = 0                # incomplete sets the sync superseded (their frames not sent)
    skipped_range: int = 0               # sets outside --start/--end
    truth_read: int = 0
    truth_sent: int = 0
    truth_rejected: int = 0
    detections: int = 0                  # Detections messages received
    objects: int = 0                     # objects in them
    unmatched_detections: int = 0        # Detections of frames this player did not send (or forgot)
    lockstep_waits: list[float] = field(default_factory=list)   # seconds from a set's publish to its Detections
    clock_skips: int = 0                 # real time: the player fell behind by more than max_lag_s
    gaps_clamped: int = 0
    seconds: float = 0.0
    truncated: bool = False
    error: str | None = None

    @property
    def sets_per_s(self) -> float:
        return self.sets_sent / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        out = [f"passes {self.passes}, frames read {self.frames_read}, sent {self.frames_sent}, frame sets sent "
               f"{self.sets_sent} ({self.partial_sets} partial), {self.sets_per_s:.1f} sets/s over {self.seconds:.2f} s",
               f"detections received {self.detections} ({self.objects} objects)"
               + (f", {self.unmatched_detections} not of this replay" if self.unmatched_detections else "")]
        if self.lockstep_waits:
            w = sorted(self.lockstep_waits)
            out.append(f"lock-step waits: {len(w)}, mean {1e3 * sum(w) / len(w):.1f} ms, "
                       f"p50 {1e3 * w[len(w) // 2]:.1f} ms, max {1e3 * w[-1]:.1f} ms")
        if self.truth_read:
            out.append(f"ground truth: {self.truth_read} read, {self.truth_sent} sent"
                       + (f", {self.truth_rejected} rejected" if self.truth_rejected else ""))
        if self.rejected or self.sync_rejected or self.sets_dropped:
            out.append(f"frames not sent: rejected {dict(self.rejected)}; sync {dict(self.sync_rejected)}; "
                       f"superseded incomplete sets {self.sets_dropped}")
        if self.skipped_range:
            out.append(f"sets outside --start/--end: {self.skipped_range}")
        if self.clock_skips or self.gaps_clamped:
            out.append(f"clock: fell behind {self.clock_skips} times, {self.gaps_clamped} long gaps shortened")
        if self.truncated:
            out.append("the file ends in a partial record (killed recorder): replayed up to it")
        if self.error:
            out.append(f"error: {self.error}")
        return out


@dataclass
class _Set:
    """One frame set to send: its recorded frames (stamp order) and the truth before it."""
    frames: list[RecordedMessage]
    missing: list[str]
    truth: list[RecordedMessage]

    @property
    def first_ns(self) -> int:
        return self.frames[0].msg.header.capture_end_ns  # type: ignore[attr-defined]

    @property
    def span_ns(self) -> int:
        return self.frames[-1].msg.header.capture_end_ns - self.first_ns  # type: ignore[attr-defined]


def _finite_truth(msg) -> bool:
    for o in msg.objects:
        if not all(math.isfinite(v) for v in (o.center.x, o.center.y, o.center.z, o.size.x, o.size.y, o.size.z,
                                               o.yaw, o.velocity.x, o.velocity.y)):
            return False
    return msg.stamp_ns > 0


class Player:
    """Publishes a drive to the cameras' endpoints; see the module docstring.

    source(): a new iterator over the drive's messages, called once per pass (file order is fine:
    they are put in capture order through a reorder window). `stats` (optional dict) is read after
    each pass for "truncated" (read_messages fills it). on_detections(translated, received) is
    called for every Detections the node publishes (translated: stamps and sequences of the
    recording). progress.update(n) advances per frame sent. Has `running` (clear to stop), run()
    and close(), as every pipeline process (perception.lifecycle)."""

    def __init__(self, config: PlayerConfig, source: Callable[[], Iterable[RecordedMessage]],
                 rig: pconfig.RigConfig | None = None, *, stats: dict | None = None,
                 on_detections: Callable | None = None, progress=None):
        from perception.model.config import load_model_config
        from perception.model.weights import CONFIG_FILE

        config.validate()
        self.config = config
        self.rig = rig if rig is not None else pconfig.load_rig(config.rig)
        self.model_cfg = load_model_config(Path(config.model) / CONFIG_FILE)
        names = self.rig.camera_names
        endpoints = list(config.camera_endpoints or [pconfig.camera_endpoint(i) for i in range(len(names))])
        if len(endpoints) != len(names):
            raise pconfig.ConfigError(f"{len(endpoints)} camera endpoints for the {len(names)} cameras of rig "
                                      f"{self.rig.name} ({', '.join(names)}): give one per camera, in rig order")
        self.source = source
        self.stats = stats
        self.on_detections = on_detections
        self.progress = progress
        self.summary = PlayerSummary()
        self.running = True
        self.link = FrameLink(names, endpoints, config.node_endpoint)
        self._calibration: dict[str, object] = {}      # camera -> latest valid recorded CameraCalibration
        log.info("player: %d cameras to %s, detections from %s, %s", len(names), ", ".join(endpoints),
                 config.node_endpoint, "lock-step" if config.lockstep else f"{self.rate:g}x real time")

    @property
    def rate(self) -> float:
        return self.config.rate if self.config.rate is not None else 1.0

    # ---------------------------------------------------------------------------- reading
    def _frame_sets(self, messages: Iterable[RecordedMessage]) -> Iterator[_Set]:
        """The drive as frame sets in recording time, grouped by the node's sync (fresh per pass);
        frames and truth checked on the way (bad ones counted)."""
        from perception.fusion.pipeline import Preprocessor
        from perception.fusion.sync import ApproximateTimeSync

        check = Preprocessor(self.rig, self.model_cfg.image_width, self.model_cfg.image_height)
        sync = ApproximateTimeSync(self.rig.camera_names, int(self.config.max_span_ms * 1e6),
                                   int(self.config.timeout_ms * 1e6), min_cameras=self.config.min_cameras)
        truth: list[RecordedMessage] = []          # read, not yet sent: goes with the next set
        try:
            for ready in self._ready_sets(messages, check, sync, truth):
                for fs in ready:
                    frames = sorted((f.data for f in fs.frames.values()), key=lambda m: m.msg.header.capture_end_ns)
                    mine = [t for t in truth if t.msg.stamp_ns <= fs.stamp_ns]
                    truth[:] = [t for t in truth if t.msg.stamp_ns > fs.stamp_ns]
                    yield _Set(frames, list(fs.missing), mine)
        finally:                                   # also when the pass stops early (--end, stop)
            for k, v in sync.stats.rejected.items():
                self.summary.sync_rejected[k] = self.summary.sync_rejected.get(k, 0) + v
            self.summary.sets_dropped += sync.stats.dropped

    def _ready_sets(self, messages: Iterable[RecordedMessage], check, sync, truth: list) -> Iterator[list]:
        """Push every valid frame into `sync` (recording time as its clock), yielding what becomes
        ready; valid truth is appended to `truth`."""
        from perception.fusion.pipeline import FrameRejected
        from perception.fusion.sync import TimedFrame
        from perception.replay import _in_stamp_order
        from perception.transport import MalformedMessage, Received

        s = self.summary
        now = 0
        for m in _in_stamp_order(iter(messages)):
            if not self.running:
                return
            name = m.msg.DESCRIPTOR.full_name
            if m.topic == topics.TRUTH:
                s.truth_read += 1
                if name != TRUTH_TYPE or not _finite_truth(m.msg):
                    s.truth_rejected += 1
                elif self.config.truth:
                    truth.append(m)
                    del truth[:-64]                # bounded: the truth of a drive without frames
                continue
            if not m.topic.startswith(topics.CAMERA_PREFIX):
                continue
            s.frames_read += 1
            try:
                if name != RECORDED_FRAME_TYPE:
                    raise FrameRejected("wrong_type", f"{name} on {m.topic!r}")
                h = m.msg.header  # type: ignore[attr-defined]
                if m.topic != topics.camera(h.camera_name) or h.camera_name not in self.rig.camera_names:
                    raise FrameRejected("unknown_camera", f"{h.camera_name!r} on {m.topic!r}")
                if not (0 < h.capture_end_ns and 0 <= h.capture_end_ns - h.capture_start_ns <= MAX_EXPOSURE_NS):
                    raise FrameRejected("bad_stamp", f"capture {h.capture_start_ns}..{h.capture_end_ns} ns")
                check.accept(Received(m.topic, h, memoryview(m.msg.pixels), m.log_time_ns))  # type: ignore[attr-defined]
            except (FrameRejected, pconfig.CalibrationError, MalformedMessage) as e:
                reason = getattr(e, "reason", type(e).__name__)
                s.rejected[reason] = s.rejected.get(reason, 0) + 1
                log.debug("recorded frame not sent (%s): %s", reason, e)
                continue
            if h.HasField("calibration"):
                self._calibration[h.camera_name] = h.calibration
            stamp = int(h.capture_end_ns)
            now = max(now, stamp)
            yield sync.push(TimedFrame(h.camera_name, h.sequence, stamp, stamp, m), now)
        yield sync.poll(now + sync.timeout_ns)     # the end of the drive: open sets as their timeout passed

    # ---------------------------------------------------------------------------- running
    def run(self) -> int:
        """Play the drive (and loop); 0 when done or stopped, 1 after an error (in summary.error)."""
        t0 = time.perf_counter()
        try:
            self._wait_for_node()
            self._play()
            self._drain(self.config.linger_s)
            return 0
        except PlayerError as e:
            self.summary.error = str(e)
            log.error("%s", e)
            return 1
        finally:
            self.summary.seconds = time.perf_counter() - t0

    def _wait_for_node(self) -> None:
        """Until the node subscribed to every camera (it then gets the first frame) and, in
        lock-step, its first status came (our detections subscription is connected)."""
        deadline = time.monotonic() + self.config.wait_node_s
        missing = self.link.unsubscribed(self.config.wait_node_s)
        if missing:
            msg = (f"no subscriber for {', '.join(missing)} within {self.config.wait_node_s:g} s: is `perception fuse` "
                   f"running with --camera-endpoints pointing at this player?")
            if self.config.lockstep:
                raise PlayerError(msg)
            log.warning("%s (playing anyway)", msg)
            return
        if self.config.lockstep:
            while not self.link.status_seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PlayerError(f"the node subscribed but nothing came from {self.config.node_endpoint} "
                                      f"within {self.config.wait_node_s:g} s: is that where it publishes?")
                self._receive(min(left, 0.1))

    def _play(self) -> None:
        cfg = self.config
        s = self.summary
        seq_offset = 0
        clock: int | None = None                  # T of the previous set (ns, wall clock)
        prev_first: int | None = None             # its recorded first stamp
        prev_span = 0
        last_gap = 100_000_000                    # a gap between passes when the drive had none
        intra = min(1.0, 1.0 / self.rate)         # within a set: never stretched (the node's max span)
        pace = None if (cfg.lockstep and cfg.rate is None) else 1.0 / self.rate
        while self.running:
            drive_t0: int | None = None
            max_seq = -1
            new_pass = True
            for fs in self._frame_sets(self.source()):
                first = fs.first_ns
                if drive_t0 is None:
                    drive_t0 = first
                max_seq = max([max_seq] + [m.msg.header.sequence for m in fs.frames])  # type: ignore[attr-defined]
                rel_s = (first - drive_t0) / 1e9
                if rel_s < cfg.start_s:
                    s.skipped_range += 1
                    continue
                if cfg.end_s is not None and rel_s > cfg.end_s:
                    s.skipped_range += 1
                    break
                now = time.time_ns()
                if clock is None or prev_first is None:
                    t = now
                else:
                    if new_pass:
                        gap = max(last_gap, prev_span + 1_000_000)
                    else:
                        gap = first - prev_first
                        if gap > cfg.max_gap_s * 1e9:
                            gap = int(cfg.max_gap_s * 1e9)
                            s.gaps_clamped += 1
                        if gap > 0:
                            last_gap = gap
                    # Never back in time for any camera: a negative gap (overlapping sets) is not stretched.
                    step = gap * intra + max(gap, 0) * ((pace if pace is not None else intra) - intra)
                    t = clock + int(step)
                    if cfg.lockstep:
                        t = max(t, now - int(fs.span_ns * intra))
                    elif now - t > cfg.max_lag_s * 1e9:
                        s.clock_skips += 1
                        t = now
                new_pass = False
                clock, prev_first, prev_span = t, first, int(fs.span_ns * intra)
                self._send_set(fs, t, intra, seq_offset)
                if not self.running:
                    break
            s.passes += 1
            if self.stats is not None and self.stats.get("truncated"):
                s.truncated = True
            if not cfg.loop or (cfg.max_passes is not None and s.passes >= cfg.max_passes) or drive_t0 is None:
                return
            seq_offset += max_seq + 1

    def _send_set(self, fs: _Set, t_ns: int, intra: float, seq_offset: int) -> None:
        """Publish one set's truth and frames (real time: each at its new stamp; lock-step: all
        at once once the last one's stamp has come, then wait for its Detections)."""
        from perception.v1 import detections_pb2, frame_pb2

        s = self.summary
        first = fs.first_ns
        lockstep = self.config.lockstep

        def new_stamp(recorded: int) -> int:
            return t_ns + int((recorded - first) * intra)

        if lockstep:
            self._sleep_until(new_stamp(fs.frames[-1].msg.header.capture_end_ns))  # type: ignore[attr-defined]
        for m in fs.truth:
            msg = detections_pb2.GroundTruth()
            msg.CopyFrom(m.msg)
            msg.stamp_ns = new_stamp(m.msg.stamp_ns)  # type: ignore[attr-defined]
            self.link.send_truth(msg)
            s.truth_sent += 1
        keys = set()
        for m in fs.frames:
            rec = m.msg.header  # type: ignore[attr-defined]
            end = new_stamp(rec.capture_end_ns)
            if not lockstep:
                self._sleep_until(end)
                if not self.running:
                    return
            h = frame_pb2.FrameHeader()
            h.CopyFrom(rec)
            h.capture_end_ns = end
            h.capture_start_ns = end - (rec.capture_end_ns - rec.capture_start_ns)
            h.sequence = rec.sequence + seq_offset
            keys.add(self.link.send_frame(h, m.msg.pixels, self._calibration.get(rec.camera_name),  # type: ignore[attr-defined]
                                          sequence=rec.sequence, stamp_ns=rec.capture_end_ns))
            s.frames_sent += 1
            if self.progress is not None:
                self.progress.update(1)
        s.sets_sent += 1
        s.partial_sets += bool(fs.missing)
        if lockstep:
            self._await(keys, fs)
        else:
            self._receive(0)

    # ---------------------------------------------------------------------------- detections
    def _sleep_until(self, wall_ns: int) -> None:
        """Wait for the wall clock to reach wall_ns, receiving what the node publishes meanwhile."""
        while self.running:
            left = (wall_ns - time.time_ns()) / 1e9
            if left <= 0:
                return
            self._receive(min(left, 0.1))

    def _receive(self, timeout_s: float) -> list:
        """Take what the node published (waiting up to timeout_s for the first message); returns
        the Detections as received, each also passed to on_detections translated."""
        got = self.link.receive(timeout_s)
        for msg in got:
            self.summary.detections += 1
            self.summary.objects += len(msg.objects)
            translated = self.translate(msg)
            if translated is None:
                self.summary.unmatched_detections += 1
            elif self.on_detections is not None:
                self.on_detections(translated, msg)
        return got

    def translate(self, msg):
        """A copy of a received Detections in recording time: every frame's sequence and capture
        stamp as recorded, stamp_ns the newest of them; age_ms and timings stay (wall clock).
        None when a frame it lists is not one this player sent (recently)."""
        return self.link.sent.translate(msg)

    def _await(self, keys: set, fs: _Set) -> None:
        """Lock-step: receive until a Detections lists one of `keys` (the set just sent)."""
        t0 = time.monotonic()
        deadline = t0 + self.config.set_timeout_s
        while self.running:
            left = deadline - time.monotonic()
            if left <= 0:
                cams = ", ".join(m.msg.header.camera_name for m in fs.frames)  # type: ignore[attr-defined]
                raise LockstepTimeout(
                    f"lock-step: no Detections for frame set {self.summary.sets_sent} (recorded at {fs.first_ns} ns, "
                    f"cameras {cams}) within {self.config.set_timeout_s:g} s from {self.config.node_endpoint}; "
                    f"is the node still running (its log says why it refused frames)?")
            for msg in self._receive(min(left, 0.1)):
                if lists_any(msg, keys):
                    self.summary.lockstep_waits.append(time.monotonic() - t0)
                    return

    def _drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while self.running and time.monotonic() < end:
            self._receive(min(0.1, max(0.0, end - time.monotonic())))

    def close(self) -> None:
        self.link.close()


def file_source(path: str | Path, stats: dict | None = None, rig: pconfig.RigConfig | None = None):
    """source() for Player over our own MCAP (perception.record.read_messages): camera topics of
    the rig and sim/truth."""
    from perception.record import read_messages

    wanted = None if rig is None else [topics.TRUTH] + [topics.camera(n) for n in rig.camera_names]
    return lambda: read_messages(path, wanted, stats)
