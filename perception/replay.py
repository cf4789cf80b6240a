"""Offline replay of a recording (`perception replay IN.mcap --offline`, docs/recording.md): the
recorded frames, in capture-time order, through the fusion node's synchronizer and
FusionPipeline.process, without sockets and as fast as the engine allows.

Time is the recording's: each frame is pushed into the ApproximateTimeSync with its capture stamp
as the clock, so the frame sets (and the Detections) depend only on the file, never on the
machine's speed. Unlike the live node, every ready set is computed (nothing is dropped for being
older than a newer ready set). Detections carry wall-clock stage timings; everything else in them
is a function of the file, the model and the backend.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from perception import config as pconfig
from perception import topics
from perception.record import RECORDED_FRAME_TYPE, RecordedMessage

log = logging.getLogger("perception.replay")

# Frames are read in file (arrival) order and released in capture order through a heap this deep.
REORDER_DEPTH = 64
# Messages read ahead of the engine by the reader thread (about 4 frame sets of 6 cameras).
PREFETCH_DEPTH = 32


@dataclass
class ReplayConfig:
    rig: str = str(pconfig.DEFAULT_RIG)
    model: str = str(pconfig.DEFAULT_MODEL_DIR)
    backend: str = "torch"                  # eager PyTorch: deterministic on a CPU
    threads: int = 2
    max_span_ms: float = pconfig.FusionNodeConfig.max_span_ms
    timeout_ms: float = pconfig.FusionNodeConfig.timeout_ms
    min_cameras: int = pconfig.FusionNodeConfig.min_cameras
    score_threshold: float = pconfig.FusionNodeConfig.score_threshold
    tracking: bool = pconfig.FusionNodeConfig.tracking
    allow_random_init: bool = False


@dataclass
class ReplaySummary:
    frames: int = 0                 # camera frames read
    rejected: dict[str, int] = field(default_factory=dict)   # frames the node's checks refused, by reason
    sets: int = 0                   # frame sets computed
    partial_sets: int = 0
    detections: int = 0             # objects in all Detections
    truth: int = 0                  # ground-truth messages in the file
    seconds: float = 0.0
    mAP: float | None = None        # against the file's sim/truth, when it has any
    truncated: bool = False
    sync_rejected: dict[str, int] = field(default_factory=dict)
    drive_rejected: dict[str, int] = field(default_factory=dict)   # messages of the drive refused when read (drives.py)
    resized: int = 0                # frames of a foreign drive resized to their calibration
    # (detection boxes, truth boxes) of each Detections paired with ground truth: what mAP is computed from
    pairs: list = field(default_factory=list, repr=False)

    @property
    def sets_per_s(self) -> float:
        return self.sets / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        out = [f"frames {self.frames}, frame sets {self.sets} ({self.partial_sets} partial), "
               f"detections {self.detections}, {self.sets_per_s:.1f} sets/s over {self.seconds:.2f} s"]
        if self.rejected or self.sync_rejected:
            out.append(f"rejected frames: {dict(self.rejected)}; sync: {dict(self.sync_rejected)}")
        if self.drive_rejected or self.resized:
            out.append(f"refused when read from the drive: {dict(self.drive_rejected)}; resized frames: {self.resized}")
        if self.truth:
            out.append(f"ground truth: {self.truth} messages, mAP {self.mAP:.4f}" if self.mAP is not None
                       else f"ground truth: {self.truth} messages, no detections paired with it")
        if self.truncated:
            out.append("the file ends in a partial record (killed recorder): replayed up to it")
        return out


def _in_stamp_order(messages: Iterator[RecordedMessage], depth: int = REORDER_DEPTH) -> Iterator[RecordedMessage]:
    """Messages by (stamp, truth before frames), reordering within `depth` messages."""
    heap: list = []
    counter = itertools.count()
    for m in messages:
        heapq.heappush(heap, (m.publish_time_ns, m.topic != topics.TRUTH, next(counter), m))
        if len(heap) > depth:
            yield heapq.heappop(heap)[3]
    while heap:
        yield heapq.heappop(heap)[3]


def prefetched(items: Iterator, depth: int = PREFETCH_DEPTH) -> Iterator:
    """`items`, produced by a reader thread up to `depth` ahead: reading and decompressing the file
    (zstd and protobuf parsing) overlap the engine instead of adding to it. Order is unchanged; an
    exception in the reader is raised here, at the item where it happened. The reader stops when
    this generator is closed."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as e:      # handed to the consumer, raised there
            put((end, e))
            return
        put((end, None))

    thread = threading.Thread(target=read, daemon=True, name="perception-replay-reader")
    thread.start()
    try:
        while True:
            item, error = q.get()
            if item is end:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


class OfflineReplay:
    """Sync + pipeline over a recording. `engine` replaces the one config.backend would create;
    `rig` (a drive's, drives.open_drive) replaces the one config.rig names."""

    def __init__(self, config: ReplayConfig, engine=None, rig: pconfig.RigConfig | None = None):
        from perception.fusion.pipeline import FusionPipeline
        from perception.fusion.sync import ApproximateTimeSync
        from perception.model.config import load_model_config
        from perception.model.weights import CONFIG_FILE
        from perception.runtime import create_engine

        self.config = config
        self.rig = rig if rig is not None else pconfig.load_rig(config.rig)
        self.model_cfg = load_model_config(Path(config.model) / CONFIG_FILE)
        if self.model_cfg.num_cameras != len(self.rig.camera_names):
            raise pconfig.ConfigError(f"model {config.model} expects {self.model_cfg.num_cameras} cameras, "
                                      f"rig {self.rig.name} has {len(self.rig.camera_names)}")
        self.engine = engine if engine is not None else create_engine(
            config.backend, config.model, threads=config.threads, allow_random_init=config.allow_random_init)
        self.pipeline = FusionPipeline(self.rig, self.engine, self.model_cfg, config.score_threshold,
                                       tracking=config.tracking)
        self.sync = ApproximateTimeSync(self.rig.camera_names, int(config.max_span_ms * 1e6),
                                        int(config.timeout_ms * 1e6), min_cameras=config.min_cameras)

    def _frame(self, m: RecordedMessage, summary: ReplaySummary):
        """A TimedFrame of the recorded frame (checked as the node checks it), or None (counted)."""
        from perception.fusion.pipeline import CameraFrame, FrameRejected
        from perception.fusion.sync import TimedFrame
        from perception.transport import MalformedMessage, Received

        h = m.msg.header  # type: ignore[attr-defined]
        camera = h.camera_name
        try:
            if m.topic != topics.camera(camera) or camera not in self.rig.camera_names:
                raise FrameRejected("unknown_camera", f"{camera!r} on {m.topic!r}")
            rx = Received(m.topic, h, memoryview(m.msg.pixels), m.log_time_ns)  # type: ignore[attr-defined]
            pixels = self.pipeline.preprocess.accept(rx)
        except (FrameRejected, pconfig.CalibrationError, MalformedMessage) as e:
            reason = getattr(e, "reason", type(e).__name__)
            summary.rejected[reason] = summary.rejected.get(reason, 0) + 1
            return None
        stamp = int(h.capture_end_ns)
        return TimedFrame(camera, h.sequence, stamp, stamp, CameraFrame.from_header(camera, h, stamp, pixels))

    def run(self, drive, on_detections: Callable | None = None, progress=None) -> ReplaySummary:
        """Replay `drive` (a drives.Drive from open_drive, or the path of our own recording);
        on_detections(msg) receives each Detections in order; progress (a tqdm bar or anything
        with update(n)) advances once per frame."""
        from perception.drives import Drive, OwnRecording
        from perception.fusion.online_score import OnlineScore

        if not isinstance(drive, Drive):
            drive = OwnRecording(path=Path(drive), kind="perception", rig=self.rig)

        summary = ReplaySummary()
        score = OnlineScore(self.model_cfg.classes, window=1 << 30)
        now_ns = 0
        t0 = time.perf_counter()

        def compute(sets) -> None:
            for fs in sets:
                msg = self.pipeline.process(fs)
                summary.sets += 1
                summary.partial_sets += bool(fs.missing)
                summary.detections += len(msg.objects)
                score.add_detections(msg)
                if on_detections is not None:
                    on_detections(msg)

        wanted = [topics.TRUTH] + [topics.camera(n) for n in self.rig.camera_names]
        for m in prefetched(_in_stamp_order(drive.messages(wanted))):
            if m.topic == topics.TRUTH:
                summary.truth += 1
                score.add_truth(m.msg)
                continue
            if m.msg.DESCRIPTOR.full_name != RECORDED_FRAME_TYPE:
                continue
            summary.frames += 1
            if progress is not None:
                progress.update(1)
            frame = self._frame(m, summary)
            if frame is None:
                continue
            now_ns = max(now_ns, frame.stamp_ns)
            compute(self.sync.push(frame, now_ns))
        compute(self.sync.poll(now_ns + self.sync.timeout_ns))     # the end of the drive: flush open sets
        summary.seconds = time.perf_counter() - t0
        summary.truncated = drive.truncated
        summary.drive_rejected = dict(drive.rejected)
        summary.resized = drive.resized
        summary.sync_rejected = dict(self.sync.stats.rejected)
        summary.mAP = score.score() if summary.truth else None
        summary.pairs = list(score.pairs)
        return summary


def write_detections(path: str | Path):
    """An McapFileWriter for replayed Detections and a callback writing each one (log and publish
    time: its stamp)."""
    from perception.record import McapFileWriter

    out = McapFileWriter(path)

    def write(msg) -> None:
        out.write(topics.DETECTIONS, msg, msg.stamp_ns, msg.stamp_ns)

    return out, write
