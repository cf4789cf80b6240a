"""A client for simulators and integration tests: feed a fusion node one frame set at a time and get
its Detections back (lock-step, like CARLA's synchronous mode), or stream frames and read Detections
as they come. docs/client.md has the API and the wire contract (for a client in another language).

    with Session.start(rig="rigs/nuscenes_6cam.yaml", backend="torch", threads=1) as s:
        r = s.step(images={"front": bgr, ...}, stamp_ns=sim_t_ns, truth=None, timeout_s=10.0)
        r.detections      # perception.v1.Detections of exactly this frame set, in simulator time

Session.start spawns `perception fuse` on endpoints nobody else uses (ipc sockets in a private
temporary directory, or loopback TCP ports the OS picks) and kills it on close; Session.connect
binds the camera endpoints a running node subscribes to. Either way the session publishes as the
rig's cameras: FrameHeader + raw pixel part per camera, exactly what a camera process sends.

Stamps: the node refuses frames stamped more than 2 s ahead of or 10 s behind its wall clock, and a
simulator's time runs at any rate (faster or slower than real time, from 0 or from any epoch). So
every frame set is stamped with the wall clock when it is sent (never less than the previous set's
stamp + 1 ms, so stamps keep rising), all cameras of a set with the same stamp, and the returned
Detections are translated back, as the replay player does for recordings: `stamp_ns` and every
`frames[].capture_end_ns` are the simulator stamp given to step()/publish(), `frames[].sequence`
is the step index of this session. Ground truth is republished on `sim/truth` with the wall stamp
(the node's online score pairs it), and handed back unchanged in StepResult.truth.

Missing cameras: a step may leave cameras out; the node then waits its partial-set timeout
(`--timeout-ms`: Session.start sets 1000 ms, the live pipeline's is 120 ms) and runs the set with
those cameras masked, as in the live pipeline, and Detections.missing_cameras names them. The longer
timeout is for determinism: on a starved CPU the node may take the frames of one set more than
120 ms apart and run it without the late ones (measured once in 120 steps on these 2 shared cores);
step() raises ClientError when the node ran a set without cameras that were sent.

Errors are explicit: ClientError for bad input (unknown camera, wrong image size or dtype, bad
calibration or truth: checked here before anything is sent), a node that died (its last log lines)
or never became ready; StepTimeout (a ClientError) when no Detections of the step came back in time
(with the node's latest rejection counters, which usually say why).
"""
from __future__ import annotations

import collections
import logging
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perception import config as pconfig
from perception.framelink import FrameLink, lists_any

log = logging.getLogger("perception.client")

__all__ = ["Session", "StepResult", "ClientError", "StepTimeout"]

MIN_STAMP_STEP_NS = 1_000_000        # consecutive frame sets are stamped at least this far apart
LOG_TAIL_LINES = 20                  # node log lines quoted in an error
MAX_PENDING = 1024                   # Detections kept for detections() (the oldest are dropped)
EXIT_TRANSPORT = 3                   # perception.lifecycle.EXIT_TRANSPORT: the node could not bind


class ClientError(RuntimeError):
    """The session cannot do what was asked; the message says what and why."""


class StepTimeout(ClientError):
    """No Detections of a step came back within its timeout."""


@dataclass
class StepResult:
    detections: object            # perception.v1.Detections of this frame set, in simulator time
    wait_s: float                 # seconds from publishing the set to receiving its Detections
    stamp_ns: int                 # the simulator stamp given to step()
    step: int                     # this session's step index (Detections.frames[].sequence)
    missing_cameras: list[str]    # rig cameras this step did not send (masked by the node)
    truth: object | None = None   # the perception.v1.GroundTruth given to step(), unchanged
    received: object | None = None   # the Detections as the node published them (wall-clock stamps)


def _free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    if path is None or not path.exists():
        return "(no log)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:]) or "(empty log)"


def _stop_process(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Session:
    """One client of one fusion node; see the module docstring. Use as a context manager (close()
    also stops a node this session started, on exceptions too)."""

    def __init__(self, rig: pconfig.RigConfig, camera_endpoints: list[str], node_endpoint: str):
        self.rig = rig
        self._link = FrameLink(rig.camera_names, list(camera_endpoints), node_endpoint)
        self.camera_endpoints = list(self._link.endpoints)
        self.node_endpoint = node_endpoint
        self._calibrations = {c.name: c for c in rig.cameras}
        self._calibration_protos = {c.name: c.to_proto() for c in rig.cameras}
        base = time.time_ns() // 1000      # wire sequences keep rising across sessions of one node
        self._wire_seq = {n: base for n in rig.camera_names}
        self._last_wall_ns = 0
        self.steps = 0                     # frame sets sent (step and publish)
        self.unmatched = 0                 # Detections received that list no frame of this session
        self._pending: collections.deque = collections.deque(maxlen=MAX_PENDING)
        self._proc: subprocess.Popen | None = None
        self._tmpdir: str | None = None
        self.node_log: Path | None = None
        self._finalizer: weakref.finalize | None = None
        self._closed = False

    # ------------------------------------------------------------------------- opening
    @classmethod
    def start(cls, rig: str | Path = pconfig.DEFAULT_RIG, backend: str = "torch", threads: int = 1,
              model: str | Path | None = None, *, transport: str = "ipc", score_threshold: float | None = None,
              partial_timeout_ms: float | None = 1000.0, allow_random_init: bool = False,
              start_timeout_s: float = 120.0, node_args: tuple[str, ...] = ()) -> "Session":
        """Start `perception fuse` (this Python, this package) on private endpoints and wait until
        it subscribed to every camera and its first status arrived. transport "ipc" (sockets in a
        temporary directory) or "tcp" (loopback ports the OS picks). The node's log is a file
        (session.node_log); a node that exits during start is a ClientError quoting it."""
        if transport not in ("ipc", "tcp"):
            raise ClientError(f"transport must be 'ipc' or 'tcp', got {transport!r}")
        if not (isinstance(threads, int) and threads >= 1):
            raise ClientError(f"threads must be an integer >= 1, got {threads!r}")
        try:
            rig_cfg = pconfig.load_rig(rig)
        except pconfig.ConfigError as e:
            raise ClientError(f"cannot start a session: {e}") from None
        model_dir = Path(model) if model is not None else pconfig.DEFAULT_MODEL_DIR
        tmpdir = tempfile.mkdtemp(prefix="perception-client-")
        last_error: ClientError | None = None
        for _attempt in range(3):          # a TCP port taken between picking and binding: pick again
            if transport == "ipc":
                cams = [f"ipc://{tmpdir}/cam{i}" for i in range(len(rig_cfg.cameras))]
                node = f"ipc://{tmpdir}/node"
            else:
                cams = ["tcp://127.0.0.1:*"] * len(rig_cfg.cameras)
                node = f"tcp://127.0.0.1:{_free_tcp_port()}"
            try:
                session = cls(rig_cfg, cams, node)
            except Exception as e:
                shutil.rmtree(tmpdir, ignore_errors=True)
                raise ClientError(f"cannot open the camera endpoints: {e}") from None
            session._tmpdir = tmpdir
            args = [sys.executable, "-m", "perception.cli", "fuse", "--rig", str(rig), "--model", str(model_dir),
                    "--backend", backend, "--threads", str(threads), "--camera-endpoints", *session.camera_endpoints,
                    "--publish", node]
            if score_threshold is not None:
                args += ["--score-threshold", str(score_threshold)]
            if partial_timeout_ms is not None:
                args += ["--timeout-ms", str(partial_timeout_ms)]
            if allow_random_init:
                args.append("--allow-random-init")
            args += list(node_args)
            try:
                session._spawn(args, threads)
                session._wait_ready(start_timeout_s)
                return session
            except ClientError as e:
                exit_code = session._proc.poll() if session._proc is not None else None
                session._close(remove_tmpdir=False)
                last_error = e
                if not (transport == "tcp" and exit_code == EXIT_TRANSPORT):
                    break
        shutil.rmtree(tmpdir, ignore_errors=True)
        assert last_error is not None
        raise last_error

    @classmethod
    def connect(cls, camera_endpoints: list[str], node_endpoint: str = pconfig.FUSION_ENDPOINT,
                rig: str | Path | pconfig.RigConfig = pconfig.DEFAULT_RIG, wait_s: float = 30.0) -> "Session":
        """A session with a node already running: bind `camera_endpoints` (one per rig camera, rig
        order: what the node's --camera-endpoints lists; nothing else may publish there) and connect
        to the node's `node_endpoint`; wait up to wait_s for its subscriptions and first status."""
        try:
            rig_cfg = rig if isinstance(rig, pconfig.RigConfig) else pconfig.load_rig(rig)
        except pconfig.ConfigError as e:
            raise ClientError(f"cannot connect: {e}") from None
        try:
            session = cls(rig_cfg, list(camera_endpoints), node_endpoint)
        except Exception as e:
            raise ClientError(f"cannot open the camera endpoints: {e}") from None
        try:
            session._wait_ready(wait_s)
        except BaseException:
            session.close()
            raise
        return session

    def _spawn(self, args: list[str], threads: int) -> None:
        assert self._tmpdir is not None
        package_parent = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), PERCEPTION_WATCH_PARENT=str(os.getpid()))
        env["PYTHONPATH"] = os.pathsep.join([package_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.node_log = Path(self._tmpdir) / "fuse.log"
        with open(self.node_log, "ab") as out:
            self._proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        # A session dropped without close() still stops its node.
        self._finalizer = weakref.finalize(self, _stop_process, self._proc)
        log.info("started fusion node pid %d: %s", self._proc.pid, " ".join(args[2:]))

    def _check_alive(self, doing: str) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise ClientError(f"the fusion node (pid {self._proc.pid}) exited with code {self._proc.returncode} "
                              f"{doing}; its last log lines:\n{_tail(self.node_log)}")

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        missing = self.rig.camera_names
        while True:
            self._check_alive("while starting")
            if missing:
                missing = self._link.unsubscribed(0.1)
            if not missing:
                self._stash(self._link.receive(0.1))
                if self._link.status_seen:
                    return
            if time.monotonic() > deadline:
                what = (f"no subscription to camera(s) {', '.join(missing)}" if missing
                        else f"no status from {self.node_endpoint}")
                hint = (f"; node log:\n{_tail(self.node_log)}" if self.node_log is not None else
                        ": is `perception fuse` running with --camera-endpoints " + " ".join(self.camera_endpoints)
                        + f" --publish {self.node_endpoint}?")
                raise ClientError(f"the fusion node was not ready within {timeout_s:g} s ({what}){hint}")

    # ------------------------------------------------------------------------- sending
    def _check_images(self, images: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not isinstance(images, Mapping) or not images:
            raise ClientError("images must be a non-empty mapping {camera name: HxWx3 uint8 BGR image}")
        out = {}
        for name, img in images.items():
            if name not in self._calibrations:
                raise ClientError(f"camera {name!r} is not in rig {self.rig.name!r} ({', '.join(self.rig.camera_names)})")
            cam = self._calibrations[name]
            expected = (cam.height, cam.width, 3)
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.shape not in (expected, expected[:2]):
                got = (f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__)
                raise ClientError(f"camera {name!r}: expected a uint8 image of shape {expected} (BGR, or {expected[:2]} "
                                  f"grey) as its calibration says, got {got}")
            out[name] = np.array(img, dtype=np.uint8, order="C", copy=True)   # sent without a copy: ours alone
        return out

    def _apply_calibrations(self, calibrations: Mapping[str, pconfig.CameraConfig] | None) -> None:
        if not calibrations:
            return
        for name, cam in calibrations.items():
            if name not in self._calibrations:
                raise ClientError(f"calibration for camera {name!r}, which is not in rig {self.rig.name!r}")
            if not isinstance(cam, pconfig.CameraConfig) or cam.name != name:
                raise ClientError(f"calibrations[{name!r}] must be a perception.config.CameraConfig named {name!r}")
            try:
                cam.validate(f"calibration of camera {name!r}")
            except pconfig.ConfigError as e:
                raise ClientError(str(e)) from None
        for name, cam in calibrations.items():
            if cam.calibration_id != self._calibrations[name].calibration_id:
                self._calibrations[name] = cam
                self._calibration_protos[name] = cam.to_proto()

    @staticmethod
    def _check_truth(truth):
        from perception.v1 import detections_pb2

        if truth is None:
            return None
        if not isinstance(truth, detections_pb2.GroundTruth):
            raise ClientError(f"truth must be a perception.v1.GroundTruth, got {type(truth).__name__}")
        for i, o in enumerate(truth.objects):
            if not all(math.isfinite(v) for v in (o.center.x, o.center.y, o.center.z, o.size.x, o.size.y, o.size.z, o.yaw)):
                raise ClientError(f"truth.objects[{i}] has a non-finite centre, size or yaw")
        return truth

    def _send(self, images, stamp_ns: int, calibrations, truth) -> tuple[set, list[str], int]:
        from perception.v1 import detections_pb2, frame_pb2

        if self._closed:
            raise ClientError("the session is closed")
        if isinstance(stamp_ns, bool) or not isinstance(stamp_ns, (int, np.integer)) or stamp_ns < 0:
            raise ClientError(f"stamp_ns must be a non-negative integer (simulator time in ns), got {stamp_ns!r}")
        stamp_ns = int(stamp_ns)
        self._apply_calibrations(calibrations)     # first: image sizes are checked against the new ones
        frames = self._check_images(images)
        truth = self._check_truth(truth)
        self._check_alive("before this step")
        wall = max(time.time_ns(), self._last_wall_ns + MIN_STAMP_STEP_NS)
        self._last_wall_ns = wall
        step = self.steps
        if truth is not None:
            t = detections_pb2.GroundTruth()
            t.CopyFrom(truth)
            t.stamp_ns = wall
            self._link.send_truth(t)
        keys = set()
        for name in self.rig.camera_names:        # rig order, as a rig's cameras would be triggered
            img = frames.get(name)
            if img is None:
                continue
            cam = self._calibrations[name]
            h = frame_pb2.FrameHeader(
                camera_name=name, sequence=self._wire_seq[name], capture_start_ns=wall, capture_end_ns=wall,
                width=cam.width, height=cam.height,
                encoding=frame_pb2.PIXEL_ENCODING_BGR8 if img.ndim == 3 else frame_pb2.PIXEL_ENCODING_MONO8,
                row_stride=img.strides[0], calibration_id=cam.calibration_id, source="client")
            self._wire_seq[name] += 1
            keys.add(self._link.send_frame(h, img, self._calibration_protos[name], sequence=step, stamp_ns=stamp_ns))
        self.steps += 1
        return keys, [n for n in self.rig.camera_names if n not in frames], step

    def step(self, images: Mapping[str, np.ndarray], stamp_ns: int, calibrations: Mapping[str, pconfig.CameraConfig] | None = None,
             truth=None, timeout_s: float = 10.0) -> StepResult:
        """Publish one frame set and wait for its Detections (lock-step). images: {camera: HxWx3
        uint8 BGR} of the current calibration's size (cameras left out are masked); stamp_ns:
        simulator time; calibrations: {camera: CameraConfig} replacing the rig's from this step on
        (sent once, when changed); truth: a perception.v1.GroundTruth republished on sim/truth.
        Detections of earlier publish() calls that arrive meanwhile are kept for detections()."""
        keys, missing, step = self._send(images, stamp_ns, calibrations, truth)
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        while True:
            for msg in self._link.receive(min(0.05, max(0.0, deadline - time.monotonic()))):
                if lists_any(msg, keys):
                    translated = self._link.sent.translate(msg)
                    dropped = sorted(set(msg.missing_cameras) - set(missing))
                    if dropped:
                        raise ClientError(f"the node ran step {step} without camera(s) {', '.join(dropped)}, which were sent: "
                                          f"they reached it after its partial-set timeout (an overloaded machine); start "
                                          f"the node with a longer one (Session.start(partial_timeout_ms=...), --timeout-ms)")
                    return StepResult(detections=translated, wait_s=time.monotonic() - t0, stamp_ns=int(stamp_ns),
                                      step=step, missing_cameras=missing, truth=truth, received=msg)
                self._stash([msg])
            self._check_alive(f"while waiting for the Detections of step {step}")
            if time.monotonic() >= deadline:
                raise StepTimeout(f"no Detections for step {step} (stamp {stamp_ns} ns, cameras "
                                  f"{', '.join(sorted(k[0] for k in keys))}) within {timeout_s:g} s from "
                                  f"{self.node_endpoint}; {self._status_hint()}")

    def publish(self, images: Mapping[str, np.ndarray], stamp_ns: int,
                calibrations: Mapping[str, pconfig.CameraConfig] | None = None, truth=None) -> int:
        """Publish one frame set without waiting (streaming); returns its step index. Its Detections
        come out of detections(). A node busy with an earlier set computes only the newest ready set,
        as in the live pipeline: publish faster than it runs and sets are dropped (counted in status)."""
        return self._send(images, stamp_ns, calibrations, truth)[2]

    # ------------------------------------------------------------------------- receiving
    def _stash(self, msgs: list) -> None:
        for msg in msgs:
            translated = self._link.sent.translate(msg)
            if translated is None:
                self.unmatched += 1
            else:
                self._pending.append(translated)

    def detections(self, timeout_s: float = 1.0) -> Iterator:
        """Detections of this session's frame sets as they arrive (simulator time); the iteration
        ends when none arrived for timeout_s. Detections of other senders' frames are skipped."""
        while True:
            while self._pending:
                yield self._pending.popleft()
            deadline = time.monotonic() + timeout_s
            while not self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._stash(self._link.receive(min(left, 0.1)))
                self._check_alive("while receiving detections")

    def drain(self) -> int:
        """Forget Detections not yet taken from detections(); how many there were."""
        self._stash(self._link.receive(0))
        n = len(self._pending)
        self._pending.clear()
        return n

    @property
    def status(self):
        """The newest perception.v1.NodeStatus received (about one per second), or None."""
        self._stash(self._link.receive(0))
        return self._link.last_status

    def _status_hint(self) -> str:
        st = self._link.last_status
        if st is None:
            return "no node status received"
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(st.rejected.items())) or "none"
        return f"node status: {st.message!r}, inputs rejected: {rejected}"

    @property
    def node_pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # ------------------------------------------------------------------------- closing
    def _close(self, remove_tmpdir: bool = True) -> None:
        if not self._closed:
            self._closed = True
            self._link.close()
        if self._proc is not None:
            _stop_process(self._proc)
            if self._finalizer is not None:
                self._finalizer.detach()
        if remove_tmpdir and self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def close(self) -> None:
        """Close the sockets and stop the node this session started (SIGTERM, then SIGKILL after 10 s)."""
        self._close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
