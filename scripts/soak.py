#!/usr/bin/env python
"""Soak test (not in CI): run `perception launch` for a while and watch memory, latency, drops
and restarts over time. Run it alone: it uses the launch file's fixed ports, and other load
on the machine shows up as latency and drops.

    python scripts/soak.py                      # 10 minutes of launch/sim.yaml
    python scripts/soak.py --minutes 2 --launch-arg camera_rate=20

Every --every seconds it samples the RSS of the launcher and of each of its processes (from
/proc, by the pids the launcher logs) and the fusion node's latest status (latency p50/p99,
drops, outputs); it also receives the detections and measures capture-to-receipt latency
itself. At the end it prints a table (memory per process at start and end and its growth, p99
latency in the first and last minute, drops, restarts by cause) and writes soak.json and
soak.png (memory and latency over time) to --out.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perception import topics  # noqa: E402
from perception.transport import Subscriber  # noqa: E402

STARTED = re.compile(r"(?:started|restarted) (\S+)\s+\(?pid (\d+)")


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds the process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


class LauncherLog:
    """Reads the launcher's log (stderr): pids of its processes by name, restarts, its last lines."""

    def __init__(self, stream, path: Path):
        self.pids: dict[str, int] = {}
        self.restarts: dict[str, int] = {}
        self.heartbeat_restarts = 0
        self.gave_up: list[str] = []
        self.lines: list[str] = []
        self._out = open(path, "w")
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self._out.write(line)
            self._out.flush()
            self.lines.append(line.rstrip())
            if m := STARTED.search(line):
                name, pid = m.group(1), int(m.group(2))
                self.pids[name] = pid
                if "restarted" in line:
                    self.restarts[name] = self.restarts.get(name, 0) + 1
            if "no heartbeat" in line:
                self.heartbeat_restarts += 1
            if "giving up" in line:
                self.gave_up.append(line)

    def join(self) -> None:
        self._thread.join(timeout=10)
        self._out.close()


def p(values, q) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def fmt(v, unit="", digits=0) -> str:
    return "-" if v is None else f"{v:.{digits}f}{unit}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=30.0,
                    help="memory 'start' is the first sample after this many seconds (models load, caches fill)")
    ap.add_argument("--launch", default=str(ROOT / "launch" / "sim.yaml"), help="launch file")
    ap.add_argument("--launch-arg", action="append", default=[], metavar="NAME=VALUE",
                    help="passed on as `perception launch --arg NAME=VALUE`")
    ap.add_argument("--monitor", default="tcp://127.0.0.1:5560", help="fusion node endpoint")
    ap.add_argument("--out", default=None, help="output folder (default out/soak/<time>)")
    args = ap.parse_args()

    out = Path(args.out) if args.out else ROOT / "out" / "soak" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    duration = args.minutes * 60
    cmd = [sys.executable, "-m", "perception.cli", "launch", args.launch, "--quiet", "--log-dir", str(out / "logs"),
           "--duration", str(duration)]
    for a in args.launch_arg:
        cmd += ["--arg", a]
    sub = Subscriber(args.monitor, list(topics.FUSION_TOPICS), rcvhwm=64)
    t0 = time.monotonic()
    launcher = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    llog = LauncherLog(launcher.stderr, out / "launcher.log")
    print(f"soak: {' '.join(cmd)}\n      {args.minutes:g} min, a sample every {args.every:g} s, output in {out}",
          flush=True)

    samples: list[dict] = []
    detections: list[tuple[float, float]] = []          # (t since start, capture-to-receipt latency ms)
    status = None
    next_sample = t0 + args.every
    stopped_by_user = False

    def on_signal(_s, _f):
        nonlocal stopped_by_user
        stopped_by_user = True

    signal.signal(signal.SIGINT, on_signal)
    try:
        while launcher.poll() is None and not stopped_by_user:
            rx = sub.recv(timeout_ms=200)
            now = time.monotonic()
            if rx is not None:
                if rx.topic == topics.DETECTIONS:
                    detections.append((now - t0, (rx.recv_ns - rx.msg.stamp_ns) / 1e6))
                else:
                    status = rx.msg
            if now >= next_sample:
                next_sample += args.every
                pids = {"launcher": launcher.pid, **dict(sorted(llog.pids.items()))}
                rss = {name: rss_mib(pid) for name, pid in pids.items()}
                cpu = {name: cpu_s(pid) for name, pid in pids.items()}
                recent = [lat for t, lat in detections if t >= now - t0 - args.every]
                sample = {"t_s": round(now - t0, 2), "rss_mib": rss, "cpu_s": cpu,
                          "e2e_latency_ms_p50": p(recent, 50), "e2e_latency_ms_p99": p(recent, 99),
                          "detections_in_window": len(recent), "restarts": sum(llog.restarts.values())}
                if status is not None:
                    sample.update(node_latency_ms_p50=status.latency_ms_p50, node_latency_ms_p99=status.latency_ms_p99,
                                  outputs=status.outputs, output_rate_hz=status.output_rate_hz,
                                  frame_drops=sum(c.dropped for c in status.cameras),
                                  frames_rejected=sum(c.rejected for c in status.cameras),
                                  sync_dropped=status.sync_dropped, overload_dropped=status.sets_dropped_overload,
                                  node_uptime_s=status.uptime_s, backend=status.backend)
                samples.append(sample)
                print(f"[{sample['t_s']:6.0f} s] rss total {sum(v for v in rss.values() if v):6.0f} MiB  "
                      f"latency p50/p99 {fmt(sample['e2e_latency_ms_p50'])}/{fmt(sample['e2e_latency_ms_p99'])} ms  "
                      f"outputs {sample.get('outputs', '-')}  drops {sample.get('frame_drops', '-')}  "
                      f"restarts {sample['restarts']}", flush=True)
    finally:
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGTERM)
        try:
            launcher.wait(timeout=60)
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait()
        llog.join()
        sub.close()

    report = summarize(samples, detections, llog, launcher.returncode, status, args)
    (out / "soak.json").write_text(json.dumps({"report": report, "samples": samples}, indent=1))
    plot(samples, detections, out / "soak.png")
    print_table(report)
    print(f"wrote {out / 'soak.json'}, {out / 'soak.png'}, launcher log {out / 'launcher.log'}")
    return 0 if launcher.returncode == 0 and not llog.gave_up else 1


def summarize(samples, detections, llog: LauncherLog, returncode, status, args) -> dict:
    names = list(dict.fromkeys(n for s in samples for n in s["rss_mib"]))
    memory = {}
    for n in names:
        timed = [(s["t_s"], s["rss_mib"][n]) for s in samples if s["rss_mib"].get(n) is not None]
        after = [v for t, v in timed if t >= args.warmup] or [v for _, v in timed]
        if after:
            # CPU share over the run: the last sample's CPU seconds over its process's life so far
            last = next((s for s in reversed(samples) if (s.get("cpu_s") or {}).get(n) is not None), None)
            cpu = None if last is None else last["cpu_s"][n] / max(last["t_s"], 1e-9)
            memory[n] = {"start_mib": after[0], "end_mib": after[-1], "max_mib": max(v for _, v in timed),
                         "growth_mib": after[-1] - after[0], "cpu_share": cpu}
    end_t = detections[-1][0] if detections else 0.0
    first = [lat for t, lat in detections if t <= detections[0][0] + 60] if detections else []
    last = [lat for t, lat in detections if t >= end_t - 60]
    closing = next((ln for ln in reversed(llog.lines) if "restarts:" in ln), "")
    return {
        "minutes": args.minutes, "warmup_s": args.warmup, "launch": args.launch, "launcher_exit": returncode,
        "memory": memory,
        "latency_ms": {"first_minute_p50": p(first, 50), "first_minute_p99": p(first, 99),
                       "last_minute_p50": p(last, 50), "last_minute_p99": p(last, 99),
                       "all_p99": p([lat for _, lat in detections], 99)},
        "detections": len(detections),
        "node": None if status is None else {
            "outputs": status.outputs, "frame_drops": sum(c.dropped for c in status.cameras),
            "frames_rejected": sum(c.rejected for c in status.cameras), "sync_dropped": status.sync_dropped,
            "overload_dropped": status.sets_dropped_overload, "backend": status.backend,
            "uptime_s": status.uptime_s},
        "restarts": dict(llog.restarts), "heartbeat_restarts": llog.heartbeat_restarts,
        "launcher_restart_line": closing.split("INFO: ", 1)[-1], "gave_up": llog.gave_up,
    }


def print_table(r: dict) -> None:
    print(f"\nsoak of {r['launch']}: {r['minutes']:g} min, launcher exit {r['launcher_exit']}")
    print(f"memory 'start' = first sample after {r['warmup_s']:g} s; cpu = CPU seconds / seconds since launch "
          "(a restarted process: its current run only, so understated)")
    print(f"{'process':<18}{'start MiB':>10}{'end MiB':>10}{'max MiB':>10}{'growth':>10}{'cpu':>8}{'restarts':>10}")
    for name, m in r["memory"].items():
        cpu = "-" if m["cpu_share"] is None else f"{100 * m['cpu_share']:.0f}%"
        print(f"{name:<18}{m['start_mib']:>10.0f}{m['end_mib']:>10.0f}{m['max_mib']:>10.0f}"
              f"{m['growth_mib']:>+10.1f}{cpu:>8}{r['restarts'].get(name, 0):>10d}")
    total = {k: sum(m[k] for m in r["memory"].values()) for k in ("start_mib", "end_mib", "growth_mib")}
    print(f"{'total':<18}{total['start_mib']:>10.0f}{total['end_mib']:>10.0f}{'':>10}{total['growth_mib']:>+10.1f}"
          f"{'':>8}{sum(r['restarts'].values()):>10d}")
    lat = r["latency_ms"]
    print(f"capture-to-receipt latency: first minute p50/p99 {fmt(lat['first_minute_p50'])}/"
          f"{fmt(lat['first_minute_p99'])} ms, last minute {fmt(lat['last_minute_p50'])}/"
          f"{fmt(lat['last_minute_p99'])} ms ({r['detections']} detection messages)")
    if r["node"]:
        n = r["node"]
        print(f"node: {n['outputs']} outputs, frame drops {n['frame_drops']}, rejected {n['frames_rejected']}, "
              f"incomplete sets dropped {n['sync_dropped']}, overload dropped {n['overload_dropped']}, "
              f"backend {n['backend']}")
    print(f"launcher: {r['launcher_restart_line'] or 'no restart summary'}")
    for line in r["gave_up"]:
        print(f"GAVE UP: {line}")


def plot(samples, detections, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    names = list(dict.fromkeys(n for s in samples for n in s["rss_mib"]))
    for n in names:
        pts = [(s["t_s"], s["rss_mib"][n]) for s in samples if s["rss_mib"].get(n) is not None]
        if pts:
            ax1.plot(*zip(*pts), label=n)
    ax1.set_ylabel("RSS (MiB)")
    ax1.legend(fontsize=7, ncol=4)
    ax1.grid(alpha=0.3)
    if detections:
        t, lat = zip(*detections)
        ax2.plot(t, lat, ",", alpha=0.4, label="each detection message")
    for key, style in (("e2e_latency_ms_p50", "-"), ("e2e_latency_ms_p99", "--")):
        pts = [(s["t_s"], s[key]) for s in samples if s.get(key) is not None]
        if pts:
            ax2.plot(*zip(*pts), style, label=key.replace("e2e_latency_ms_", "") + " per sample window")
    ax2.set_ylabel("capture-to-receipt latency (ms)")
    ax2.set_xlabel("time since launch (s)")
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
