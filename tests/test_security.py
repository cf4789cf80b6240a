"""CurveZMQ security and the maximum message size, on loopback with real sockets (docs/security.md).

In one process a test plays several parties: the security hook is read when a socket is made (and
per connect), so installing another identity between creating the publisher and the subscriber
gives each its own keys."""
from __future__ import annotations

import stat
import time

import numpy as np
import pytest
import zmq

from perception import security, transport
from perception.transport import Publisher, Subscriber
from perception.v1 import frame_pb2, status_pb2

TCP_ANY = "tcp://127.0.0.1:*"


@pytest.fixture
def keys(tmp_path):
    d = tmp_path / "keys"
    security.create_keys(d, ["front"], {})
    return d


class Ctx(zmq.Context):
    """A context that remembers the hooks installed for it (stopped at the end of a test)."""
    curves: list = []


@pytest.fixture
def ctx():
    c = Ctx()
    c.curves = []
    yield c
    transport.set_security_hook(None)
    for cv in c.curves:
        cv.close()
    c.destroy(linger=0)


def use(ctx, keys, identity, server_keys=None):
    """Install `identity`'s hook; `server_keys`: endpoint -> server identity for its connects."""
    curve = security.install(keys, identity)
    assert curve is not None
    for ep, server in (server_keys or {}).items():
        curve.server_keys[ep] = security._public_key(keys, server)
    ctx.curves.append(curve)
    return curve


def status(n):
    return status_pb2.NodeStatus(node=f"n{n}")


def wait_until(predicate, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def publish_until_received(pub, sub, tries=100):
    for i in range(tries):
        pub.publish("status/x", status(i))
        rx = sub.recv(timeout_ms=50)
        if rx is not None:
            return rx
    return None


def test_allowed_client_receives_from_the_camera_server(ctx, keys):
    camera = use(ctx, keys, "camera-front")
    with Publisher(TCP_ANY, context=ctx) as pub:
        use(ctx, keys, security.NODE, {pub.endpoint: "camera-front"})
        with Subscriber(pub.endpoint, ["status/x"], context=ctx) as sub:
            assert pub.wait_for_subscriber(5.0)
            rx = publish_until_received(pub, sub)
            assert rx is not None and rx.msg.node.startswith("n")
    assert camera.stats()["accepted"] >= 1
    assert camera.stats()["refused"] == 0


@pytest.mark.parametrize("client", ["no key", "key not allowed"])
def test_client_without_an_allowed_key_receives_nothing_and_is_counted(ctx, keys, tmp_path, client):
    camera = use(ctx, keys, "camera-front")
    with Publisher(TCP_ANY, context=ctx) as pub:
        if client == "no key":
            transport.set_security_hook(None)
        else:   # a valid key pair made elsewhere, not in this rig's allow-list
            other = tmp_path / "other"
            security.create_keys(other, [], {})
            use(ctx, other, security.TOOLS, {})
            ctx.curves[-1].server_keys[pub.endpoint] = camera.public   # it even knows the server key
        with Subscriber(pub.endpoint, ["status/x"], context=ctx) as sub:
            assert wait_until(lambda: camera.stats()["refused"] >= 1)
            assert not pub.wait_for_subscriber(0.5)
            for i in range(20):
                pub.publish("status/x", status(i))
            assert sub.recv(timeout_ms=500) is None
            assert sub.stats == {}
    if client == "key not allowed":
        assert camera.stats()["refused_by_allow_list"] >= 1
    assert camera.stats()["accepted"] == 0


def test_rogue_publisher_without_the_camera_secret_is_not_accepted(ctx, keys, tmp_path):
    """A process that binds the camera's port with a key pair of its own (it cannot have the
    camera's secret): the node, requiring the camera's public key, never completes the handshake."""
    rogue_keys = tmp_path / "rogue"
    security.create_keys(rogue_keys, ["front"], {})
    # The rogue even copies the real allow-list, so it would accept the node as a client.
    for f in (keys / security.ALLOWED_DIR).iterdir():
        (rogue_keys / security.ALLOWED_DIR / f.name).write_bytes(f.read_bytes())
    use(ctx, rogue_keys, "camera-front")
    with Publisher(TCP_ANY, context=ctx) as rogue:
        node = use(ctx, keys, security.NODE, {rogue.endpoint: "camera-front"})
        with Subscriber(rogue.endpoint, ["status/x"], context=ctx) as sub:
            assert wait_until(lambda: node.stats()["refused"] >= 1)
            assert not rogue.wait_for_subscriber(0.5)
            for i in range(20):
                rogue.publish("status/x", status(i))
            assert sub.recv(timeout_ms=500) is None


def test_connect_to_an_endpoint_without_a_known_server_key_is_refused(ctx, keys):
    use(ctx, keys, security.NODE)
    with pytest.raises(transport.TransportError, match="no server key"):
        Subscriber("tcp://127.0.0.1:5999", ["x"], context=ctx)


def test_insecure_non_loopback_endpoint_is_refused_unless_allowed(ctx):
    transport.set_security_hook(None)
    with pytest.raises(transport.TransportError, match="without security"):
        Publisher("tcp://0.0.0.0:*", context=ctx)
    transport.allow_insecure(True)
    try:
        with Publisher("tcp://0.0.0.0:*", context=ctx):
            pass
    finally:
        transport.allow_insecure(False)
    assert transport.is_loopback("tcp://127.0.0.1:5550") and transport.is_loopback("ipc:///tmp/x")
    assert transport.is_loopback("tcp://localhost:1") and transport.is_loopback("tcp://[::1]:1")
    assert not transport.is_loopback("tcp://*:5550") and not transport.is_loopback("tcp://10.0.0.2:5550")


def test_message_over_max_size_never_reaches_the_application(ctx):
    """ZeroMQ treats a part over MAXMSGSIZE as a protocol error: it closes that connection before
    allocating the part and does not reconnect it (libzmq's session terminates on protocol
    errors), so the offending publisher is cut off; the subscriber's other publishers go on."""
    transport.set_max_message_size(64 * 1024)
    try:
        with Publisher(TCP_ANY, context=ctx) as bad, Publisher(TCP_ANY, context=ctx) as good, \
                Subscriber([bad.endpoint, good.endpoint], ["camera/front", "status/x"], context=ctx) as sub:
            assert bad.wait_for_subscriber(5.0) and good.wait_for_subscriber(5.0)
            assert publish_until_received(bad, sub) is not None
            big = np.zeros((256, 256, 3), np.uint8)            # 196,608 bytes > 64 KiB
            hdr = frame_pb2.FrameHeader(camera_name="front", sequence=1, width=256, height=256,
                                        encoding=frame_pb2.PIXEL_ENCODING_BGR8)
            bad.publish("camera/front", hdr, big)
            # The connection is gone: the publisher sees the subscriptions withdrawn.
            assert wait_until(lambda: bad.wait_for_subscriber(0.01) is False)
            rx = publish_until_received(good, sub)
            assert rx is not None and rx.topic == "status/x"
            assert "camera/front" not in sub.stats and sub.malformed == {}
    finally:
        transport.set_max_message_size(None)


def test_perception_keys_writes_private_secrets(tmp_path, capsys):
    from perception.commands import keys as keys_cmd

    d = tmp_path / "k"
    assert keys_cmd.main(["--dir", str(d)]) == 0
    secrets = sorted(p.name for p in d.glob("*.key_secret"))
    assert "node.key_secret" in secrets and "tools.key_secret" in secrets and "camera-front.key_secret" in secrets
    for p in d.glob("*.key_secret"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert sorted(p.name for p in (d / "allowed").iterdir()) == ["node.key", "tools.key"]
    # Loadable, and a second run keeps the existing keys.
    node = security.load_curve(d, security.NODE)
    assert "tcp://127.0.0.1:5550" in node.server_keys
    assert keys_cmd.main(["--dir", str(d)]) == 0
    assert security.load_curve(d, security.NODE).public == node.public
    # A secret readable by others is refused.
    (d / "node.key_secret").chmod(0o644)
    with pytest.raises(security.SecurityError, match="readable by others"):
        security.load_curve(d, security.NODE)


def test_perception_keys_env_secures_a_process_that_configures_nothing(ctx, keys, monkeypatch):
    """The launcher's summary line: no --keys of its own, PERCEPTION_KEYS set: it connects as the
    tools client, which the camera's allow-list accepts."""
    camera = use(ctx, keys, "camera-front")
    with Publisher(TCP_ANY, context=ctx) as pub:
        transport.set_security_hook(None)
        (keys / security.ENDPOINTS_FILE).write_text(f"{pub.endpoint}: camera-front\n")
        monkeypatch.setenv(security.KEYS_ENV, str(keys))
        with Subscriber(pub.endpoint, ["status/x"], context=ctx) as sub:
            assert "refused" in transport.security_stats()      # the env installed a hook
            assert pub.wait_for_subscriber(5.0)
            assert publish_until_received(pub, sub) is not None
    assert camera.stats()["accepted"] >= 1
    transport.set_security_hook(None)
    monkeypatch.setenv(security.KEYS_ENV, str(keys / "missing"))
    with pytest.raises(transport.TransportError, match="PERCEPTION_KEYS"):
        Subscriber(pub.endpoint, ["status/x"], context=ctx)


def test_secured_camera_process_serves_allowed_clients_only(ctx, tmp_path):
    """`perception camera --keys DIR --create-keys` as a real process: the node's key receives its
    frames, a subscriber without a key receives none."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"tcp://127.0.0.1:{port}"
    keys = tmp_path / "keys"
    security.rig_keys(keys)
    (keys / security.ENDPOINTS_FILE).write_text(f"{endpoint}: camera-front\n")
    proc = subprocess.Popen([sys.executable, "-m", "perception.cli", "camera", "--name", "front", "--endpoint",
                             endpoint, "--rate", "20", "--count", "2000", "--keys", str(keys), "--create-keys"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        transport.set_security_hook(None)
        with Subscriber(endpoint, ["camera/front"], context=ctx) as plain:
            use(ctx, keys, security.NODE)
            with Subscriber(endpoint, ["camera/front"], context=ctx) as node:
                rx = node.recv(timeout_ms=60_000)
                assert rx is not None and rx.msg.camera_name == "front"
                assert transport.frame_pixels(rx).shape[2] == 3
                assert node.recv(timeout_ms=5_000) is not None
                # a few more seconds of frames: the plain client's handshake has been tried and
                # refused (logged by the camera), and it still has nothing
                until = time.monotonic() + 3.0
                while time.monotonic() < until:
                    node.recv(timeout_ms=100)
                    assert plain.recv(timeout_ms=0) is None
                assert plain.stats == {}
        assert proc.poll() is None
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "CurveZMQ on: identity camera-front" in err
    assert "handshake failed" in err       # the plain subscriber, refused and logged by the camera


@pytest.mark.integration
@pytest.mark.slow
def test_secure_launch_file_delivers_detections_to_the_launcher_and_nothing_to_a_keyless_client(tmp_path):
    """launch/sim_secure.yaml end to end: the launcher creates the keys, every process runs with
    CurveZMQ, the launcher's summary (tools key) receives detections, a client without keys none."""
    import subprocess
    import sys

    from perception.config import FUSION_ENDPOINT
    from perception.launch import load_launch

    keys = tmp_path / "keys"
    assert load_launch("launch/sim_secure.yaml", {"keys": str(keys)}).keys == str(keys)
    launcher = subprocess.Popen([sys.executable, "-m", "perception.cli", "launch", "launch/sim_secure.yaml",
                                 "--duration", "25", "--arg", f"keys={keys}", "--log-dir", str(tmp_path / "logs")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(10)
        with Subscriber(FUSION_ENDPOINT, ["detections"]) as keyless:   # this test process installed no keys
            got = keyless.recv(timeout_ms=5000)
        assert got is None
    finally:
        out, _ = launcher.communicate(timeout=90)
    assert launcher.returncode == 0, out
    line = next(ln for ln in out.splitlines() if "detection messages in" in ln)
    assert int(line.split("received ")[1].split()[0]) > 0, line
    secrets = list(keys.glob("*.key_secret"))
    assert secrets and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in secrets)
