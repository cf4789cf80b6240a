"""Supervision by the launcher, with real processes (docs/supervision.md): children die with the
launcher, a process that cannot start is given up on with one clear line and a non-zero exit,
and a hung (alive, silent) process is found by its heartbeat and restarted."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
import zmq

from perception.launch import Launcher, load_launch


def write(tmp_path: Path, data) -> Path:
    p = tmp_path / "launch.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as gone: it holds no port, runs no code)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def launch_cli(path: Path, tmp_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "perception.cli", "launch", str(path), "--quiet",
                             "--log-dir", str(tmp_path / "logs"), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_children_die_when_the_launcher_is_killed(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    # Each child records its pid, ignores SIGTERM (only the parent-death SIGKILL can end it) and sleeps.
    child = (f"import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
             f"open(os.path.join({str(pids)!r}, str(os.getpid())), 'w').close(); time.sleep(600)")
    path = write(tmp_path, {"name": "t", "processes": [
        {"name": f"c{i}", "cmd": [sys.executable, "-c", child]} for i in range(3)]})
    launcher = launch_cli(path, tmp_path)
    try:
        assert wait_for(lambda: len(list(pids.iterdir())) == 3, 60), "children did not start"
        children = [int(p.name) for p in pids.iterdir()]
        assert all(alive(pid) for pid in children)
        launcher.kill()                             # SIGKILL: no chance to stop anything itself
        launcher.wait(timeout=30)
        assert wait_for(lambda: not any(alive(pid) for pid in children), 10), \
            f"children outlived the launcher: {[pid for pid in children if alive(pid)]}"
    finally:
        if launcher.poll() is None:
            launcher.kill()
        for p in pids.iterdir():
            try:
                os.kill(int(p.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_process_that_cannot_bind_is_given_up_with_one_line_and_launcher_exits_nonzero(tmp_path):
    port = free_port()
    taken = zmq.Context.instance().socket(zmq.PUB)
    taken.bind(f"tcp://127.0.0.1:{port}")        # the camera's endpoint is already taken
    marker = tmp_path / "starts.txt"
    try:
        path = write(tmp_path, {
            "name": "t", "restart": {"initial_backoff_s": 0.1, "max_backoff_s": 0.2, "give_up_after": 3},
            "processes": [
                {"name": "cam", "args": ["camera", "--name", "front", "--endpoint", f"tcp://127.0.0.1:{port}"]},
                {"name": "counter", "cmd": [sys.executable, "-c",
                                            f"open({str(marker)!r}, 'a').write('x'); import time; time.sleep(600)"]}]})
        launcher = launch_cli(path, tmp_path, "--duration", "300")
        out, err = launcher.communicate(timeout=240)
    finally:
        taken.close(linger=0)
    assert launcher.returncode == 1
    gave_up = [ln for ln in err.splitlines() if "giving up" in ln]
    assert len(gave_up) == 1 and "cam" in gave_up[0] and "3 failed starts" in gave_up[0]
    assert gave_up[0].count("Address already in use") == 1      # the repeated error said once
    cam_log = (tmp_path / "logs" / "cam.log").read_text()
    assert cam_log.count("cannot start") == 3 and "Traceback" not in cam_log
    assert marker.read_text() == "x"                # the other process was not restarted, only stopped


def test_optional_process_given_up_leaves_the_rest_running(tmp_path):
    marker = tmp_path / "starts.txt"
    path = write(tmp_path, {
        "name": "t", "restart": {"initial_backoff_s": 0.05, "max_backoff_s": 0.1, "give_up_after": 2},
        "processes": [{"name": "bad", "required": False, "cmd": [sys.executable, "-c", "raise SystemExit(7)"]},
                      {"name": "good", "cmd": [sys.executable, "-c",
                                               f"open({str(marker)!r}, 'a').write('x'); import time; time.sleep(600)"]}]})
    launcher = Launcher(load_launch(path), tmp_path / "logs", quiet=True)
    code = launcher.run(duration=4.0)
    bad, good = launcher.procs
    assert code == 1 and launcher.gave_up == ["bad"] and bad.gave_up and bad.restarts == 1
    assert not good.gave_up and good.restarts == 0 and marker.read_text() == "x"


def test_silent_process_is_restarted_by_heartbeat(tmp_path):
    port = free_port()
    marker = tmp_path / "starts.txt"
    # Publishes a status at 20 Hz; on its first run it stops itself (SIGSTOP) after 20 messages:
    # alive, but silent. The second run keeps publishing.
    child = f"""
import os, signal, time
from perception.transport import Publisher
from perception.v1 import status_pb2
first = not os.path.exists({str(marker)!r})
open({str(marker)!r}, 'a').write('x')
pub = Publisher('tcp://127.0.0.1:{port}')
for i in range(100000):
    pub.publish('hb/fake', status_pb2.NodeStatus())
    if first and i == 20:
        os.kill(os.getpid(), signal.SIGSTOP)
    time.sleep(0.05)
"""
    path = write(tmp_path, {
        "name": "t", "restart": {"initial_backoff_s": 0.1, "stop_grace_s": 1.0},
        "processes": [{"name": "beater", "cmd": [sys.executable, "-c", child],
                       "heartbeat": {"endpoint": f"tcp://127.0.0.1:{port}", "topic": "hb/fake", "timeout_s": 1.0}}]})
    launcher = Launcher(load_launch(path), tmp_path / "logs", quiet=True)
    proc_seen = []
    original = launcher._watch

    def watch():
        original()
        m = launcher.procs[0]
        if m.proc is not None and m.proc.pid not in proc_seen:
            proc_seen.append(m.proc.pid)
        if len(marker.read_text() if marker.exists() else "") >= 2 and m.restarts_by_cause.get("heartbeat") \
                and launcher.heartbeats.poll().get("hb/fake", 0) > m.started_ns:
            launcher.stopping = True          # the restarted process is publishing again

    launcher._watch = watch
    code = launcher.run(duration=120.0)
    m = launcher.procs[0]
    assert code == 0
    assert m.restarts_by_cause == {"heartbeat": 1} and launcher.restart_counts() == {"heartbeat": 1}
    assert marker.read_text() == "xx" and len(proc_seen) == 2
    assert not alive(proc_seen[0])                 # the stopped one was ended, not left behind


def test_heartbeat_config_errors(tmp_path):
    from perception.config import ConfigError

    for bad in [{"endpoint": "tcp://127.0.0.1:1"}, {"endpoint": "e", "topic": "t", "timeout_s": 0},
                {"endpoint": "e", "topic": "t", "oops": 1}]:
        with pytest.raises(ConfigError):
            load_launch(write(tmp_path, {"processes": [{"name": "x", "cmd": ["true"], "heartbeat": bad}]}))
    with pytest.raises(ConfigError):
        load_launch(write(tmp_path, {"restart": {"give_up_after": 0}, "processes": [{"name": "x", "cmd": ["true"]}]}))


def test_shipped_launch_file_gives_every_process_a_heartbeat():
    from perception.config import DEFAULT_LAUNCH

    launch = load_launch(DEFAULT_LAUNCH)
    assert all(p.heartbeat is not None for p in launch.processes)
    fusion = next(p for p in launch.processes if p.name == "fusion")
    assert fusion.heartbeat.topic == "status/fusion" and fusion.heartbeat.endpoint == launch.monitor


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_fallback_watchdog_stops_a_worker_whose_launcher_died(tmp_path):
    """Where prctl is missing, a worker run by lifecycle.run_until_stopped watches its parent."""
    pidfile = tmp_path / "worker.pid"
    stopped = tmp_path / "stopped"
    worker = f"""
import os, time
from perception.lifecycle import run_until_stopped
class W:
    running = True
    def run(self):
        open({str(pidfile)!r}, 'w').write(str(os.getpid()))
        while self.running:
            time.sleep(0.05)
        return 0
    def close(self):
        open({str(stopped)!r}, 'w').write('closed')
run_until_stopped(W())
"""
    # The middle process plays the launcher: it starts the worker, naming itself as the parent to watch.
    middle = ("import os, subprocess, sys, time; "
              f"subprocess.Popen([sys.executable, '-c', {worker!r}], "
              "env=dict(os.environ, PERCEPTION_WATCH_PARENT=str(os.getpid()))); time.sleep(600)")
    launcher = subprocess.Popen([sys.executable, "-c", middle])
    try:
        assert wait_for(lambda: pidfile.exists() and pidfile.read_text(), 60)
        pid = int(pidfile.read_text())
        launcher.kill()
        launcher.wait(timeout=30)
        assert wait_for(lambda: not alive(pid), 15), "worker outlived its launcher"
        assert stopped.read_text() == "closed"          # a clean stop: its close() ran
    finally:
        if launcher.poll() is None:
            launcher.kill()
