"""The launcher (run by `perception launch [FILE]`, perception/commands/launch.py).

Starts every process a launch file declares (one process per job, as openpilot's manager
does), restarts one that dies with exponential backoff, stops all cleanly on Ctrl-C/SIGTERM
and prints a one-line summary per second read from the fusion node's own topics.

Launch file (YAML):
    name: sim
    monitor: tcp://127.0.0.1:5560        # fusion endpoint the summary line listens to
    restart: {initial_backoff_s: 0.5, max_backoff_s: 10, healthy_after_s: 30}
    arguments: {camera_rate: 10}         # defaults; `perception launch --arg camera_rate=20` overrides
    processes:
      - {name: cam_front, args: [camera, --name, front, --rate, "{camera_rate}"]}  # a `perception` verb
      - {name: tool, cmd: [/usr/bin/env, true]}                                    # or any command
"""
from __future__ import annotations

import logging
import os
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


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    command: list[str]
    nice: int = 0          # CPU priority offset (0-19): lower-priority helpers, e.g. simulated cameras


@dataclass(frozen=True)
class LaunchConfig:
    name: str
    processes: list[ProcessSpec]
    monitor: str | None = None
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    healthy_after_s: float = 30.0


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
        specs.append(ProcessSpec(str(p["name"]), command, nice))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise cfg.ConfigError(f"{path}: process names must be unique")
    restart = data.get("restart") or {}
    return LaunchConfig(name=str(data.get("name", path.stem)), processes=specs, monitor=data.get("monitor"),
                        initial_backoff_s=float(restart.get("initial_backoff_s", 0.5)),
                        max_backoff_s=float(restart.get("max_backoff_s", 10.0)),
                        healthy_after_s=float(restart.get("healthy_after_s", 30.0)))


@dataclass
class Managed:
    spec: ProcessSpec
    log_path: Path
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    backoff: float = 0.0
    restart_at: float | None = None
    log_file: object = field(default=None, repr=False)

    def start(self) -> None:
        self.log_file = open(self.log_path, "ab", buffering=0)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # Own process group: a Ctrl-C in the terminal reaches only the launcher, which stops children
        # in order. Same session as the launcher: Linux schedules a session as one autogroup, so a
        # child's nice value counts against its siblings (in sessions of their own it would not).
        group = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
        self.proc = subprocess.Popen(self.spec.command, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, **group)
        if self.spec.nice:
            try:
                os.setpriority(os.PRIO_PROCESS, self.proc.pid, self.spec.nice)
            except OSError as e:
                log.warning("%s: cannot set nice %d (%s)", self.spec.name, self.spec.nice, e)
        self.started = time.monotonic()
        self.restart_at = None

    def last_log_line(self) -> str:
        try:
            lines = self.log_path.read_bytes()[-4000:].decode(errors="replace").strip().splitlines()
            return lines[-1] if lines else ""
        except OSError:
            return ""


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

    def run(self, duration: float | None) -> int:
        summary = Summary(self.launch.monitor) if self.launch.monitor else None
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
            if summary is not None:
                summary.poll()
                log.info("%s", summary.closing_line(time.monotonic() - t0, t0_ns))
                summary.close()
        return 0

    def _watch(self) -> None:
        now = time.monotonic()
        for m in self.procs:
            if m.proc is not None and m.proc.poll() is not None:
                code = m.proc.returncode
                up = now - m.started
                m.backoff = self.launch.initial_backoff_s if up > self.launch.healthy_after_s or not m.backoff \
                    else min(m.backoff * 2, self.launch.max_backoff_s)
                m.restart_at = now + m.backoff
                m.proc = None
                m.log_file.close()
                log.warning("%s exited with code %s after %.1f s; restarting in %.1f s (last log line: %s)",
                            m.spec.name, code, up, m.backoff, m.last_log_line() or "-")
            elif m.proc is None and m.restart_at is not None and now >= m.restart_at:
                m.restarts += 1
                m.start()
                log.info("restarted %s (pid %d, restart %d)", m.spec.name, m.proc.pid, m.restarts)

    def stop_all(self, grace_s: float = 5.0) -> None:
        """SIGTERM every child, wait, then SIGKILL what is left."""
        live = [m for m in self.procs if m.proc is not None and m.proc.poll() is None]
        for m in live:
            try:
                os.killpg(m.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        for m in live:
            try:
                m.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s: killing it", m.spec.name, grace_s)
                os.killpg(m.proc.pid, signal.SIGKILL)
                m.proc.wait()
        for m in self.procs:
            if m.log_file is not None:
                m.log_file.close()
        if live:
            log.info("stopped %d processes", len(live))
