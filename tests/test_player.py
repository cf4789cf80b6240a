"""The live replay player (perception/player.py, `perception replay IN.mcap` without --offline):
lock-step through a real `perception fuse` gives the same Detections on every run, and the same as
offline replay; --rate/--start/--end send the right frames with the right stamps; a truncated file
plays up to its cut; bad recorded frames are counted, never sent; a silent node is a clear error."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from perception import config as pconfig
from perception import topics

PERIOD_NS = 100_000_000          # the test drive's 10 Hz
PHASE_NS = 5_000_000             # camera i is captured i x 5 ms after the tick


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    from perception.sim.drive import write_sim_drive

    path = tmp_path_factory.mktemp("drive") / "drive.mcap"
    info = write_sim_drive(path, seconds=1.0, rate_hz=10.0, seed=11)
    return path, info


def endpoints(tmp_path, rig):
    return tuple(f"ipc://{tmp_path}/cam_{n}" for n in rig.camera_names), f"ipc://{tmp_path}/fusion"


def model_args() -> list[str]:
    return [] if (pconfig.DEFAULT_MODEL_DIR / "model.safetensors").exists() else ["--allow-random-init"]


def start_fuse(tmp_path, cams, node, log_name):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    log = open(tmp_path / log_name, "w")  # noqa: SIM115 - closed by the caller through proc.log
    proc = subprocess.Popen([sys.executable, "-m", "perception.cli", "fuse", "--backend", "torch", "--threads", "1",
                             "--camera-endpoints", *cams, "--publish", node, *model_args()],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.log.close()


def normalized(msg):
    """A Detections without what depends on the wall clock: stage timings, frame ages."""
    from perception.regression import without_ignored

    return without_ignored(msg)


def test_lockstep_through_the_fusion_process_is_deterministic_and_equals_offline(tmp_path, drive):
    from perception.player import Player, PlayerConfig, file_source
    from perception.replay import OfflineReplay, ReplayConfig

    path, info = drive
    rig = pconfig.load_rig()
    runs = []
    for run in range(2):
        cams, node = endpoints(tmp_path / f"run{run}", rig)
        proc = start_fuse(tmp_path, cams, node, f"fuse{run}.log")
        got: list = []
        try:
            config = PlayerConfig(camera_endpoints=cams, node_endpoint=node, lockstep=True, wait_node_s=120,
                                  set_timeout_s=60, linger_s=0)
            player = Player(config, file_source(path, rig=rig), rig, on_detections=lambda m, _raw: got.append(m))
            try:
                assert player.run() == 0, player.summary.lines()
            finally:
                player.close()
        finally:
            stop(proc)
        s = player.summary
        assert s.frames_read == s.frames_sent == info["frames"] and s.rejected == {}
        assert s.sets_sent == info["ticks"] and s.partial_sets == 0
        assert s.detections == len(got) == info["ticks"] and s.unmatched_detections == 0
        assert len(s.lockstep_waits) == info["ticks"]
        assert s.truth_read == s.truth_sent == info["ticks"]
        runs.append([normalized(m) for m in got])
    assert runs[0] == runs[1]
    # In recording time: each set's frames as recorded, its stamp the last camera's.
    ticks = info["stamps"]["front"]
    assert [m.stamp_ns for m in runs[0]] == [t + PHASE_NS * (len(rig.cameras) - 1) for t in ticks]
    assert [[(f.camera_name, f.sequence, f.capture_end_ns) for f in m.frames] for m in runs[0]] == \
        [[(n, k, t + PHASE_NS * i) for i, n in enumerate(rig.camera_names)] for k, t in enumerate(ticks)]
    assert sum(len(m.objects) for m in runs[0]) > 0
    # ... and identical to offline replay of the same file (same sync, model and backend, no sockets).
    offline: list = []
    OfflineReplay(ReplayConfig(backend="torch", threads=1, allow_random_init=bool(model_args()))).run(
        path, on_detections=offline.append)
    assert runs[0] == [normalized(m) for m in offline]


def collect(sub, n: int, timeout_s: float = 30.0) -> list:
    out: list = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        rx = sub.recv(100)
        if rx is not None:
            out.append(rx)
    return out


@pytest.mark.parametrize("rate", [4.0, 0.5])
def test_rate_start_end_select_and_stamp_the_right_frames(tmp_path, drive, rate):
    from perception.player import Player, PlayerConfig, file_source
    from perception.transport import Subscriber

    path, info = drive
    rig = pconfig.load_rig()
    cams, node = endpoints(tmp_path, rig)
    # --start 0.25 --end 0.55: the sets at 0.3, 0.4 and 0.5 s of the drive
    config = PlayerConfig(camera_endpoints=cams, node_endpoint=node, rate=rate, start_s=0.25, end_s=0.55,
                          wait_node_s=10, linger_s=0, max_lag_s=60)
    player = Player(config, file_source(path, rig=rig), rig)
    sub = Subscriber(list(cams), [topics.camera(n) for n in rig.camera_names] + [topics.TRUTH], rcvhwm=1000)
    try:
        assert player.run() == 0
        got = collect(sub, 3 * len(rig.cameras) + 3)
    finally:
        sub.close()
        player.close()
    s = player.summary
    assert s.sets_sent == 3 and s.frames_sent == 3 * len(rig.cameras) and s.truth_sent == 3
    assert s.skipped_range == 3 + 1                       # 0.0-0.2 before, 0.6 (the pass stops there)
    frames = [rx.msg for rx in got if rx.topic != topics.TRUTH]
    truth = [rx.msg for rx in got if rx.topic == topics.TRUTH]
    assert sorted((h.camera_name, h.sequence) for h in frames) == sorted(
        (n, k) for n in rig.camera_names for k in (3, 4, 5))
    stamp = {(h.camera_name, h.sequence): h.capture_end_ns for h in frames}
    intra = min(1.0, 1.0 / rate)
    for k in (3, 4, 5):
        for i, n in enumerate(rig.camera_names):                 # within a set: never stretched
            assert stamp[(n, k)] - stamp[("front", k)] == int(PHASE_NS * i * intra)
    for k in (4, 5):                                             # between sets: the recorded 100 ms / rate
        assert stamp[("front", k)] - stamp[("front", k - 1)] == int(PERIOD_NS / rate)
    assert sorted(t.stamp_ns for t in truth) == [stamp[("front", k)] for k in (3, 4, 5)]
    for h in frames:                                              # restamped onto this machine's clock
        assert abs(h.capture_end_ns - time.time_ns()) < 60e9
        assert h.capture_end_ns - h.capture_start_ns == 5_000_000


def test_truncated_file_plays_up_to_its_cut_and_bad_frames_are_counted(tmp_path, drive):
    from perception.player import Player, PlayerConfig, file_source
    from perception.record import read_messages
    from perception.transport import Subscriber

    path, info = drive
    data = path.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: len(data) * 2 // 3])
    stats: dict = {}
    readable = [m for m in read_messages(cut, stats=stats) if m.topic.startswith(topics.CAMERA_PREFIX)]
    assert stats["truncated"] and 0 < len(readable) < info["frames"]
    rig = pconfig.load_rig()
    cams, node = endpoints(tmp_path, rig)
    sub = Subscriber(list(cams), [topics.camera(n) for n in rig.camera_names], rcvhwm=1000)
    stats = {}
    player = Player(PlayerConfig(camera_endpoints=cams, node_endpoint=node, rate=50, wait_node_s=10, linger_s=0,
                                 max_lag_s=60), file_source(cut, stats, rig), rig, stats=stats)
    try:
        assert player.run() == 0
        got = collect(sub, len(readable))
    finally:
        sub.close()
        player.close()
    s = player.summary
    assert s.truncated and s.frames_read == s.frames_sent == len(readable) == len(got)
    assert sorted((rx.msg.camera_name, rx.msg.sequence) for rx in got) == sorted(
        (m.msg.header.camera_name, m.msg.header.sequence) for m in readable)

    # Any message iterator plugs in (a foreign reader's): bad frames are skipped and counted.
    from perception.v1 import recording_pb2

    msgs = list(read_messages(path))
    frames = [m for m in msgs if m.topic.startswith(topics.CAMERA_PREFIX)][:12]
    short = recording_pb2.RecordedFrame()
    short.CopyFrom(frames[1].msg)
    short.pixels = short.pixels[:-1]
    frames[1].msg = short                                                  # one byte short
    frames[2].msg.header.camera_name = "nowhere"                           # not the topic's camera
    frames[3].msg.header.capture_start_ns = frames[3].msg.header.capture_end_ns + 1   # ends before it starts
    player = Player(PlayerConfig(camera_endpoints=cams, node_endpoint=node, rate=50, wait_node_s=0, linger_s=0,
                                 max_lag_s=60), lambda: iter(frames), rig)
    try:
        assert player.run() == 0
    finally:
        player.close()
    s = player.summary
    assert s.frames_read == 12 and s.frames_sent == 9
    assert s.rejected == {"payload_size": 1, "unknown_camera": 1, "bad_stamp": 1}


def test_lockstep_without_answers_is_a_clear_error(tmp_path, drive):
    from perception.player import Player, PlayerConfig, file_source
    from perception.transport import Publisher, Subscriber
    from perception.v1 import status_pb2

    path, _ = drive
    rig = pconfig.load_rig()
    cams, node = endpoints(tmp_path, rig)
    fake_node = Publisher(node)               # publishes status, never Detections
    sub = Subscriber(list(cams), [topics.camera(n) for n in rig.camera_names], rcvhwm=1000)
    player = Player(PlayerConfig(camera_endpoints=cams, node_endpoint=node, lockstep=True, wait_node_s=20,
                                 set_timeout_s=0.5), file_source(path, rig=rig), rig)
    try:
        assert fake_node.wait_for_subscriber(10, topics.FUSION_STATUS)
        fake_node.publish(topics.FUSION_STATUS, status_pb2.NodeStatus(node="fusion"))
        assert player.run() == 1
    finally:
        player.close()
        sub.close()
        fake_node.close()
    s = player.summary
    assert s.sets_sent == 1 and s.frames_sent == len(rig.cameras)
    assert "no Detections for frame set 1" in s.error and node in s.error


def test_replay_command_live_options(tmp_path, drive, capsys):
    from perception.commands import replay

    path, _ = drive
    rig = pconfig.load_rig()
    cams, node = endpoints(tmp_path, rig)
    # no node: real time at 20x, nothing waits for a subscriber
    code = replay.main([str(path), "--rate", "20", "--camera-endpoints", *cams, "--node-endpoint", node,
                        "--wait-node", "0", "--no-progress", "--end", "0.35"])
    out = capsys.readouterr().out
    assert code == 0 and "frame sets sent 4" in out and "detections received 0" in out
    assert replay.main([str(tmp_path / "missing.mcap"), "--no-progress"]) == 2
    assert replay.main([str(path), "--rate", "0", "--no-progress", "--camera-endpoints", *cams,
                        "--node-endpoint", node]) == 2
    assert replay.main([str(path), "--camera-endpoints", cams[0], "--node-endpoint", node, "--no-progress"]) == 2


def test_launch_replay_yaml_runs_the_player_and_an_unmodified_node():
    from perception.commands import replay
    from perception.launch import load_launch

    launch = load_launch(pconfig.REPO_ROOT / "launch" / "replay.yaml", {"drive": "d.mcap", "rate": "2"})
    by_name = {p.name: p.command for p in launch.processes}
    assert set(by_name) == {"player", "fusion"}
    assert by_name["player"][-6:] == ["replay", "d.mcap", "--loop", "--rate", "2", "--no-progress"]
    assert by_name["fusion"][3:5] == ["fuse", "--threads"]
    replay.build_parser().parse_args(by_name["player"][4:])       # the player's arguments parse
