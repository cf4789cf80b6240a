"""End to end: the real camera and fusion processes, launched by the real launcher, on
loopback (ipc endpoints in a temporary folder, so no port can collide), deliver detections
with all six cameras' stamps; a dead camera is masked and reported, then restarted."""
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from perception.config import load_rig

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def launch_file(tmp_path, model_args):
    rig = load_rig()
    procs, endpoints = [], []
    for i, cam in enumerate(rig.cameras):
        ep = f"ipc://{tmp_path}/cam_{cam.name}"
        endpoints.append(ep)
        args = ["camera", "--name", cam.name, "--endpoint", ep, "--rate", "5"]
        procs.append({"name": f"cam_{cam.name}", "args": args + (["--truth"] if i == 0 else [])})
    fusion = f"ipc://{tmp_path}/fusion"
    # the default start-up path (backend auto): what users get, compiled package or not
    procs.append({"name": "fusion", "args": ["fuse", "--camera-endpoints", *endpoints, "--publish", fusion,
                                             "--timeout-ms", "150", *model_args]})
    path = tmp_path / "launch.yaml"
    path.write_text(yaml.safe_dump({"name": "it", "monitor": fusion, "processes": procs,
                                    "restart": {"initial_backoff_s": 1.0}}))
    return path, fusion, rig.camera_names


def model_args():
    from perception.config import DEFAULT_MODEL_DIR

    return [] if (DEFAULT_MODEL_DIR / "model.safetensors").exists() else ["--allow-random-init"]


def test_live_pipeline_delivers_detections_from_all_cameras(tmp_path):
    from perception.transport import Subscriber

    path, fusion, names = launch_file(tmp_path, model_args())
    sub = Subscriber(fusion, ["detections", "status/fusion"])
    launcher = subprocess.Popen([sys.executable, "-m", "perception.cli", "launch", str(path), "--duration", "120",
                                 "--log-dir", str(tmp_path / "logs")], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    full, statuses, partial_after_kill, full_after_restart = [], [], [], []
    killed_at = None
    try:
        deadline = time.monotonic() + 110     # ends early once everything was seen (~20 s on a quiet machine)
        while time.monotonic() < deadline:
            rx = sub.recv(timeout_ms=500)
            if rx is None:
                continue
            if rx.topic == "status/fusion":
                statuses.append(rx.msg)
            elif not rx.msg.missing_cameras:
                full.append(rx.msg)
                if partial_after_kill:
                    full_after_restart.append(rx.msg)
            elif killed_at is not None:
                partial_after_kill.append(rx.msg)
            if len(full) >= 5 and killed_at is None:
                # Kill one camera: the node must keep publishing with it masked.
                pid = int(subprocess.check_output(["pgrep", "-f", "--", f"--name back_left --endpoint ipc://{tmp_path}"]).split()[0])
                os.kill(pid, signal.SIGKILL)
                killed_at = time.monotonic()
            if statuses and len(full_after_restart) >= 3:
                break
    finally:
        launcher.send_signal(signal.SIGINT)
        out, _ = launcher.communicate(timeout=30)
        sub.close()

    assert len(full) >= 8, out
    msg = full[-1]
    assert [f.camera_name for f in msg.frames] == names
    stamps = [f.capture_end_ns for f in msg.frames]
    assert max(stamps) - min(stamps) < 50e6 and msg.stamp_ns == max(stamps)
    assert msg.timings.inference_ms > 0 and msg.timings.total_ms >= msg.timings.inference_ms
    assert msg.backend and msg.model_name
    # auto on a CPU: eager until the compiled package is ready, then the package; status says which
    # and lists every switch
    assert {m.backend for m in full} <= {"torch-cpu", "torch-cpu-inductor"}, {m.backend for m in full}
    assert [(s.from_backend, s.to_backend) for s in statuses[-1].engine_switches] in (
        [], [("torch-cpu", "torch-cpu-inductor")])
    assert partial_after_kill and partial_after_kill[0].missing_cameras == ["back_left"]
    assert statuses and statuses[-1].backend == msg.backend and len(statuses[-1].cameras) == 6
    assert "restarted cam_back_left" in out        # the launcher brought the dead camera back
    # ... and the node took it back: its new publisher (a fresh socket the node must reconnect to)
    # completes frame sets again, with all six cameras in stamp order
    assert len(full_after_restart) >= 3, out
    assert [f.camera_name for f in full_after_restart[-1].frames] == names
    assert launcher.returncode == 0
