"""The launcher on its own: parsing, restart with backoff, clean stop."""
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from perception.config import ConfigError
from perception.launch import Launcher, load_launch


def write(tmp_path: Path, data) -> Path:
    p = tmp_path / "launch.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_shipped_launch_file_declares_six_cameras_and_fusion():
    from perception.config import DEFAULT_LAUNCH

    launch = load_launch(DEFAULT_LAUNCH)
    names = [p.name for p in launch.processes]
    assert names.count("fusion") == 1 and sum(n.startswith("cam_") for n in names) == 6
    assert launch.monitor == "tcp://127.0.0.1:5560"


@pytest.mark.parametrize("bad", [{}, {"processes": []}, {"processes": [{"name": "x"}]},
                                 {"processes": [{"name": "x", "args": ["a"], "cmd": ["b"]}]},
                                 {"processes": [{"name": "x", "cmd": ["true"]}, {"name": "x", "cmd": ["true"]}]}])
def test_bad_launch_files_give_clear_errors(tmp_path, bad):
    with pytest.raises(ConfigError):
        load_launch(write(tmp_path, bad))


def test_dead_process_is_restarted_with_backoff_and_all_stop_cleanly(tmp_path):
    marker = tmp_path / "starts.txt"
    crash = f"open({str(marker)!r}, 'a').write('x'); import sys; sys.exit(3)"
    stay = "import time; time.sleep(60)"
    launch = load_launch(write(tmp_path, {
        "name": "t", "restart": {"initial_backoff_s": 0.2, "max_backoff_s": 0.4},
        "processes": [{"name": "crasher", "cmd": [sys.executable, "-c", crash]},
                      {"name": "sleeper", "cmd": [sys.executable, "-c", stay]}]}))
    launcher = Launcher(launch, tmp_path / "logs", quiet=True)
    t0 = time.monotonic()
    launcher.run(duration=3.0)
    assert time.monotonic() - t0 < 10                    # sleeper got SIGTERM, no 5 s kill wait needed
    starts = len(marker.read_text())
    crasher = launcher.procs[0]
    assert crasher.restarts >= 3 and starts == crasher.restarts + 1
    assert starts < 3.0 / 0.2                            # backoff held it back (no busy restart loop)
    assert all(m.proc is None or m.proc.poll() is not None for m in launcher.procs)


def test_launch_cli_rejects_missing_file(tmp_path):
    r = subprocess.run([sys.executable, "-m", "perception.cli", "launch", str(tmp_path / "nope.yaml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "does not exist" in r.stderr
