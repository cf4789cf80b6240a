"""ZeroMQ publish/subscribe for perception messages: protobuf headers, zero-copy pixel payloads,
bounded queues that keep the newest message.

Wire format of one message (a ZeroMQ multipart message):

    [topic (utf-8), full protobuf type name (e.g. b"perception.v1.FrameHeader"),
     serialized protobuf, optional raw payload (e.g. pixels)]

Pixels are never put inside protobuf bytes: they travel as the last part, sent with
``send_multipart(copy=False)`` and received with ``recv_multipart(copy=False)``, so neither side
copies them. Any language with ZeroMQ and protobuf can speak this (a C++ SUB socket included).

Queueing (why there is a receiver thread)
-----------------------------------------
ZeroMQ's PUB/SUB queues drop the *newest* message when full (the publisher discards what it cannot
enqueue). A consumer that is slower than its producer, and reads only now and then, would
therefore always get the *oldest* frames, as stale as the queues are deep. To keep latency
bounded we do what ROS 2's KEEP_LAST history and openpilot's conflating readers do: each
Subscriber owns a background thread that empties its socket as soon as messages arrive (cheap:
no copies) into a small per-topic queue of depth ``rcvhwm`` that drops the *oldest* entry when
full. ``drain_latest()`` then returns the newest message per topic; everything it discards is
counted as superseded. The ZeroMQ queues stay short, so their tail-drop only happens when the
subscriber process is stalled as a whole.

Security (docs/security.md)
--------------------------
Every socket is created by ``_make_socket``, which calls the security hook (``set_security_hook``;
perception.security installs CurveZMQ there) before bind/connect, and every connect asks the
hook's ``before_connect`` for the public key the server at that endpoint must prove it holds.
Without a hook, binding or connecting to a TCP endpoint that is not loopback is refused unless
``allow_insecure(True)`` was called (``--insecure``). Every subscriber sets ``zmq.MAXMSGSIZE``
(``set_max_message_size``; default ``DEFAULT_MAX_MSG_SIZE``): ZeroMQ drops the connection of a
peer that announces a larger message part before allocating it.
"""
from __future__ import annotations

import collections
import errno
import ipaddress
import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import zmq
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from perception.config import MAX_IMAGE_SIDE

# Importing the generated modules registers perception.v1 types in the default descriptor pool.
from perception.v1 import calibration_pb2, detections_pb2, frame_pb2, status_pb2  # noqa: F401

log = logging.getLogger(__name__)

__all__ = ["Publisher", "Subscriber", "Received", "TopicStats", "MalformedMessage", "TransportError",
           "frame_pixels", "type_name", "message_class", "set_security_hook", "security_stats",
           "allow_insecure", "set_max_message_size", "is_loopback", "DEFAULT_MAX_MSG_SIZE"]

# Bytes per pixel of each encoding (PIXEL_ENCODING_UNSPECIFIED is not accepted).
_CHANNELS = {
    frame_pb2.PIXEL_ENCODING_BGR8: 3,
    frame_pb2.PIXEL_ENCODING_RGB8: 3,
    frame_pb2.PIXEL_ENCODING_MONO8: 1,
}
_FRAME_TYPE = frame_pb2.FrameHeader.DESCRIPTOR.full_name

# How often the receiver thread wakes up to check whether it should stop (close() latency).
_POLL_INTERVAL_MS = 50
# Messages taken off the socket per lock acquisition, at most.
_MAX_BATCH = 256
# A malformed-message reason is logged at most once per this many seconds (with its count).
_LOG_EVERY_S = 5.0


class MalformedMessage(ValueError):
    """A message that breaks the wire contract. ``reason`` is a short stable key used in counters
    (e.g. "part_count", "payload_size"); the message text says precisely what was wrong."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class TransportError(zmq.ZMQError):
    """A socket could not bind/connect; the message names the endpoint. Subclasses zmq.ZMQError,
    so ``except zmq.ZMQError`` keeps working and ``errno`` is preserved."""


# --------------------------------------------------------------------------- socket creation

SecurityHook = Callable[[zmq.Socket, bool], None]
ConnectHook = Callable[[zmq.Socket, str], None]
_security_hook: SecurityHook | None = None
_connect_hook: ConnectHook | None = None
_insecure_allowed = False
KEYS_ENV = "PERCEPTION_KEYS"        # directory of keys (perception.security); turns security on

# The largest message part a subscriber accepts unless set_max_message_size() says otherwise:
# a 4K BGR frame (3840 x 2160 x 3 = 24.9 MB) plus room for headers.
DEFAULT_MAX_MSG_SIZE = 32 * 1024 * 1024
_max_msg_size = DEFAULT_MAX_MSG_SIZE


def set_security_hook(hook: SecurityHook | None, before_connect: ConnectHook | None = None) -> None:
    """Install ``hook(socket, is_server)``, called on every new socket before bind/connect, and
    ``before_connect(socket, endpoint)``, called before each connect (CurveZMQ's server key is
    per connection: libzmq copies the socket's options when connect() is called).

    perception.security.Curve is such a hook: for a server (binding publisher) it sets
    ``curve_server`` and the secret key and runs a ZAP authenticator with the allowed client keys;
    for a client it sets the client's key pair, and per connect the server's public key."""
    global _security_hook, _connect_hook
    _security_hook = hook
    _connect_hook = before_connect


_env_security: Callable[[str], object] | None = None


def set_env_security(installer: Callable[[str], object] | None) -> None:
    """What a socket made with no security hook does when PERCEPTION_KEYS is set: installer(keys_dir)
    installs a hook (perception.security registers this when imported, so transport itself never
    imports it)."""
    global _env_security
    _env_security = installer


def security_stats() -> dict[str, int]:
    """Counters of the installed security hook (e.g. ``{"refused": 3, "accepted": 2}``), or {}."""
    stats = getattr(_security_hook, "stats", None)
    return dict(stats()) if callable(stats) else {}


def allow_insecure(allowed: bool = True) -> None:
    """Allow sockets without security on endpoints other than loopback/ipc/inproc (``--insecure``)."""
    global _insecure_allowed
    _insecure_allowed = allowed


def set_max_message_size(nbytes: int | None) -> None:
    """The largest message part new subscribers of this process accept (None: the default)."""
    global _max_msg_size
    if nbytes is not None and nbytes < 1024:
        raise ValueError(f"maximum message size {nbytes} is too small")
    _max_msg_size = DEFAULT_MAX_MSG_SIZE if nbytes is None else int(nbytes)


def is_loopback(endpoint: str) -> bool:
    """True for endpoints only this machine can reach: ipc, inproc, tcp on a loopback address."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint[len("tcp://"):].rsplit(":", 1)[0]
    if ";" in host:                     # "tcp://source_addr;host:port": the destination counts
        host = host.split(";", 1)[1]
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False                    # "*", an interface name or a host name


# Subscriptions travel upstream as messages (SUB -> XPUB) through the same bounded pipes as
# data travels down: a small HWM there silently drops subscriptions beyond the first few
# (a subscriber to seven topics lost the seventh). Only the data direction is kept short.
_CONTROL_HWM = 1000


def _make_socket(context: zmq.Context, socket_type: int, *, hwm: int, server: bool) -> zmq.Socket:
    """The one place sockets are made: bounded queues and options are set before bind/connect
    (ZeroMQ ignores HWM changes on already-connected pipes). `hwm` bounds the data direction:
    outgoing for publishers, incoming for subscribers."""
    sock = context.socket(socket_type)
    sock.setsockopt(zmq.LINGER, 0)           # close() never waits for unsent messages
    data_out = socket_type in (zmq.PUB, zmq.XPUB)
    sock.setsockopt(zmq.SNDHWM, hwm if data_out else _CONTROL_HWM)
    sock.setsockopt(zmq.RCVHWM, _CONTROL_HWM if data_out else hwm)
    if socket_type in (zmq.SUB, zmq.XSUB):
        sock.setsockopt(zmq.MAXMSGSIZE, _max_msg_size)
    if _security_hook is None and os.environ.get(KEYS_ENV):
        # A process that did not configure security itself (a script, the launcher's summary) but
        # runs with PERCEPTION_KEYS set: it connects as the "tools" client through the installer
        # perception.security registers when imported; never silently without keys.
        try:
            if _env_security is None:
                raise ValueError("perception.security is not loaded in this process (import it, or call "
                                 "perception.security.install)")
            _env_security(os.environ[KEYS_ENV])
        except ValueError as e:          # SecurityError is a ValueError
            sock.close(linger=0)
            raise TransportError(errno.EACCES, f"{KEYS_ENV}: {e}") from None
    if _security_hook is not None:
        try:
            _security_hook(sock, server)
        except BaseException:
            sock.close(linger=0)
            raise
    return sock


def _ensure_ipc_dir(endpoint: str) -> None:
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://"):]
        if path and not path.startswith("@") and os.path.dirname(path):   # "@..." = abstract socket
            os.makedirs(os.path.dirname(path), exist_ok=True)


def _attach(sock: zmq.Socket, endpoint: str, bind: bool) -> None:
    """bind or connect, turning ZeroMQ's terse errors into ones that name the endpoint."""
    verb = "bind" if bind else "connect"
    if _security_hook is None and not _insecure_allowed and not is_loopback(endpoint):
        raise TransportError(errno.EACCES, f"cannot {verb} {endpoint!r} without security: it is not a "
                             f"loopback endpoint (give --keys DIR or set PERCEPTION_KEYS; --insecure "
                             f"allows it, docs/security.md)")
    if not bind and _connect_hook is not None:
        try:
            _connect_hook(sock, endpoint)
        except ValueError as e:
            raise TransportError(errno.EACCES, f"cannot {verb} {endpoint!r}: {e}") from None
    try:
        if bind:
            _ensure_ipc_dir(endpoint)
            sock.bind(endpoint)
        else:
            sock.connect(endpoint)
    except zmq.ZMQError as e:
        hint = ""
        if e.errno == zmq.EADDRINUSE:
            hint = " (is another process already publishing there?)"
        elif e.errno == zmq.EPROTONOSUPPORT or "://" not in endpoint:
            hint = " (expected tcp://HOST:PORT or ipc:///path)"
        raise TransportError(e.errno, f"cannot {verb} {endpoint!r}: {e.strerror}{hint}") from None
    except OSError as e:    # e.g. creating the ipc directory
        raise TransportError(e.errno, f"cannot {verb} {endpoint!r}: {e}") from None


# --------------------------------------------------------------------------- type names

def type_name(msg: Message) -> str:
    """The full protobuf type name sent as the second part, e.g. "perception.v1.FrameHeader"."""
    return msg.DESCRIPTOR.full_name


_classes: dict[str, type[Message]] = {}


def message_class(name: str) -> type[Message] | None:
    """The message class registered under a full type name in the default pool, or None.
    Only hits are cached, so a sender inventing type names cannot grow the cache."""
    cls = _classes.get(name)
    if cls is None:
        try:
            desc = descriptor_pool.Default().FindMessageTypeByName(name)
        except KeyError:
            return None
        cls = _classes[name] = message_factory.GetMessageClass(desc)
    return cls


# --------------------------------------------------------------------------- publisher

class Publisher:
    """Publishes protobuf messages (plus an optional raw payload) on one endpoint.

    ``publish`` never blocks. The socket is an XPUB (wire-compatible with PUB) so the publisher
    also sees subscriptions arrive: ``wait_for_subscriber`` avoids the slow-joiner loss in tests
    and tools, and ``new_subscriptions`` tells a camera when to resend its full calibration.
    """

    def __init__(self, endpoint: str, *, bind: bool = True, sndhwm: int = 4,
                 context: zmq.Context | None = None):
        self._context = context or zmq.Context.instance()
        self._sock = _make_socket(self._context, zmq.XPUB, hwm=sndhwm, server=bind)
        # Pass every subscribe and unsubscribe message up (not only the first/last per topic), so
        # a second or restarted subscriber is noticed and a departed one forgotten.
        self._sock.setsockopt(zmq.XPUB_VERBOSER, 1)
        try:
            _attach(self._sock, endpoint, bind)
        except TransportError:
            self._sock.close(linger=0)
            raise
        # The endpoint actually bound ("tcp://127.0.0.1:*" resolves to the chosen port).
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT) if bind else endpoint
        self.sent = 0
        # Messages the socket refused. With PUB semantics libzmq drops silently per slow
        # subscriber instead (receivers see that as a sequence gap), so this stays 0 in
        # normal operation; it counts only a refusal ZeroMQ reports (EAGAIN).
        self.dropped = 0
        self._subscriptions: collections.Counter[bytes] = collections.Counter()   # prefix -> subscribers
        self._new_subscriptions = 0

    def publish(self, topic: str, msg: Message,
                payload: np.ndarray | memoryview | bytes | None = None) -> None:
        """Send [topic, type name, serialized msg, payload?]. The payload is sent without a copy:
        do not write into that buffer afterwards (allocate a new array per frame)."""
        parts: list = [topic.encode("utf-8"), type_name(msg).encode("ascii"), msg.SerializeToString()]
        if payload is not None:
            parts.append(_payload_buffer(payload))
        self._read_subscriptions()
        try:
            self._sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
            self.sent += 1
        except zmq.Again:
            self.dropped += 1

    def new_subscriptions(self) -> int:
        """Subscribe events seen since the last call (a new or reconnected subscriber sends one
        per topic it wants). A camera resends its full calibration when this is > 0."""
        self._read_subscriptions()
        n, self._new_subscriptions = self._new_subscriptions, 0
        return n

    def wait_for_subscriber(self, timeout_s: float, topic: str | None = None) -> bool:
        """Block until some subscriber has subscribed to ``topic`` (any topic if None), so the
        next publish reaches it; False on timeout. Works around the slow-joiner loss."""
        deadline = time.monotonic() + timeout_s
        wanted = None if topic is None else topic.encode("utf-8")
        while True:
            self._read_subscriptions()
            if any(wanted is None or wanted.startswith(p) for p, n in self._subscriptions.items() if n > 0):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._sock.poll(max(1, int(left * 1000)), zmq.POLLIN)

    def _read_subscriptions(self) -> None:
        """Consume pending (un)subscribe messages (1 byte flag + topic prefix), non-blocking."""
        while True:
            try:
                event = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if event[:1] == b"\x01":
                self._subscriptions[event[1:]] += 1
                self._new_subscriptions += 1
            elif event[:1] == b"\x00" and self._subscriptions[event[1:]] > 0:
                self._subscriptions[event[1:]] -= 1

    def close(self) -> None:
        self._sock.close(linger=0)

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _payload_buffer(payload) -> memoryview | bytes:
    """A contiguous buffer over the payload, without copying it."""
    if isinstance(payload, np.ndarray):
        if not payload.flags.c_contiguous:
            # A silent copy would hide a cost and a row_stride mismatch: make the sender decide.
            raise ValueError("payload array must be C-contiguous; send the padded buffer and set "
                             "FrameHeader.row_stride, or pass np.ascontiguousarray(image)")
        return memoryview(payload).cast("B")  # type: ignore[arg-type]  # ndarray has the buffer protocol
    if isinstance(payload, memoryview):
        if not payload.contiguous:
            raise ValueError("payload memoryview must be contiguous")
        return payload
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload) if isinstance(payload, bytearray) else payload
    raise TypeError(f"payload must be a numpy array, memoryview or bytes, not {type(payload).__name__}")


# --------------------------------------------------------------------------- receiving side

@dataclass
class Received:
    topic: str
    msg: Message                    # decoded protobuf
    payload: memoryview | None      # zero-copy view on the received ZeroMQ frame (keeps it alive)
    recv_ns: int                    # time.time_ns() when the receiver thread took it off the socket
    # Older messages of this topic discarded just before this one (queue overflow or
    # drain_latest). For gap accounting: lost_in_transit = seq - prev_seq - 1 - superseded.
    superseded: int = 0


@dataclass
class TopicStats:
    received: int = 0               # well-formed messages taken off the socket (incl. superseded)
    superseded: int = 0             # discarded because a newer message of the topic replaced them
    malformed: int = 0              # broke the contract (see Subscriber.malformed for reasons)
    last_recv_ns: int = 0           # receipt time of the newest well-formed message


def frame_pixels(rx: Received) -> np.ndarray:
    """The pixels of a FrameHeader message as a read-only (H, W, C) uint8 view on the received
    buffer (no copy), honouring row_stride. Raises MalformedMessage saying what does not match.

    row_stride 0 (proto3 "unset") means tightly packed rows (width * channels bytes)."""
    h = rx.msg
    if type_name(h) != _FRAME_TYPE:
        raise MalformedMessage("not_a_frame", f"{rx.topic!r} carries {type_name(h)}, not {_FRAME_TYPE}")
    if rx.payload is None:
        raise MalformedMessage("missing_payload", f"frame {h.camera_name!r} #{h.sequence} has no pixel part")
    channels = _CHANNELS.get(h.encoding)
    if channels is None:
        raise MalformedMessage("bad_encoding", f"frame {h.camera_name!r} #{h.sequence}: encoding "
                               f"{h.encoding} is not one of BGR8, RGB8, MONO8")

    if not (0 < h.width <= MAX_IMAGE_SIDE and 0 < h.height <= MAX_IMAGE_SIDE):
        raise MalformedMessage("bad_size", f"frame {h.camera_name!r} #{h.sequence}: "
                               f"image size {h.width}x{h.height} (each side in [1, {MAX_IMAGE_SIDE}])")
    row_bytes = h.width * channels
    stride = h.row_stride or row_bytes
    if stride < row_bytes:
        raise MalformedMessage("bad_stride", f"frame {h.camera_name!r} #{h.sequence}: row_stride {stride} "
                               f"< width {h.width} x {channels} bytes per pixel")
    expected = stride * h.height
    if rx.payload.nbytes != expected:
        raise MalformedMessage("payload_size", f"frame {h.camera_name!r} #{h.sequence}: payload has "
                               f"{rx.payload.nbytes} bytes, header says height {h.height} x row_stride "
                               f"{stride} = {expected}")
    rows = np.frombuffer(rx.payload, dtype=np.uint8).reshape(h.height, stride)
    # Slicing off the padding and splitting the row into (W, C) are both views.
    pixels = rows[:, :row_bytes].reshape(h.height, h.width, channels)
    # Read-only: over inproc the buffer can be the sender's own array. Copy to modify.
    pixels.flags.writeable = False
    return pixels


def _decode(parts: list[zmq.Frame], recv_ns: int) -> Received:
    """Decode one multipart message or raise MalformedMessage."""
    if len(parts) not in (3, 4):
        raise MalformedMessage("part_count", f"expected 3 or 4 parts (topic, type, protobuf[, payload]), "
                               f"got {len(parts)}")
    try:
        topic = parts[0].bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedMessage("bad_topic", f"topic {parts[0].bytes[:64]!r} is not utf-8") from None
    name = parts[1].bytes.decode("utf-8", errors="replace")
    cls = message_class(name)
    if cls is None:
        raise MalformedMessage("unknown_type", f"{topic!r}: type {name!r} is not a known protobuf message")
    try:
        msg = cls.FromString(parts[2].bytes)
    except (DecodeError, ValueError) as e:
        raise MalformedMessage("bad_protobuf", f"{topic!r}: cannot parse {name}: {e}") from None
    payload = parts[3].buffer if len(parts) == 4 else None
    rx = Received(topic=topic, msg=msg, payload=payload, recv_ns=recv_ns)
    if name == _FRAME_TYPE:
        frame_pixels(rx)        # validate geometry against the payload now, so bad frames never queue
    return rx


def _topic_of(parts: list[zmq.Frame]) -> str | None:
    try:
        return parts[0].bytes.decode("utf-8") if parts else None
    except UnicodeDecodeError:
        return None


class _TopicFilter:
    """ZeroMQ subscriptions match topic *prefixes* ("camera/front" also matches
    "camera/front_left"), so exact topics are checked again here. A topic ending in "*" is a
    prefix pattern ("status/*")."""

    def __init__(self, topics: list[str] | None):
        self.exact = set() if topics is None else {t for t in topics if not t.endswith("*")}
        self.prefixes = [""] if topics is None else [t[:-1] for t in topics if t.endswith("*")]

    def zmq_prefixes(self) -> list[bytes]:
        return [t.encode("utf-8") for t in sorted(self.exact)] + [p.encode("utf-8") for p in self.prefixes]

    def __call__(self, topic: str) -> bool:
        return topic in self.exact or any(topic.startswith(p) for p in self.prefixes)


class Subscriber:
    """Receives messages from one or more publishers' endpoints.

    A background thread takes messages off the socket as they arrive and keeps at most
    ``rcvhwm`` per topic, dropping the oldest (counted as superseded). ``recv`` returns them in
    arrival order; ``drain_latest`` returns only the newest per topic.
    """

    def __init__(self, endpoints: str | list[str], topics: list[str] | None = None, *,
                 rcvhwm: int = 4, context: zmq.Context | None = None):
        if rcvhwm < 1:
            raise ValueError("rcvhwm must be >= 1")
        self.endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        self._depth = rcvhwm
        self._filter = _TopicFilter(topics)
        self._context = context or zmq.Context.instance()
        sock = _make_socket(self._context, zmq.SUB, hwm=rcvhwm, server=False)
        try:
            for prefix in self._filter.zmq_prefixes():
                sock.setsockopt(zmq.SUBSCRIBE, prefix)
            for ep in self.endpoints:
                _attach(sock, ep, bind=False)
        except TransportError:
            sock.close(linger=0)
            raise
        # Shared with the receiver thread, guarded by _cond.
        self._cond = threading.Condition()
        self._queues: dict[str, collections.deque] = {}   # topic -> deque of (arrival index, Received)
        self._pending_superseded: dict[str, int] = collections.defaultdict(int)
        self._stats: dict[str, TopicStats] = {}
        self._malformed: dict[str, int] = collections.defaultdict(int)
        self._arrivals = 0
        self._closed = False
        self._error: BaseException | None = None
        self._last_log: dict[str, float] = {}
        # The socket is handed to the thread and used only there (ZeroMQ sockets are not
        # thread-safe; starting a thread is the memory barrier a hand-over needs).
        self._thread = threading.Thread(target=self._run, args=(sock,), daemon=True,
                                        name=f"perception-sub {','.join(self.endpoints)}")
        self._thread.start()

    # ---- public API

    @property
    def stats(self) -> dict[str, TopicStats]:
        """A snapshot of the per-topic counters."""
        with self._cond:
            return {t: replace(s) for t, s in self._stats.items()}

    @property
    def malformed(self) -> dict[str, int]:
        """A snapshot of malformed-message counts per reason."""
        with self._cond:
            return dict(self._malformed)

    def recv(self, timeout_ms: int | None = None) -> Received | None:
        """The oldest queued well-formed message, waiting up to timeout_ms (None = forever);
        None on timeout or once closed."""
        with self._cond:
            if not self._wait(timeout_ms):
                return None
            topic = min((q[0][0], t) for t, q in self._queues.items() if q)[1]
            return self._deliver(topic, self._queues[topic].popleft()[1])

    def drain_latest(self, timeout_ms: int = 0) -> list[Received]:
        """Wait up to timeout_ms for at least one message, then return the newest queued message
        of each topic (in arrival order); the older ones are counted as superseded."""
        with self._cond:
            if not self._wait(timeout_ms):
                return []
            newest = []
            for topic, q in self._queues.items():
                if q:
                    older = len(q) - 1
                    self._stats[topic].superseded += older
                    self._pending_superseded[topic] += older
                    newest.append((q[-1][0], topic, q[-1][1]))
                    q.clear()
            return [self._deliver(topic, rx) for _, topic, rx in sorted(newest, key=lambda e: e[0])]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- consumer side helpers (called with _cond held)

    def _wait(self, timeout_ms: int | None) -> bool:
        """Wait until a message is queued; False on timeout or close."""
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000
        while not any(self._queues.values()):
            if self._error is not None:
                raise RuntimeError(f"subscriber receive thread failed: {self._error!r}") from self._error
            if self._closed:
                return False
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            # Bounded waits keep Ctrl-C responsive in the main thread.
            self._cond.wait(0.5 if left is None else min(left, 0.5))
        return True

    def _deliver(self, topic: str, rx: Received) -> Received:
        rx.superseded = self._pending_superseded.pop(topic, 0)
        return rx

    # ---- receiver thread

    def _run(self, sock: zmq.Socket) -> None:
        try:
            while not self._closed:
                if sock.poll(_POLL_INTERVAL_MS, zmq.POLLIN):
                    self._read_all(sock)
        except BaseException as e:     # surface it to the consumer instead of dying silently
            log.exception("subscriber %s: receive thread failed", self.endpoints)
            with self._cond:
                self._error = e
                self._cond.notify_all()
        finally:
            sock.close(linger=0)

    def _read_all(self, sock: zmq.Socket) -> None:
        """Take everything currently queued off the socket, then wake consumers once."""
        batch: list[tuple[list[zmq.Frame], int]] = []
        while len(batch) < _MAX_BATCH:     # bounded even if a publisher outpaces us
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            batch.append((parts, time.time_ns()))
        with self._cond:
            for parts, recv_ns in batch:
                self._accept(parts, recv_ns)
            self._cond.notify_all()

    def _accept(self, parts: list[zmq.Frame], recv_ns: int) -> None:
        topic = _topic_of(parts)
        if topic is not None and not self._filter(topic):
            return          # matched a ZeroMQ prefix subscription but is not a wanted topic
        try:
            rx = _decode(parts, recv_ns)
        except MalformedMessage as e:
            self._count_malformed(topic, e)
            return
        stats = self._stats.setdefault(rx.topic, TopicStats())
        stats.received += 1
        stats.last_recv_ns = recv_ns
        q = self._queues.setdefault(rx.topic, collections.deque())
        if len(q) >= self._depth:          # keep the newest: drop the oldest, and count it
            q.popleft()
            stats.superseded += 1
            self._pending_superseded[rx.topic] += 1
        self._arrivals += 1
        q.append((self._arrivals, rx))

    def _count_malformed(self, topic: str | None, e: MalformedMessage) -> None:
        self._malformed[e.reason] += 1
        if topic is not None:
            self._stats.setdefault(topic, TopicStats()).malformed += 1
        # Rate-limited per reason: a broken sender at 30 Hz must not flood the log.
        now = time.monotonic()
        if now - self._last_log.get(e.reason, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._last_log[e.reason] = now
            log.warning("dropped malformed message from %s (%d so far with reason %s): %s",
                        ",".join(self.endpoints), self._malformed[e.reason], e.reason, e.detail)
