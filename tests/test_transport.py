"""ZeroMQ transport: wire format, zero-copy pixels, malformed input, bounded newest-first queues,
and the echo / hz tools. Every socket uses an OS-chosen tcp port or an ipc path in tmp_path."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import zmq

from perception import transport
from perception.commands import echo, hz
from perception.transport import MalformedMessage, Publisher, Subscriber, frame_pixels
from perception.v1 import detections_pb2, frame_pb2, status_pb2

pytestmark = pytest.mark.timeout(10)

TCP_ANY = "tcp://127.0.0.1:*"     # bind to a free port the OS picks; Publisher.endpoint tells which


@pytest.fixture(params=["tcp", "ipc"])
def endpoint(request, tmp_path):
    # The ipc path is in a directory that does not exist yet: the Publisher creates it.
    return TCP_ANY if request.param == "tcp" else f"ipc://{tmp_path}/sockets/cam.ipc"


def header(seq=1, width=8, height=4, encoding=frame_pb2.PIXEL_ENCODING_BGR8, row_stride=None, name="front"):
    channels = 1 if encoding == frame_pb2.PIXEL_ENCODING_MONO8 else 3
    return frame_pb2.FrameHeader(camera_name=name, sequence=seq, width=width, height=height, encoding=encoding,
                                 row_stride=width * channels if row_stride is None else row_stride,
                                 capture_end_ns=time.time_ns(), calibration_id="abc")


def image(height, width, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


def connected(endpoint, topics=None, sndhwm=4, **kw):
    """A (publisher, subscriber) pair whose subscription has reached the publisher, so nothing is
    lost to the slow-joiner effect."""
    pub = Publisher(endpoint, sndhwm=sndhwm)
    sub = Subscriber(pub.endpoint, topics, **kw)
    assert pub.wait_for_subscriber(3.0, None if topics is None else topics[0].rstrip("*"))
    return pub, sub


def wait_until(predicate, timeout_s=3.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


# --------------------------------------------------------------------------- delivery

def test_header_and_pixels_arrive_intact(endpoint):
    pub, sub = connected(endpoint, ["camera/front"])
    with pub, sub:
        img = image(180, 320)
        pub.publish("camera/front", header(seq=7, width=320, height=180), img)
        rx = sub.recv(timeout_ms=2000)
        assert rx is not None and rx.topic == "camera/front"
        assert rx.msg.DESCRIPTOR.full_name == "perception.v1.FrameHeader" and rx.msg.sequence == 7
        assert abs(time.time_ns() - rx.recv_ns) < 2e9
        pixels = frame_pixels(rx)
        assert pixels.shape == (180, 320, 3) and pixels.dtype == np.uint8
        np.testing.assert_array_equal(pixels, img)
        assert pub.sent == 1 and pub.dropped == 0
        assert sub.stats["camera/front"].received == 1 and sub.malformed == {}


def test_received_pixels_are_a_view_on_the_zmq_frame():
    pub, sub = connected(TCP_ANY)
    with pub, sub:
        img = image(90, 160)
        pub.publish("camera/front", header(width=160, height=90), img)
        rx = sub.recv(timeout_ms=2000)
        # The payload is the buffer of the zmq.Frame libzmq filled (recv_multipart(copy=False)) ...
        assert isinstance(rx.payload, memoryview) and isinstance(rx.payload.obj, zmq.Frame)
        pixels = frame_pixels(rx)
        # ... and the image array is a view on that same memory, not a copy of it.
        assert np.shares_memory(pixels, np.asarray(rx.payload))
        assert not np.shares_memory(pixels, img)          # over tcp it is the received buffer
        assert not pixels.flags.writeable                 # consumers copy before modifying


def test_row_stride_padding_is_honoured():
    pub, sub = connected(TCP_ANY)
    with pub, sub:
        width, height, stride = 10, 6, 10 * 3 + 7       # 7 bytes of padding per row
        padded = np.full((height, stride), 255, dtype=np.uint8)
        img = image(height, width)
        padded[:, :width * 3] = img.reshape(height, width * 3)
        pub.publish("camera/front", header(width=width, height=height, row_stride=stride), padded)
        rx = sub.recv(timeout_ms=2000)
        pixels = frame_pixels(rx)
        assert pixels.shape == (height, width, 3)
        np.testing.assert_array_equal(pixels, img)
        assert pixels.strides == (stride, 3, 1)           # a strided view, no copy
        assert np.shares_memory(pixels, np.asarray(rx.payload))


def test_mono_frames_and_non_frame_messages():
    pub, sub = connected(TCP_ANY)
    with pub, sub:
        mono = image(4, 8, channels=1)
        pub.publish("camera/ir", header(encoding=frame_pb2.PIXEL_ENCODING_MONO8), mono)
        pub.publish("detections", detections_pb2.Detections(sequence=3, model_name="m"))
        a, b = sub.recv(2000), sub.recv(2000)
        assert frame_pixels(a).shape == (4, 8, 1)
        assert b.topic == "detections" and b.msg.sequence == 3 and b.payload is None
        with pytest.raises(MalformedMessage, match="not_a_frame"):
            frame_pixels(b)


def test_exact_topics_are_not_prefix_matches():
    pub, sub = connected(TCP_ANY, ["camera/front"])
    with pub, sub:
        pub.publish("camera/front_left", header(name="front_left"), image(4, 8))
        pub.publish("camera/front", header(), image(4, 8))
        assert sub.recv(2000).topic == "camera/front"
        assert sub.recv(100) is None
        assert "camera/front_left" not in sub.stats


def test_prefix_pattern_subscribes_to_a_topic_family():
    pub, sub = connected(TCP_ANY, ["status/*"])
    with pub, sub:
        pub.publish("detections", detections_pb2.Detections())
        pub.publish("status/fusion", status_pb2.NodeStatus(node="fusion"))
        assert sub.recv(2000).topic == "status/fusion"
        assert sub.recv(100) is None


def test_one_subscriber_several_endpoints(tmp_path):
    with Publisher(TCP_ANY) as a, Publisher(f"ipc://{tmp_path}/b.ipc") as b, \
            Subscriber([a.endpoint, b.endpoint]) as sub:
        assert a.wait_for_subscriber(3.0) and b.wait_for_subscriber(3.0)
        a.publish("camera/front", header(name="front"), image(4, 8))
        b.publish("camera/back", header(name="back"), image(4, 8))
        topics = {sub.recv(2000).topic, sub.recv(2000).topic}
        assert topics == {"camera/front", "camera/back"}


# --------------------------------------------------------------------------- errors

def test_bind_error_names_the_endpoint():
    with Publisher(TCP_ANY) as first:
        with pytest.raises(transport.TransportError, match=first.endpoint.replace(".", r"\.")) as e:
            Publisher(first.endpoint)
        assert e.value.errno == zmq.EADDRINUSE and isinstance(e.value, zmq.ZMQError)
    with pytest.raises(transport.TransportError, match="nonsense"):
        Publisher("nonsense")


def test_non_contiguous_payload_is_refused():
    with Publisher(TCP_ANY) as pub:
        with pytest.raises(ValueError, match="C-contiguous"):
            pub.publish("camera/front", header(), image(4, 16)[:, ::2])


def _raw_publisher():
    """A bare XPUB socket, to send what Publisher would never send."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.XPUB)
    sock.linger = 0
    sock.bind(TCP_ANY)
    return sock, sock.getsockopt_string(zmq.LAST_ENDPOINT)


def test_malformed_messages_are_counted_and_skipped(caplog):
    raw, ep = _raw_publisher()
    good = header(seq=9)
    frame = [b"camera/front", b"perception.v1.FrameHeader", good.SerializeToString()]
    bad_messages = {
        "part_count": [b"camera/front", b"perception.v1.FrameHeader"],
        "bad_protobuf": [b"camera/front", b"perception.v1.FrameHeader", b"\x0a\xff\x01"],
        "unknown_type": [b"camera/front", b"perception.v1.NoSuchMessage", b""],
        "payload_size": frame + [image(4, 8).tobytes()[:-1]],          # one byte short
        "missing_payload": frame,
        "bad_stride": [b"camera/front", b"perception.v1.FrameHeader",
                       header(row_stride=5).SerializeToString(), b"x" * 20],
    }
    with Subscriber(ep, ["camera/front"]) as sub:
        try:
            assert raw.poll(3000) and raw.recv() == b"\x01camera/front"    # subscription arrived
            for parts in bad_messages.values():
                raw.send_multipart(parts)
            raw.send_multipart(frame + [image(4, 8).tobytes()])
            rx = sub.recv(timeout_ms=2000)
        finally:
            raw.close()
        assert rx is not None and rx.msg.sequence == 9          # the good one still arrives
        assert sub.recv(timeout_ms=50) is None                   # and nothing else does
        assert sub.malformed == {reason: 1 for reason in bad_messages}
        stats = sub.stats["camera/front"]
        assert (stats.received, stats.malformed) == (1, len(bad_messages))
    # Logged (once per reason within the rate limit), with the precise reason.
    assert "header says height 4 x row_stride 24 = 96" in caplog.text


def test_frame_pixels_reasons():
    def rx(h, payload):
        return transport.Received("camera/front", h, memoryview(payload) if payload is not None else None, 0)

    ok = rx(header(), bytes(96))
    assert frame_pixels(ok).shape == (4, 8, 3)
    cases = {
        "bad_encoding": rx(header(encoding=frame_pb2.PIXEL_ENCODING_UNSPECIFIED), bytes(96)),
        "bad_size": rx(header(width=0), bytes(0)),
        "bad_stride": rx(header(row_stride=23), bytes(92)),
        "payload_size": rx(header(), bytes(95)),
        "missing_payload": rx(header(), None),
    }
    for reason, message in cases.items():
        with pytest.raises(MalformedMessage) as e:
            frame_pixels(message)
        assert e.value.reason == reason
    # row_stride 0 (unset) means packed rows.
    assert frame_pixels(rx(header(row_stride=0), bytes(96))).shape == (4, 8, 3)


# --------------------------------------------------------------------------- queueing

def test_drain_latest_returns_newest_per_topic_and_counts_superseded():
    # A burst of 8 exceeds the default SNDHWM of 4: ZeroMQ would drop part of it at the sender.
    pub, sub = connected(TCP_ANY, sndhwm=16, rcvhwm=16)
    with pub, sub:
        for seq in range(5):
            pub.publish("camera/front", header(seq=seq), image(4, 8))
        for seq in range(3):
            pub.publish("camera/back", header(seq=seq, name="back"), image(4, 8))
        wait_until(lambda: sum(s.received for s in sub.stats.values()) == 8)
        latest = sub.drain_latest(timeout_ms=0)
        assert [(r.topic, r.msg.sequence, r.superseded) for r in latest] == [
            ("camera/front", 4, 4), ("camera/back", 2, 2)]
        stats = sub.stats
        assert (stats["camera/front"].superseded, stats["camera/back"].superseded) == (4, 2)
        assert sub.drain_latest(timeout_ms=20) == []             # nothing left
        pub.publish("camera/front", header(seq=5), image(4, 8))
        nxt = sub.drain_latest(timeout_ms=2000)                  # waits for the next one
        assert [(r.msg.sequence, r.superseded) for r in nxt] == [(5, 0)]


def test_recv_keeps_arrival_order_across_topics():
    pub, sub = connected(TCP_ANY, sndhwm=16, rcvhwm=16)
    with pub, sub:
        order = [("a", 0), ("b", 1), ("a", 2), ("c", 3), ("b", 4)]
        for topic, seq in order:
            pub.publish(topic, detections_pb2.Detections(sequence=seq))
        got = [sub.recv(2000) for _ in order]
        assert [(r.topic, r.msg.sequence) for r in got] == order


def test_slow_consumer_gets_bounded_queue_with_newest_frame():
    pub, sub = connected(TCP_ANY, ["camera/front"], rcvhwm=4)
    with pub, sub:
        frame = image(180, 320)
        for seq in range(200):                     # 200 frames at ~1 kHz: 30x a camera's rate
            pub.publish("camera/front", header(seq=seq, width=320, height=180), np.array(frame))
            # Paced, not one solid burst: ZeroMQ drops what exceeds SNDHWM (4) before its I/O
            # thread has written it out, and that would be the newest frames.
            time.sleep(0.001)
        time.sleep(0.3)                            # the consumer is busy meanwhile
        got = []
        while (rx := sub.recv(timeout_ms=50)) is not None:
            got.append(rx.msg.sequence)
        assert len(got) <= 4                       # the queue never held more than rcvhwm
        assert got[-1] == 199                      # and it kept the newest, not the oldest
        assert got == sorted(got)
        # Everything taken off the socket but not handed out was counted as superseded; the rest
        # of the 200 (if any) was dropped by ZeroMQ before arriving: a gap in the sequence.
        stats = sub.stats["camera/front"]
        assert stats.superseded == stats.received - len(got) and stats.received <= 200


def test_publisher_sees_new_subscriptions():
    with Publisher(TCP_ANY) as pub:
        assert pub.new_subscriptions() == 0
        assert not pub.wait_for_subscriber(0.05)
        with Subscriber(pub.endpoint, ["camera/front"]):
            assert pub.wait_for_subscriber(3.0, "camera/front")
            assert pub.new_subscriptions() == 1     # a camera would resend its calibration now
            assert pub.new_subscriptions() == 0
        # Once it has gone (connection closed), the publisher forgets it.
        wait_until(lambda: not pub.wait_for_subscriber(0.01))


def test_a_stalled_subscriber_does_not_hold_back_the_others():
    pub, sub = connected(TCP_ANY, ["camera/front"])
    stalled = zmq.Context.instance().socket(zmq.SUB)   # connected, subscribed, never reads
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.setsockopt(zmq.LINGER, 0)
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    stalled.connect(pub.endpoint)
    with pub, sub:
        try:
            seen = []                                       # the good subscriber's event + the stalled one's
            wait_until(lambda: seen.append(pub.new_subscriptions()) or sum(seen) >= 2)
            for seq in range(60):
                pub.publish("camera/front", header(seq=seq, width=320, height=180), image(180, 320))
                time.sleep(0.001)
            time.sleep(0.2)
            assert [r.msg.sequence for r in sub.drain_latest(timeout_ms=2000)] == [59]
        finally:
            stalled.close()


def test_close_is_prompt_and_idempotent():
    with Publisher(TCP_ANY) as pub:
        sub = Subscriber(pub.endpoint)
        t0 = time.monotonic()
        sub.close()
        sub.close()
        assert time.monotonic() - t0 < 1.0
        assert sub.recv(timeout_ms=10) is None and sub.drain_latest(10) == []


# --------------------------------------------------------------------------- tools

class Background:
    """Publishes a message every period_s from a thread until stopped (after a subscriber came)."""

    def __init__(self, topic, make, period_s=0.01, payload=None):
        self.pub = Publisher(TCP_ANY)
        self.stop = threading.Event()

        def run():
            seq = 0
            while not self.stop.is_set():
                self.pub.publish(topic, make(seq), payload)
                seq += 1
                time.sleep(period_s)

        self.thread = threading.Thread(target=run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.pub.endpoint

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.pub.close()


def test_echo_json_count(capsys):
    with Background("camera/front", lambda s: header(seq=s), payload=image(4, 8)) as ep:
        rc = echo.main(["camera/front", "--endpoint", ep, "--json", "--count", "2", "--timeout", "3"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0 and len(out) == 2
    objs = [json.loads(line) for line in out]
    assert all(o["topic"] == "camera/front" and o["payload_bytes"] == 96 for o in objs)
    assert objs[0]["camera_name"] == "front" and objs[0]["encoding"] == "PIXEL_ENCODING_BGR8"
    assert int(objs[1]["sequence"]) > int(objs[0].get("sequence", 0))


def test_echo_text_format(capsys):
    with Background("detections", lambda s: detections_pb2.Detections(sequence=s + 1, model_name="m")) as ep:
        rc = echo.main(["detections", "-e", ep, "-n", "1", "--timeout", "3"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.startswith("# detections (perception.v1.Detections)\n") and 'model_name: "m"' in out
    assert out.rstrip().endswith("---")


def test_echo_timeout_on_a_silent_endpoint_exits_1(capsys):
    with Publisher(TCP_ANY) as silent:
        t0 = time.monotonic()
        rc = echo.main(["detections", "--endpoint", silent.endpoint, "--timeout", "0.3"])
    err = capsys.readouterr().err
    assert rc == 1 and "no message on 'detections'" in err and "0.3 s" in err
    assert time.monotonic() - t0 < 3


def test_echo_unknown_topic_lists_known_ones(capsys):
    assert echo.main(["camera/nope"]) == 2
    err = capsys.readouterr().err
    assert "camera/front_left" in err and "detections" in err and "sim/truth" in err


def test_default_endpoints_match_the_launch_file():
    from perception import config, topics

    assert topics.default_endpoints("detections") == [config.FUSION_ENDPOINT]
    assert topics.default_endpoints("status/fusion") == [config.FUSION_ENDPOINT]
    assert topics.default_endpoints("camera/front_right") == [config.camera_endpoint(2)]
    assert topics.default_endpoints("sim/truth") == [config.camera_endpoint(0)]
    assert len(topics.default_endpoints("camera/*")) == 6


def test_hz_reports_rate(capsys):
    with Background("status/fusion", lambda s: status_pb2.NodeStatus(node="fusion"), period_s=0.02) as ep:
        rc = hz.main(["status/fusion", "--endpoint", ep, "--duration", "1.3"])
    out = capsys.readouterr().out
    assert rc == 0 and "average rate:" in out and "std dev:" in out
    rate = float(out.split("average rate:")[1].split()[0])
    assert 10 < rate < 60                          # 50 Hz nominal; loose on a loaded 2-core box


def test_a_subscriber_to_many_topics_gets_every_one_of_them(tmp_path):
    """Subscriptions travel upstream through bounded pipes too: with the data HWM applied to
    them, a subscriber to seven topics silently lost the seventh (the fusion node's sim/truth)."""
    from perception.transport import Publisher, Subscriber
    from perception.v1 import detections_pb2

    ep = f"ipc://{tmp_path}/many"
    topics = [f"camera/c{i}" for i in range(8)] + ["sim/truth"]
    with Publisher(ep) as pub, Subscriber(ep, topics) as sub:
        assert pub.wait_for_subscriber(5.0, topic="sim/truth")
        pub.publish("sim/truth", detections_pb2.GroundTruth(stamp_ns=7))
        rx = sub.recv(timeout_ms=3000)
        assert rx is not None and rx.topic == "sim/truth" and rx.msg.stamp_ns == 7
