"""CurveZMQ encryption and authentication of every perception socket (docs/security.md).

A keys directory (made by `perception keys`) holds one key pair per identity and two lists:

    DIR/node.key, DIR/node.key_secret          the fusion node (server of detections/status,
                                               client of the cameras)
    DIR/camera-<name>.key, ...key_secret       each camera of the rig (a server only)
    DIR/tools.key, DIR/tools.key_secret        echo, hz, the launcher's summary (clients only)
    DIR/allowed/<identity>.key                 public keys of the clients every server accepts
    DIR/endpoints.yaml                         endpoint -> identity of the server bound there

Both directions are checked on every connection:
- a server (every binding socket: a camera, the node's publisher) runs a ZAP authenticator that
  accepts only clients whose public key is in DIR/allowed; a refusal is counted
  (``Curve.stats()["refused"]``, ``transport.security_stats()``) and logged, rate-limited;
- a client (every connecting socket) gives, per endpoint, the public key of the server that must
  be bound there (DIR/endpoints.yaml). A process without that server's secret key cannot finish
  the CurveZMQ handshake, so a rogue publisher on a camera's port never delivers a frame.

Secret key files are written 0600 in a 0700 directory. The files use pyzmq's certificate format
(``zmq.auth.load_certificate`` reads them).
"""
from __future__ import annotations

import datetime
import logging
import os
import threading
import time
from pathlib import Path

import yaml
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from perception import transport

log = logging.getLogger(__name__)

__all__ = ["KEYS_ENV", "DEFAULT_KEYS_DIR", "NODE", "TOOLS", "camera_identity", "create_keys", "Curve",
           "install", "load_curve", "keys_dir_from", "SecurityError", "ALLOWED_DIR", "ENDPOINTS_FILE"]

KEYS_ENV = transport.KEYS_ENV
DEFAULT_KEYS_DIR = Path("~/.config/perception/keys")
NODE = "node"
TOOLS = "tools"
ALLOWED_DIR = "allowed"
ENDPOINTS_FILE = "endpoints.yaml"
CLIENTS = (NODE, TOOLS)        # identities that connect, hence the default allow-list
_LOG_EVERY_S = 5.0
ZAP_DOMAIN = "perception"     # the ZAP domain of every server socket and of its allow-list


class SecurityError(ValueError):
    """Keys missing, unreadable or not matching the configuration."""


def camera_identity(camera_name: str) -> str:
    return f"camera-{camera_name}"


def keys_dir_from(value: str | None) -> Path | None:
    """The keys directory given by an option value, else by $PERCEPTION_KEYS, else None (off)."""
    value = value or os.environ.get(KEYS_ENV) or None
    return None if value is None else Path(value).expanduser()


# --------------------------------------------------------------------------- key files

def _write_private(path: Path, text: str, mode: int) -> None:
    """Write a file created with `mode` (never readable by others, even for a moment)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _cert_text(public: bytes, secret: bytes | None) -> str:
    kind = "**Secret** Certificate\n#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions." \
        if secret is not None else "Public Certificate\n#   Exchange securely, or use a secure mechanism to verify the contents"
    lines = [f"#   ****  Generated on {datetime.datetime.now():%Y-%m-%d %H:%M:%S} by perception keys  ****",
             f"#   ZeroMQ CURVE {kind}", "", "metadata", "curve",
             f'    public-key = "{public.decode("ascii")}"']
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode("ascii")}"')
    return "\n".join(lines) + "\n"


def create_key_pair(directory: Path, identity: str, *, force: bool = False) -> bool:
    """DIR/<identity>.key (public, 0644) and DIR/<identity>.key_secret (0600); False if it existed."""
    public_path, secret_path = directory / f"{identity}.key", directory / f"{identity}.key_secret"
    if secret_path.exists() and public_path.exists() and not force:
        return False
    public, secret = zmq.curve_keypair()
    _write_private(secret_path, _cert_text(public, secret), 0o600)
    _write_private(public_path, _cert_text(public, None), 0o644)
    return True


def create_keys(directory: str | Path, camera_names: list[str], endpoints: dict[str, str], *,
                clients: tuple[str, ...] = CLIENTS, force: bool = False) -> list[str]:
    """Key pairs for the node, each camera and the tools, the allow-list (public keys of
    `clients`) and endpoints.yaml (`endpoints`: endpoint -> server identity). Existing key pairs
    are kept unless `force`. Returns the identities whose key pair was created now."""
    d = Path(directory).expanduser()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)
    created = []
    for identity in [NODE, TOOLS, *(camera_identity(n) for n in camera_names)]:
        if create_key_pair(d, identity, force=force):
            created.append(identity)
    allowed = d / ALLOWED_DIR
    allowed.mkdir(exist_ok=True, mode=0o755)
    for identity in clients:
        public, _ = zmq.auth.load_certificate(d / f"{identity}.key")
        _write_private(allowed / f"{identity}.key", _cert_text(public, None), 0o644)
    text = ("# endpoint -> identity of the server bound there: a client connecting to the endpoint\n"
            "# requires that server's key (perception keys; docs/security.md). Add your own endpoints.\n")
    text += yaml.safe_dump(dict(sorted(endpoints.items())), default_flow_style=False)
    _write_private(d / ENDPOINTS_FILE, text, 0o644)
    return created


def _public_key(directory: Path, identity: str) -> bytes:
    path = directory / f"{identity}.key"
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise SecurityError(f"cannot read public key {path}: {e} (create keys with `perception keys --dir "
                            f"{directory}`)") from None
    return public


def _key_pair(directory: Path, identity: str) -> tuple[bytes, bytes]:
    path = directory / f"{identity}.key_secret"
    try:
        mode = path.stat().st_mode & 0o777
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise SecurityError(f"cannot read secret key {path}: {e} (create keys with `perception keys --dir "
                            f"{directory}`)") from None
    if mode & 0o077:
        raise SecurityError(f"secret key {path} is readable by others (mode {mode:o}); chmod 600 it")
    if secret is None:
        raise SecurityError(f"{path} holds no secret key")
    return public, secret


# --------------------------------------------------------------------------- authenticator

class CountingAuthenticator(ThreadAuthenticator):
    """pyzmq's ZAP handler, counting and logging (rate-limited) every refusal."""

    def __init__(self, context: zmq.Context, stats: dict[str, int], lock: threading.Lock):
        super().__init__(context)
        self._stats = stats
        self._lock = lock
        self._request: list[bytes] = []
        self._last_log = -_LOG_EVERY_S

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self._request = msg
        await super().handle_zap_message(msg)

    def _send_zap_reply(self, request_id: bytes, status_code: bytes, status_text: bytes,
                        user_id: str = "anonymous") -> None:
        super()._send_zap_reply(request_id, status_code, status_text, user_id)
        ok = status_code == b"200"
        with self._lock:
            self._stats["accepted" if ok else "refused_by_allow_list"] += 1
            refused = self._stats["refused_by_allow_list"]
        if not ok:
            now = time.monotonic()
            if now - self._last_log >= _LOG_EVERY_S:
                self._last_log = now
                msg = self._request
                address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else "?"
                key = z85.encode(msg[6]).decode() if len(msg) > 6 and len(msg[6]) == 32 else "?"
                log.warning("refused a connection from %s (client key %s): %s (%d refused so far)",
                            address, key, status_text.decode("utf-8", "replace"), refused)


# --------------------------------------------------------------------------- the hook

class Curve:
    """The transport security hook of one process: its key pair, the allow-list its servers
    enforce and the server key a client requires per endpoint. Install with ``install()``."""

    def __init__(self, identity: str, public: bytes, secret: bytes, *, allowed_dir: Path | None,
                 server_keys: dict[str, bytes]):
        self.identity = identity
        self.public = public
        self.secret = secret
        self.allowed_dir = allowed_dir
        self.server_keys = dict(server_keys)
        self._lock = threading.Lock()
        # refused: failed handshakes on any socket of this process (a client without a key or with
        #   one not allowed, a server without the expected secret key); refused_by_allow_list: the
        #   ZAP part of it (key not in the allow-list); accepted: clients the allow-list let in.
        self._stats: dict[str, int] = {"refused": 0, "refused_by_allow_list": 0, "accepted": 0, "handshakes": 0}
        self._last_log: dict[str, float] = {}
        self._authenticators: dict[int, CountingAuthenticator] = {}

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    def __call__(self, sock: zmq.Socket, server: bool) -> None:
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)
        if server:
            self._authenticator(sock.context)
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            # Fail closed: without a ZAP handler libzmq would let every CURVE client in.
            sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
            sock.setsockopt_string(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
        self._monitor(sock, "server" if server else "client")

    _FAILED: dict[int, str] = {int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL): "no detail",
                               int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL): "protocol",
                               int(zmq.EVENT_HANDSHAKE_FAILED_AUTH): "authentication"}

    def _monitor(self, sock: zmq.Socket, role: str) -> None:
        """Count the socket's failed handshakes (a peer without a key, a wrong key, a refusal)."""
        mon = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                      | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED
                                      | zmq.EVENT_MONITOR_STOPPED)
        threading.Thread(target=self._watch, args=(mon, role), daemon=True, name=f"perception-curve-{role}").start()

    def _watch(self, mon: zmq.Socket, role: str) -> None:
        try:
            while True:
                if not mon.poll(500):
                    if mon.closed:
                        return
                    continue
                event = recv_monitor_message(mon)
                kind = event["event"]
                if kind == zmq.EVENT_MONITOR_STOPPED:
                    return
                if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    with self._lock:
                        self._stats["handshakes"] += 1
                    continue
                with self._lock:
                    self._stats["refused"] += 1
                    refused = self._stats["refused"]
                endpoint = event["endpoint"].decode("utf-8", "replace")
                now = time.monotonic()
                if now - self._last_log.get(endpoint, -_LOG_EVERY_S) >= _LOG_EVERY_S:
                    self._last_log[endpoint] = now
                    log.warning("%s %s: CurveZMQ handshake failed (%s, errno %s): a peer without an allowed key "
                                "or the expected server key (%d refused so far)", role, endpoint,
                                self._FAILED.get(int(kind), str(kind)), event["value"], refused)
        except zmq.ZMQError:
            return
        finally:
            mon.close(linger=0)

    def before_connect(self, sock: zmq.Socket, endpoint: str) -> None:
        key = self.server_keys.get(endpoint) or self.server_keys.get(endpoint.replace("localhost", "127.0.0.1"))
        if key is None:
            raise SecurityError(f"no server key is known for this endpoint (add '{endpoint}: IDENTITY' to "
                                f"{ENDPOINTS_FILE} in the keys directory)")
        sock.setsockopt(zmq.CURVE_SERVERKEY, key)

    def _authenticator(self, context: zmq.Context) -> None:
        """One ZAP handler per context, started with its first server socket."""
        with self._lock:
            if id(context) in self._authenticators:
                return
            if self.allowed_dir is None:
                raise SecurityError(f"{self.identity}: a server needs an allow-list of client keys")
            auth = CountingAuthenticator(context, self._stats, self._lock)
            self._authenticators[id(context)] = auth
        auth.start()
        auth.configure_curve(domain=ZAP_DOMAIN, location=str(self.allowed_dir))

    def close(self) -> None:
        """Stop the authenticator threads (tests; a process just exits)."""
        with self._lock:
            auths, self._authenticators = list(self._authenticators.values()), {}
        for a in auths:
            a.stop()


def load_curve(directory: str | Path, identity: str) -> Curve:
    """The hook for `identity` from a keys directory made by `perception keys`."""
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise SecurityError(f"keys directory {d} does not exist (create it with `perception keys --dir {d}`)")
    public, secret = _key_pair(d, identity)
    server_keys: dict[str, bytes] = {}
    path = d / ENDPOINTS_FILE
    if path.exists():
        try:
            mapping = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise SecurityError(f"cannot read {path}: {e}") from None
        if not isinstance(mapping, dict):
            raise SecurityError(f"{path}: expected a mapping of endpoint: identity")
        for endpoint, server in mapping.items():
            server_keys[str(endpoint)] = _public_key(d, str(server))
    allowed = d / ALLOWED_DIR
    return Curve(identity, public, secret, allowed_dir=allowed if allowed.is_dir() else None,
                 server_keys=server_keys)


def install(directory: str | Path | None, identity: str) -> Curve | None:
    """Turn security on for every socket this process makes from now on (None: leave it off)."""
    if directory is None:
        return None
    curve = load_curve(directory, identity)
    transport.set_security_hook(curve, curve.before_connect)
    log.info("CurveZMQ on: identity %s, keys %s", identity, Path(directory).expanduser())
    return curve


def _install_tools(directory: str) -> None:
    install(directory, TOOLS)


# transport asks this when a socket is made with no hook while PERCEPTION_KEYS is set
transport.set_env_security(_install_tools)


def rig_keys(directory: str | Path, rig_path: str | Path | None = None, *, force: bool = False) -> list[str]:
    """create_keys() for the cameras of a rig and the default endpoints (perception keys)."""
    from perception import config

    rig = config.load_rig(rig_path or config.DEFAULT_RIG)
    names = [c.name for c in rig.cameras]
    endpoints = {config.camera_endpoint(i): camera_identity(n) for i, n in enumerate(names)}
    endpoints[config.FUSION_ENDPOINT] = NODE
    return create_keys(directory, names, endpoints, force=force)


def ensure_keys(directory: str | Path, rig_path: str | Path | None = None) -> None:
    """Create the rig's keys unless the directory has them; safe when several processes start
    together (a file lock: one creates, the others wait and then load)."""
    import fcntl

    d = Path(directory).expanduser()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(d / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (d / ENDPOINTS_FILE).exists():
            rig_keys(d, rig_path)


def max_message_size(rig_path: str | Path | None = None, margin: int = 64 * 1024) -> int:
    """The largest message part a subscriber of this rig needs: its largest BGR frame plus margin."""
    from perception import config

    rig = config.load_rig(rig_path or config.DEFAULT_RIG)
    return max(c.width * c.height * 3 for c in rig.cameras) + margin
