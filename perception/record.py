"""Recording a running pipeline to MCAP (`perception record`, docs/recording.md), and reading such a
recording back.

Every channel is protobuf-encoded and carries its schema (a FileDescriptorSet, as
mcap-protobuf-support writes it), so any MCAP reader decodes it without this package. A camera
frame, which travels as a FrameHeader part plus a raw pixel part, is stored as one
``perception.v1.RecordedFrame`` (header + pixel bytes) on the camera's own topic; other topics
store their message as received.

Recording never blocks the receiving loop: received messages go into a bounded queue that a writer
thread empties into the file; when the queue is full (a slow disk) the message is dropped and
counted per topic (``Recorder.dropped``). The file is written in compressed chunks: a recorder that
is killed leaves a file whose complete chunks still read (``read_messages`` reads such a file up to
its last complete record).
"""
from __future__ import annotations

import logging
import queue
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from google.protobuf.message import Message

from perception import topics
from perception.v1 import recording_pb2

if TYPE_CHECKING:
    from perception.foxglove import FoxgloveConfig

log = logging.getLogger("perception.record")

FRAME_TYPE = "perception.v1.FrameHeader"
RECORDED_FRAME_TYPE = recording_pb2.RecordedFrame.DESCRIPTOR.full_name
DEFAULT_QUEUE = 256                 # messages waiting for the disk, at most
DEFAULT_CHUNK_BYTES = 1 << 20       # what a killed recorder can lose, at most (plus the queue)


def recorded_message(msg: Message, payload: Any) -> Message:
    """What a received (message, payload) is stored as: a frame (header + pixels) as a
    RecordedFrame, anything else as itself."""
    if msg.DESCRIPTOR.full_name == FRAME_TYPE:
        return recording_pb2.RecordedFrame(header=msg, pixels=b"" if payload is None else bytes(payload))
    return msg


def message_stamp_ns(msg: Message, default: int) -> int:
    """The capture/stamp time a message carries (publish_time in the file), else `default`."""
    if msg.DESCRIPTOR.full_name == RECORDED_FRAME_TYPE:
        return int(msg.header.capture_end_ns)  # type: ignore[attr-defined]
    if msg.DESCRIPTOR.full_name == FRAME_TYPE:
        return int(msg.capture_end_ns)  # type: ignore[attr-defined]
    stamp = getattr(msg, "stamp_ns", 0)
    return int(stamp) if stamp else default


class McapFileWriter:
    """A protobuf MCAP writer: one channel per topic, each with its message's schema."""

    def __init__(self, output: str | Path | IO[bytes], chunk_size: int = DEFAULT_CHUNK_BYTES):
        from mcap.well_known import MessageEncoding
        from mcap.writer import CompressionType, Writer
        from mcap_protobuf.writer import _library_identifier

        self._encoding = MessageEncoding.Protobuf
        self._file: IO[bytes] | None = open(output, "wb") if isinstance(output, (str, Path)) else None  # noqa: SIM115
        stream: IO[bytes] = self._file if self._file is not None else output  # type: ignore[assignment]
        self._writer = Writer(stream, chunk_size=chunk_size, compression=CompressionType.ZSTD)
        self._writer.start(profile="", library=_library_identifier())
        self._channels: dict[str, tuple[int, str]] = {}
        self._schemas: dict[str, int] = {}          # message type -> schema id: one schema record per type
        self._sequence: dict[str, int] = {}
        self.written = 0
        self.written_by_topic: dict[str, int] = {}

    def write(self, topic: str, msg: Message, log_time_ns: int, publish_time_ns: int | None = None) -> None:
        from mcap_protobuf.schema import register_schema

        name = msg.DESCRIPTOR.full_name
        if topic not in self._channels:
            schema_id = self._schemas.get(name)
            if schema_id is None:
                schema_id = self._schemas[name] = register_schema(self._writer, type(msg))
            channel_id = self._writer.register_channel(topic=topic, message_encoding=self._encoding,
                                                       schema_id=schema_id)
            self._channels[topic] = (channel_id, name)
        channel_id, channel_type = self._channels[topic]
        if name != channel_type:
            raise ValueError(f"topic {topic!r} is recorded as {channel_type}, cannot write a {name}")
        seq = self._sequence[topic] = self._sequence.get(topic, -1) + 1
        self._writer.add_message(channel_id=channel_id, log_time=log_time_ns,
                                 publish_time=log_time_ns if publish_time_ns is None else publish_time_ns,
                                 data=msg.SerializeToString(), sequence=seq & 0xFFFFFFFF)
        self.written += 1
        self.written_by_topic[topic] = self.written_by_topic.get(topic, 0) + 1

    def close(self) -> None:
        self._writer.finish()
        if self._file is not None:
            self._file.close()


class Recorder:
    """Writes received messages to an MCAP file from a writer thread.

    ``offer(topic, msg, payload, recv_ns)`` never blocks: it returns False (and counts the message in
    ``dropped``) when the queue is full. ``record(subscriber, ...)`` is the receive loop of
    `perception record`. ``close()`` writes what is queued and finishes the file (summary, footer).

    With `foxglove` (a FoxgloveConfig), the writer thread also writes each message's Foxglove
    channels after the message itself (images, calibrations, the rig's transforms, boxes); while
    the queue is more than half full it leaves the images out (counted in
    ``foxglove.skipped["backlog"]``), so the recorded frames keep the disk's time first."""

    def __init__(self, output: str | Path | IO[bytes], *, queue_size: int = DEFAULT_QUEUE,
                 chunk_size: int = DEFAULT_CHUNK_BYTES, foxglove: FoxgloveConfig | None = None):
        from perception.foxglove import FoxgloveChannels

        self._out = McapFileWriter(output, chunk_size=chunk_size)
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        # Foxglove channels (perception/foxglove.py), made in the writer thread; None: off
        self.foxglove = None if foxglove is None else FoxgloveChannels(foxglove)
        self.received: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="perception-record-writer")
        self._thread.start()

    @property
    def written(self) -> int:
        return self._out.written

    def offer(self, topic: str, msg: Message, payload: Any = None, recv_ns: int | None = None) -> bool:
        """Queue one message for the file; False when it was dropped (queue full or writer failed)."""
        self.received[topic] = self.received.get(topic, 0) + 1
        try:
            if self.error is not None:
                raise queue.Full
            self._queue.put_nowait((topic, msg, payload, time.time_ns() if recv_ns is None else recv_ns))
            return True
        except queue.Full:
            self.dropped[topic] = self.dropped.get(topic, 0) + 1
            return False

    def record(self, sub, *, duration_s: float | None = None, stop: threading.Event | None = None,
               on_message=None) -> None:
        """Receive from `sub` (a transport.Subscriber) into the file until `duration_s` passed or
        `stop` is set. on_message(rx) is called after each message (progress display)."""
        end = None if duration_s is None else time.monotonic() + duration_s
        while not (stop is not None and stop.is_set()) and (end is None or time.monotonic() < end):
            left_ms = 100 if end is None else max(0, min(100, int((end - time.monotonic()) * 1000)))
            rx = sub.recv(left_ms)
            if rx is None:
                continue
            self.offer(rx.topic, rx.msg, rx.payload, rx.recv_ns)
            if on_message is not None:
                on_message(rx)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            topic, msg, payload, recv_ns = item
            try:
                stored = recorded_message(msg, payload)
                self._out.write(topic, stored, recv_ns, message_stamp_ns(stored, recv_ns))
                for extra in self._foxglove_of(topic, msg, payload):
                    self._out.write(extra.topic, extra.msg, recv_ns, extra.stamp_ns)
            except BaseException as e:     # a full disk: stop writing, keep receiving (and counting drops)
                log.error("recording stopped: %s", e)
                self.error = e
                return

    def _foxglove_of(self, topic: str, msg: Message, payload: Any) -> list:
        """The Foxglove messages of one received message; a failure here never stops the recording
        (counted as foxglove.skipped["internal_error"] and logged)."""
        if self.foxglove is None:
            return []
        try:
            return self.foxglove.convert(topic, msg, payload, images=self._queue.qsize() <= self._queue.maxsize // 2)
        except Exception as e:
            self.foxglove.skipped["internal_error"] = self.foxglove.skipped.get("internal_error", 0) + 1
            log.exception("foxglove channels: %s on %s", e, topic)
            return []

    def summary_lines(self, out: str | Path | None = None) -> list[str]:
        """The closing summary: per recorded topic received/written/dropped, the Foxglove channels'
        messages and what they left out, the total (and the file's size when `out` is a path)."""
        lines = []
        for topic in sorted(self.received):
            dropped = self.dropped.get(topic, 0)
            lines.append(f"{topic}: {self.received[topic]} received, {self._out.written_by_topic.get(topic, 0)} written"
                         + (f", {dropped} dropped" if dropped else ""))
        if self.foxglove is not None:
            fox = {t: n for t, n in self._out.written_by_topic.items() if t.startswith("/foxglove/")}
            lines.append(f"foxglove channels: {sum(fox.values())} messages on {len(fox)} topics"
                         + (f"; left out: {dict(sorted(self.foxglove.skipped.items()))}" if self.foxglove.skipped else ""))
        size = ""
        if isinstance(out, (str, Path)) and Path(out).exists():
            size = f" ({Path(out).stat().st_size / 1e6:.1f} MB)"
        lines.append(f"wrote {self.written} messages to {out}{size}" if out is not None else f"wrote {self.written} messages")
        if self.error is not None:
            lines.append(f"recording stopped early: {self.error}")
        return lines

    def close(self) -> None:
        """Write everything queued, then finish the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.error is None:
            self._queue.put(None)
            self._thread.join()
        self._out.close()

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def record_topics(rig_path, endpoints: list[str] | None = None, with_truth: bool = True) -> list[tuple[str, list[str]]]:
    """(topic, endpoints) of everything `perception record` records: each camera of the rig,
    sim/truth, detections and status/fusion, at the default launch's endpoints unless `endpoints`
    (one list for all topics) is given."""
    from perception import config as pconfig

    rig = pconfig.load_rig(rig_path)
    wanted = [topics.camera(n) for n in rig.camera_names] + ([topics.TRUTH] if with_truth else [])
    wanted += [topics.DETECTIONS, topics.FUSION_STATUS]
    return [(t, topics.resolve_endpoints(t, endpoints, rig_path)) for t in wanted]


# ------------------------------------------------------------------------------------------ reading

@dataclass
class RecordedMessage:
    topic: str
    log_time_ns: int            # when the recorder received it
    publish_time_ns: int        # the stamp it carries (capture end for frames)
    msg: Message                # our own class (perception.v1), RecordedFrame for frames


def read_messages(path: str | Path, topics_: list[str] | None = None,
                  stats: dict | None = None) -> Iterator[RecordedMessage]:
    """The messages of a recording in file order, decoded with this package's classes. A file cut
    short (killed recorder) is read up to its last complete record: `stats["truncated"]` is then
    True. Works on files from any writer whose channels are perception.v1 protobuf messages; other
    channels (the Foxglove ones) are skipped."""
    from mcap.exceptions import McapError
    from mcap.reader import NonSeekingReader

    from perception.transport import message_class

    if stats is not None:
        stats["truncated"] = False
    with open(path, "rb") as f:
        reader = NonSeekingReader(f, validate_crcs=True)
        it = reader.iter_messages(topics=topics_, log_time_order=False)
        while True:
            try:
                schema, channel, message = next(it)
            except StopIteration:
                return
            except (McapError, EOFError, ValueError, struct.error) as e:   # a partial record at the end, a bad CRC
                log.warning("%s: stops after a damaged or partial record (%s)", path, e)
                if stats is not None:
                    stats["truncated"] = True
                return
            # perception.v1 channels only: the Foxglove channels are views of them for Foxglove (their
            # classes may be in the default pool too, once perception.foxglove is imported)
            cls = message_class(schema.name) if schema is not None and schema.name.startswith("perception.v1.") else None
            if cls is None:
                continue
            yield RecordedMessage(channel.topic, message.log_time, message.publish_time, cls.FromString(message.data))
