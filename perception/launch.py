"""The launcher (run by `perception launch [FILE]`, perception/commands/launch.py).

Starts every process a launch file declares (one process per job, as openpilot's manager
does), restarts one that dies with exponential backoff, stops all cleanly on Ctrl-C/SIGTERM
and prints a one-line summary per second read from the fusion node's own topics.

Supervision (docs/supervision.md):
- children die with the launcher: each is started with the Linux parent-death signal
  (prctl PR_SET_PDEATHSIG = SIGKILL), so even a SIGKILLed launcher leaves no child behind; where
  prctl is missing, `perception` verbs watch their parent themselves (lifecycle.watch_parent);
- give-up rule: `give_up_after` deaths in a row, each within `failed_start_s` of its start, and
  the launcher gives up on that process with one line (its last log lines); a required process
  (the default) then stops everything and the launcher exits 1, an optional one (`required:
  false`) stays down while the rest run on, and the launcher still exits 1 at the end;
- heartbeats: a process with `heartbeat: {endpoint, topic, timeout_s}` that has published on
  that topic since its start and then stays silent longer than timeout_s is restarted (SIGTERM,
  then SIGKILL after `stop_grace_s`). Restarts are counted by cause (exit, heartbeat).

Launch file (YAML):
    name: sim
    monitor: tcp://127.0.0.1:5560        # fusion endpoint the summary line listens to
    restart: {initial_backoff_s: 0.5, max_backoff_s: 10, healthy_after_s: 30,
              give_up_after: 5, failed_start_s: 10, stop_grace_s: 3}
    arguments: {camera_rate: 10}         # defaults; `perception launch --arg camera_rate=20` overrides
    processes:
      - {name: cam_front, args: [camera, --name, front, --rate, "{camera_rate}"],  # a `perception` verb
         heartbeat: {endpoint: "tcp://127.0.0.1:5550", topic: camera/front, timeout_s: 5}}
      - {name: tool, cmd: [/usr/bin/env, true], required: false}                   # or any command
      # respawn: false - never restarted once it exits (what `launch --record` gives its recorder)
"""
from __future__ import annotations

import ctypes
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from perception import config as cfg
from perception import topics

log = logging.getLogger("perception.launch")
_LOG_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[,.]\d+ ")   # the prefix of perception's log lines


EXIT_GAVE_UP = 1          # the launcher's exit code when it gave up on a process


@dataclass(frozen=True)
class Heartbeat:
    endpoint: str           # where the process publishes
    topic: str              # a topic it publishes regularly (unique to it)
    timeout_s: float        # silence longer than this, after a first message, restarts it


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    command: list[str]
    nice: int = 0          # CPU priority offset (0-19): lower-priority helpers, e.g. simulated cameras
    heartbeat: Heartbeat | None = None
    required: bool = True  # giving up on it stops the whole launch
    respawn: bool = True   # False: never restarted once it exits (a recorder: a restart would replace its file)


@dataclass(frozen=True)
class LaunchConfig:
    name: str
    processes: list[ProcessSpec]
    monitor: str | None = None
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    healthy_after_s: float = 30.0
    give_up_after: int = 5          # this many failed starts in a row: give up on the process
    failed_start_s: float = 10.0    # a death within this many seconds of its start is a failed start
    stop_grace_s: float = 3.0       # heartbeat restarts: SIGTERM, then SIGKILL after this long
    keys: str | None = None         # CurveZMQ keys directory: the launcher's own sockets join as the tools client


def _heartbeat(raw, values: dict[str, str], where: str) -> Heartbeat | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not {"endpoint", "topic"} <= set(raw) or set(raw) - {"endpoint", "topic",
                                                                                       "timeout_s"}:
        raise cfg.ConfigError(f"{where}: 'heartbeat' must be a mapping with 'endpoint', 'topic' and optionally "
                              f"'timeout_s', got {raw!r}")
    endpoint, topic = _substitute([str(raw["endpoint"]), str(raw["topic"])], values, where)
    try:
        timeout = float(raw.get("timeout_s", 5.0))
    except (TypeError, ValueError):
        timeout = -1.0
    if not timeout > 0:
        raise cfg.ConfigError(f"{where}: heartbeat 'timeout_s' must be a positive number, got {raw.get('timeout_s')!r}")
    return Heartbeat(endpoint, topic, timeout)


def _substitute(argv: list[str], values: dict[str, str], where: str) -> list[str]:
    out = []
    for a in argv:
        try:
            out.append(a.format_map(values))
        except KeyError as e:
            raise cfg.ConfigError(f"{where}: {a!r} names argument {e.args[0]!r}, which the launch file's "
                                  f"'arguments' does not declare (declared: {', '.join(values) or 'none'})") from None
        except (ValueError, IndexError) as e:
            raise cfg.ConfigError(f"{where}: {a!r} is not a valid argument template ({e})") from None
    return out


def load_launch(path: str | Path, overrides: dict[str, str] | None = None) -> LaunchConfig:
    """Read a launch file; `overrides` replace the defaults of its declared 'arguments'."""
    path = Path(path)
    data = cfg.read_yaml(path, "launch file")
    if not isinstance(data, dict) or not isinstance(data.get("processes"), list) or not data["processes"]:
        raise cfg.ConfigError(f"{path}: expected a mapping with a non-empty 'processes' list")
    declared = data.get("arguments") or {}
    if not isinstance(declared, dict):
        raise cfg.ConfigError(f"{path}: 'arguments' must be a mapping of name: default")
    values = {str(k): str(v) for k, v in declared.items()}
    for k, v in (overrides or {}).items():
        if k not in values:
            raise cfg.ConfigError(f"--arg {k}={v}: {path} declares no argument {k!r} "
                                  f"(declared: {', '.join(values) or 'none'})")
        values[k] = v
    specs = []
    for i, p in enumerate(data["processes"]):
        where = f"{path}: processes[{i}]"
        if not isinstance(p, dict) or "name" not in p or (("args" in p) == ("cmd" in p)):
            raise cfg.ConfigError(f"{where}: needs 'name' and exactly one of 'args' (perception verb) or 'cmd'")
        argv = p.get("args") or p.get("cmd")
        if not isinstance(argv, list) or not argv:
            raise cfg.ConfigError(f"{where}: 'args'/'cmd' must be a non-empty list")
        argv = _substitute([str(a) for a in argv], values, where)
        command = [sys.executable, "-m", "perception.cli", *argv] if "args" in p else argv
        nice = p.get("nice", 0)
        if not isinstance(nice, int) or not 0 <= nice <= 19:
            raise cfg.ConfigError(f"{where}: 'nice' must be an integer 0-19, got {nice!r}")
        required = p.get("required", True)
        if not isinstance(required, bool):
            raise cfg.ConfigError(f"{where}: 'required' must be true or false, got {required!r}")
        respawn = p.get("respawn", True)
        if not isinstance(respawn, bool):
            raise cfg.ConfigError(f"{where}: 'respawn' must be true or false, got {respawn!r}")
        specs.append(ProcessSpec(str(p["name"]), command, nice, _heartbeat(p.get("heartbeat"), values, where),
                                 required, respawn))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise cfg.ConfigError(f"{path}: process names must be unique")
    beats = [s.heartbeat.topic for s in specs if s.heartbeat is not None]
    if len(set(beats)) != len(beats):
        raise cfg.ConfigError(f"{path}: heartbeat topics must be unique (one process each)")
    restart = data.get("restart") or {}
    if not isinstance(restart, dict):
        raise cfg.ConfigError(f"{path}: 'restart' must be a mapping")
    give_up = restart.get("give_up_after", 5)
    if not isinstance(give_up, int) or give_up < 1:
        raise cfg.ConfigError(f"{path}: restart.give_up_after must be an integer >= 1, got {give_up!r}")
    keys = data.get("keys")
    if keys is not None:
        keys = str(Path(_substitute([str(keys)], values, f"{path}: keys")[0]).expanduser())
    return LaunchConfig(name=str(data.get("name", path.stem)), processes=specs, monitor=data.get("monitor"),
                        keys=keys,
                        initial_backoff_s=float(restart.get("initial_backoff_s", 0.5)),
                        max_backoff_s=float(restart.get("max_backoff_s", 10.0)),
                        healthy_after_s=float(restart.get("healthy_after_s", 30.0)),
                        give_up_after=give_up,
                        failed_start_s=float(restart.get("failed_start_s", 10.0)),
                        stop_grace_s=float(restart.get("stop_grace_s", 3.0)))


# --------------------------------------------------------------------------- parent-death signal

PR_SET_PDEATHSIG = 1


def _load_prctl():
    """libc's prctl, looked up in the launcher (not in the forked child), or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    fn.restype = ctypes.c_int
    return fn


_prctl = _load_prctl()


def _child_setup(launcher_pid: int):
    """The preexec_fn of every child: own process group, and SIGKILL when the launcher dies.

    The parent-death signal fires when the thread that forked the child ends: children are
    started only from the launcher's main thread. Race: the launcher may die between fork and
    prctl; then the child is already re-parented and exits at once."""
    prctl = _prctl

    def setup() -> None:
        os.setpgid(0, 0)
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != launcher_pid:
                os._exit(1)
    return setup


@dataclass
class Managed:
    spec: ProcessSpec
    log_path: Path
    proc: subprocess.Popen | None = None
    started: float = 0.0
    started_ns: int = 0
    restarts: int = 0
    restarts_by_cause: dict[str, int] = field(default_factory=dict)
    backoff: float = 0.0
    restart_at: float | None = None
    failed_starts: int = 0                 # deaths in a row within failed_start_s of their start
    gave_up: bool = False
    kill_at: float | None = None           # heartbeat restart: SIGKILL at this time if still alive
    stop_cause: str | None = None          # why the launcher stopped it ("heartbeat"), None: it died
    restart_cause: str = "exit"            # counted when the restart happens
    log_file: object = field(default=None, repr=False)

    def start(self) -> None:
        self.log_file = open(self.log_path, "ab", buffering=0)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if _prctl is None:         # no parent-death signal here: perception verbs watch their parent
            env["PERCEPTION_WATCH_PARENT"] = str(os.getpid())
        # Own process group: a Ctrl-C in the terminal reaches only the launcher, which stops children
        # in order. Same session as the launcher: Linux schedules a session as one autogroup, so a
        # child's nice value counts against its siblings (in sessions of their own it would not).
        self.proc = subprocess.Popen(self.spec.command, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, preexec_fn=_child_setup(os.getpid()))
        if self.spec.nice:
            try:
                os.setpriority(os.PRIO_PROCESS, self.proc.pid, self.spec.nice)
            except OSError as e:
                log.warning("%s: cannot set nice %d (%s)", self.spec.name, self.spec.nice, e)
        self.started = time.monotonic()
        self.started_ns = time.time_ns()
        self.restart_at = None
        self.kill_at = None
        self.stop_cause = None

    def last_log_lines(self, n: int = 1) -> str:
        """The last n distinct non-empty lines of its log (log-time prefix dropped), joined with ' | ':
        one line for the console, a repeated error said once."""
        try:
            text = self.log_path.read_bytes()[-8000:].decode(errors="replace")
        except OSError:
            return ""
        lines = [_LOG_TIME.sub("", ln.strip()) for ln in text.splitlines() if ln.strip()]
        return " | ".join(list(dict.fromkeys(lines[-n:])))

    def last_log_line(self) -> str:
        return self.last_log_lines(1)

    def count_restart(self, cause: str) -> None:
        self.restarts += 1
        self.restarts_by_cause[cause] = self.restarts_by_cause.get(cause, 0) + 1


class Heartbeats:
    """One Subscriber over every heartbeat endpoint; `last_ns(topic)` is the receipt time of the
    newest message of that topic (0: none yet). Queued messages are dropped as they come."""

    def __init__(self, specs: list[ProcessSpec]):
        from perception.transport import Subscriber

        beats = [s.heartbeat for s in specs if s.heartbeat is not None]
        self.sub = None
        if beats:
            endpoints = list(dict.fromkeys(b.endpoint for b in beats))
            self.sub = Subscriber(endpoints, [b.topic for b in beats], rcvhwm=1)

    def poll(self) -> dict[str, int]:
        """topic -> receipt time (time.time_ns) of its newest message; absent: none yet."""
        if self.sub is None:
            return {}
        self.sub.drain_latest(timeout_ms=0)        # release the buffers (frames can be large)
        return {t: st.last_recv_ns for t, st in self.sub.stats.items()}

    def close(self) -> None:
        if self.sub is not None:
            self.sub.close()


class Summary:
    """Reads detections and status from the fusion node and formats one line per second."""

    def __init__(self, endpoint: str, sub=None):
        from perception.transport import Subscriber

        # sub: anything with recv(timeout_ms) and close() (tests pass a fake)
        self.sub = sub if sub is not None else Subscriber(endpoint, list(topics.FUSION_TOPICS))
        self.latencies: list[float] = []
        self.detections = 0
        self.objects = 0
        self.missing: set[str] = set()
        self.status = None
        self.total_detections = 0
        self.first_detection_ns: int | None = None
        self.first_backend: str | None = None
        self.switches_seen = 0
        self.backend_changes: list[tuple[int, str, str]] = []   # (recv_ns, from, to) seen in detections
        self.all_latencies: deque[float] = deque(maxlen=1_000_000)   # for the run's closing line

    def poll(self) -> None:
        while (rx := self.sub.recv(timeout_ms=0)) is not None:
            if rx.topic == topics.DETECTIONS:
                if self.first_detection_ns is None:
                    self.first_detection_ns = rx.recv_ns
                self.detections += 1
                self.total_detections += 1
                self.objects = len(rx.msg.objects)
                last = self.backend_changes[-1][2] if self.backend_changes else self.first_backend
                if last is None:
                    self.first_backend = rx.msg.backend
                elif rx.msg.backend != last:
                    self.backend_changes.append((rx.recv_ns, last, rx.msg.backend))
                self.missing |= set(rx.msg.missing_cameras)
                self.latencies.append((rx.recv_ns - rx.msg.stamp_ns) / 1e6)
                self.all_latencies.append(self.latencies[-1])
            else:
                self.status = rx.msg

    def closing_line(self, seconds: float, t0_ns: int) -> str:
        """What the whole run delivered: messages, first-detection time, latency percentiles, drops."""
        import numpy as np

        parts = [f"received {self.total_detections} detection messages in {seconds:.1f} s"]
        if self.first_detection_ns is None:
            return parts[0] + " (no detections)"
        parts.append(f"first {(self.first_detection_ns - t0_ns) / 1e9:.1f} s after launch")
        lat = np.asarray(self.all_latencies)
        parts.append(f"capture-to-delivery latency p50 {np.percentile(lat, 50):.0f} ms, p99 {np.percentile(lat, 99):.0f} "
                     f"ms, max {lat.max():.0f} ms")
        if self.status is not None:
            s = self.status
            parts.append(f"sets full/partial {s.sync_complete}/{s.sync_partial}, dropped incomplete {s.sync_dropped}, "
                         f"dropped for overload {s.sets_dropped_overload}, frame drops "
                         f"{sum(c.dropped for c in s.cameras)}, backend {s.backend}")
        parts += self.switch_summary(t0_ns)
        return "; ".join(parts)

    def switch_summary(self, t0_ns: int) -> list[str]:
        """Each engine switch of the run with its time and reason, from the node's status; a switch
        the detections show but no status reported yet (it came after the last status) is named too."""
        reported = list(self.status.engine_switches) if self.status is not None else []
        out = [f"engine switch at {(sw.stamp_ns - t0_ns) / 1e9:.1f} s: {sw.from_backend} -> {sw.to_backend} ({sw.reason})"
               for sw in reported]
        for recv_ns, old, new in self.backend_changes[len(reported):]:
            out.append(f"engine switch by {(recv_ns - t0_ns) / 1e9:.1f} s: {old} -> {new} (seen in the detections; "
                       "the node's status had not reported it yet)")
        return out

    def new_switches(self) -> list:
        """Engine switches the node reported since the last call (its status lists all of them)."""
        if self.status is None:
            return []
        switches = list(self.status.engine_switches)
        new, self.switches_seen = switches[self.switches_seen:], len(switches)
        return new

    def line(self, elapsed: float, restarts: int, period: float) -> str:
        import numpy as np

        lat = f"{np.median(self.latencies):5.0f} ms" if self.latencies else "    - ms"
        parts = [f"[{elapsed:6.1f}s]", f"detections {self.detections / period:4.1f} Hz", f"latency {lat}",
                 f"objects {self.objects:2d}"]
        if self.status is not None:
            s = self.status
            dropped = sum(c.dropped for c in s.cameras)
            rejected = sum(c.rejected for c in s.cameras)
            parts += [f"sets {s.sync_complete}/{s.sync_partial}/{s.sync_dropped}/{s.sets_dropped_overload} "
                      "(full/partial/incomplete dropped/overload dropped)",
                      f"frame drops {dropped}", f"rejected {rejected}", f"backend {s.backend}"]
            if s.online_score_name:
                parts.append(f"{s.online_score_name} {s.online_score:.2f}")
        if self.missing:
            parts.append(f"missing {','.join(sorted(self.missing))}")
        parts.append(f"restarts {restarts}")
        self.detections, self.latencies, self.missing = 0, [], set()
        return "  ".join(parts)

    def close(self) -> None:
        self.sub.close()


class Launcher:
    def __init__(self, launch: LaunchConfig, log_dir: Path, quiet: bool = False):
        self.launch = launch
        log_dir.mkdir(parents=True, exist_ok=True)
        self.procs = [Managed(s, log_dir / f"{s.name}.log") for s in launch.processes]
        self.quiet = quiet
        self.stopping = False
        self.gave_up: list[str] = []

    def restart_counts(self) -> dict[str, int]:
        """Restarts of all processes by cause: exit (it died), heartbeat (it went silent)."""
        out: dict[str, int] = {}
        for m in self.procs:
            for cause, n in m.restarts_by_cause.items():
                out[cause] = out.get(cause, 0) + n
        return out

    def run(self, duration: float | None) -> int:
        if self.launch.keys:
            # security on: create the rig's keys if missing (as the processes would) and make the
            # summary and heartbeat subscribers connect as the allowed "tools" client
            from perception import security

            security.ensure_keys(self.launch.keys)
            security.install(self.launch.keys, security.TOOLS)
        summary = Summary(self.launch.monitor) if self.launch.monitor else None
        self.heartbeats = Heartbeats(self.launch.processes)
        for m in self.procs:
            m.start()
            log.info("started %-16s pid %-7d log %s", m.spec.name, m.proc.pid, m.log_path)
        t0 = time.monotonic()
        t0_ns = time.time_ns()
        next_line = t0 + 1.0
        try:
            while not self.stopping and (duration is None or time.monotonic() - t0 < duration):
                self._watch()
                if summary is not None:
                    had_first = summary.first_detection_ns is not None
                    summary.poll()
                    if not had_first and summary.first_detection_ns is not None:
                        log.info("first detections %.1f s after launch", (summary.first_detection_ns - t0_ns) / 1e9)
                    for sw in summary.new_switches():
                        log.info("engine switch %.1f s after launch: %s -> %s (%s)", (sw.stamp_ns - t0_ns) / 1e9,
                                 sw.from_backend, sw.to_backend, sw.reason)
                now = time.monotonic()
                if now >= next_line:
                    if summary is not None and not self.quiet:
                        print(summary.line(now - t0, sum(m.restarts for m in self.procs), now - next_line + 1.0),
                              flush=True)
                    next_line = now + 1.0
                time.sleep(0.05)
        finally:
            self.stop_all()
            self.heartbeats.close()
            if summary is not None:
                summary.poll()
                log.info("%s", summary.closing_line(time.monotonic() - t0, t0_ns))
                summary.close()
            counts = self.restart_counts()
            log.info("restarts: %d (%s)%s", sum(counts.values()),
                     ", ".join(f"{c} {n}" for c, n in sorted(counts.items())) or "none",
                     f"; gave up on {', '.join(self.gave_up)}" if self.gave_up else "")
        return EXIT_GAVE_UP if self.gave_up else 0

    def _watch(self) -> None:
        now = time.monotonic()
        beats = self.heartbeats.poll()
        for m in self.procs:
            if m.proc is not None and m.proc.poll() is not None:
                self._on_exit(m, now)
            elif m.proc is not None:
                self._check_heartbeat(m, now, beats)
            elif m.restart_at is not None and now >= m.restart_at:
                m.count_restart(m.restart_cause)
                m.start()
                log.info("restarted %s (pid %d, restart %d)", m.spec.name, m.proc.pid, m.restarts)

    def _on_exit(self, m: Managed, now: float) -> None:
        code = m.proc.returncode
        up = now - m.started
        m.proc = None
        m.log_file.close()
        cause = m.stop_cause or "exit"
        if not m.spec.respawn:
            level = logging.INFO if code == 0 else logging.ERROR
            log.log(level, "%s exited with code %s after %.1f s; not restarted (respawn: false)%s", m.spec.name, code, up,
                    "" if code == 0 else f": {m.last_log_lines(3) or 'no output'}")
            if code != 0:
                self.gave_up.append(m.spec.name)
                if m.spec.required:
                    log.error("%s is required: stopping everything", m.spec.name)
                    self.stopping = True
            return
        if cause == "exit" and up < self.launch.failed_start_s:
            m.failed_starts += 1
        elif cause == "exit":
            m.failed_starts = 0
        if m.failed_starts >= self.launch.give_up_after:
            m.gave_up = True
            self.gave_up.append(m.spec.name)
            log.error("%s: giving up after %d failed starts in a row (exit code %s, each within %.0f s of its "
                      "start): %s", m.spec.name, m.failed_starts, code, self.launch.failed_start_s,
                      m.last_log_lines(3) or "no output")
            if m.spec.required:
                log.error("%s is required: stopping everything", m.spec.name)
                self.stopping = True
            return
        m.backoff = self.launch.initial_backoff_s if up > self.launch.healthy_after_s or not m.backoff \
            else min(m.backoff * 2, self.launch.max_backoff_s)
        m.restart_at = now + m.backoff
        m.restart_cause = cause
        if cause == "exit":
            log.warning("%s exited with code %s after %.1f s; restarting in %.1f s (last log line: %s)",
                        m.spec.name, code, up, m.backoff, m.last_log_line() or "-")

    def _check_heartbeat(self, m: Managed, now: float, beats: dict[str, int]) -> None:
        hb = m.spec.heartbeat
        if m.kill_at is not None:
            if now >= m.kill_at:
                log.warning("%s did not stop within %.1f s of SIGTERM: killing it", m.spec.name,
                            self.launch.stop_grace_s)
                _signal_group(m.proc, signal.SIGKILL)
                m.kill_at = now + 3600          # once
            return
        if hb is None:
            return
        last = beats.get(hb.topic, 0)
        if last <= m.started_ns:
            return                              # nothing since its start: still starting up
        silent = (time.time_ns() - last) / 1e9
        if silent > hb.timeout_s:
            log.warning("%s: no heartbeat on %s for %.1f s (timeout %.1f s): restarting it (pid %d)",
                        m.spec.name, hb.topic, silent, hb.timeout_s, m.proc.pid)
            m.stop_cause = "heartbeat"
            _signal_group(m.proc, signal.SIGTERM)
            _signal_group(m.proc, signal.SIGCONT)     # a stopped process gets its SIGTERM now
            m.kill_at = now + self.launch.stop_grace_s

    def stop_all(self, grace_s: float = 5.0) -> None:
        """SIGTERM every child, wait, then SIGKILL what is left."""
        live = [m for m in self.procs if m.proc is not None and m.proc.poll() is None]
        for m in live:
            _signal_group(m.proc, signal.SIGTERM)
            _signal_group(m.proc, signal.SIGCONT)
        deadline = time.monotonic() + grace_s
        for m in live:
            try:
                m.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s: killing it", m.spec.name, grace_s)
                _signal_group(m.proc, signal.SIGKILL)
                m.proc.wait()
        for m in self.procs:
            if m.log_file is not None:
                m.log_file.close()
        if live:
            log.info("stopped %d processes", len(live))


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
