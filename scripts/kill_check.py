"""Recovery after SIGKILL (not in CI): how long until a killed camera is back in the detections,
and a killed fusion node is publishing again, under `perception launch`.

    python scripts/kill_check.py                 # launch/sim.yaml, kills cam_back_left, then fusion
    python scripts/kill_check.py --json out/kill_check.json

The camera is judged from its first new frame (the restarted process's first message on its
topic) to the first Detections message that uses a frame of the new process; the node from the
kill to its first Detections message after the kill. Run it alone: it uses the launch file's
fixed ports (the defaults of launch/sim.yaml).
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

from perception import topics
from perception.config import FUSION_ENDPOINT, camera_endpoint, load_rig
from perception.transport import Subscriber


def start_launch(launch: str, seconds: float, log_path: Path) -> tuple[subprocess.Popen, dict[str, int]]:
    proc = subprocess.Popen([sys.executable, "-m", "perception.cli", "launch", launch, "--duration", str(seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    pids: dict[str, int] = {}
    log = log_path.open("w")

    def read():
        for line in proc.stdout:       # type: ignore[union-attr]
            log.write(line)
            log.flush()
            m = re.search(r"(?:started|restarted) (\S+)\s+pid (\d+)", line)
            if m:
                pids[m.group(1)] = int(m.group(2))

    threading.Thread(target=read, daemon=True).start()
    return proc, pids


def wait_for(cond, timeout_s: float, step_s: float = 0.01):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(step_s)
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--launch", default="launch/sim.yaml")
    p.add_argument("--camera", default="back_left", help="camera whose process is killed")
    p.add_argument("--settle", type=float, default=15.0, help="seconds of normal running before each kill")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    rig = load_rig()
    cam_topic = topics.camera(args.camera)
    log_path = Path("out/kill_check.launch.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    launcher, pids = start_launch(args.launch, 4 * args.settle + 30, log_path)
    dets = Subscriber(FUSION_ENDPOINT, [topics.DETECTIONS])
    cam = Subscriber(camera_endpoint(rig.index(args.camera)), [cam_topic])
    result: dict = {"launch": args.launch, "camera": args.camera}
    try:
        if not wait_for(lambda: dets.recv(timeout_ms=100), 60):
            print("no detections within 60 s of launch", file=sys.stderr)
            return 1
        time.sleep(args.settle)

        # -- camera -------------------------------------------------------------------------
        name = f"cam_{args.camera}"
        os.kill(pids[name], signal.SIGKILL)
        killed = time.monotonic()
        cam.drain_latest()
        first = wait_for(lambda: cam.recv(timeout_ms=100), 30)
        if first is None:
            print(f"{name}: no new frame within 30 s of the kill", file=sys.stderr)
            return 1
        t_frame, stamp0 = time.monotonic(), first.msg.capture_end_ns
        dets.drain_latest()

        def uses_new_frame():
            rx = dets.recv(timeout_ms=100)
            if rx is None:
                return None
            return any(f.camera_name == args.camera and f.capture_end_ns >= stamp0 for f in rx.msg.frames)

        back = wait_for(uses_new_frame, 30)
        t_back = time.monotonic()
        result["camera_kill_to_first_new_frame_s"] = round(t_frame - killed, 2)
        result["camera_first_new_frame_to_detections_s"] = round(t_back - t_frame, 2) if back else None
        print(f"{name}: SIGKILL -> first new frame {t_frame - killed:.2f} s (launcher restart and start-up); "
              f"first new frame -> in the detections {t_back - t_frame:.2f} s" if back else
              f"{name}: not back in the detections within 30 s of its first new frame")
        time.sleep(args.settle)

        # -- fusion node ----------------------------------------------------------------------
        os.kill(pids["fusion"], signal.SIGKILL)
        killed = time.monotonic()
        time.sleep(0.2)
        dets.drain_latest()
        again = wait_for(lambda: dets.recv(timeout_ms=100), 60)
        result["node_kill_to_detections_s"] = round(time.monotonic() - killed, 2) if again else None
        print(f"fusion: SIGKILL -> detections again {time.monotonic() - killed:.2f} s" if again else
              "fusion: no detections within 60 s of the kill")
    finally:
        dets.close()
        cam.close()
        launcher.send_signal(signal.SIGINT)
        launcher.wait(timeout=60)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
