"""`perception launch --record OUT.mcap` (perception/launch_record.py): the recorder process the
launcher adds (endpoints and rig read from the launch file's own processes, never restarted), the
launcher's `respawn: false`, the closing summary copied into the launch log, and a real run on ipc
endpoints whose file holds every camera, the detections and their Foxglove channels."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import yaml

from perception import config as pconfig
from perception.commands._launch_record import RecordOptions, closing_summary, publishers, with_recorder
from perception.launch import Launcher, load_launch


def write(tmp_path, data, name="launch.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def endpoints_of(command: list[str]) -> list[str]:
    return [command[i + 1] for i, a in enumerate(command) if a == "-e"]


def test_recorder_of_the_shipped_launch_file(tmp_path):
    launch, spec = with_recorder(load_launch(pconfig.DEFAULT_LAUNCH), RecordOptions(str(tmp_path / "d.mcap")))
    assert launch.processes[-1] is spec and spec.name == "record"
    assert not spec.respawn and not spec.required and spec.heartbeat is None
    cmd = spec.command
    assert cmd[:4] == [sys.executable, "-m", "perception.cli", "record"] and cmd[4] == str(tmp_path / "d.mcap")
    # the six cameras' default endpoints (their index in the rig) and the fusion node's
    assert endpoints_of(cmd) == [pconfig.camera_endpoint(i) for i in range(6)] + [pconfig.FUSION_ENDPOINT]
    assert cmd[cmd.index("--rig") + 1] == str(pconfig.DEFAULT_RIG)
    assert "--keys" not in cmd and cmd[cmd.index("--foxglove-images") + 1] == "jpeg"
    _, plain = with_recorder(load_launch(pconfig.DEFAULT_LAUNCH), RecordOptions("d.mcap", foxglove=False))
    assert "--no-foxglove" in plain.command and "--foxglove-images" not in plain.command


def test_recorder_of_the_replay_launch_file_listens_to_the_player():
    launch = load_launch(pconfig.DEFAULT_LAUNCH.parent / "replay.yaml")
    assert publishers(launch).endpoints == [pconfig.camera_endpoint(i) for i in range(6)] + [pconfig.FUSION_ENDPOINT]
    path_launch = load_launch(pconfig.DEFAULT_LAUNCH.parent / "replay.yaml")
    from dataclasses import replace

    player = path_launch.processes[0]
    explicit = replace(player, command=[*player.command, "--camera-endpoints", *[f"ipc:///tmp/p/{i}" for i in range(6)]])
    pubs = publishers(replace(path_launch, processes=[explicit]))
    assert pubs.endpoints == [f"ipc:///tmp/p/{i}" for i in range(6)] and pubs.rig == str(pconfig.DEFAULT_RIG)


def test_recorder_of_a_secure_launch_joins_with_its_keys(tmp_path):
    launch = load_launch(pconfig.DEFAULT_LAUNCH.parent / "sim_secure.yaml", {"keys": str(tmp_path / "k")})
    _, spec = with_recorder(launch, RecordOptions("d.mcap"))
    assert spec.command[spec.command.index("--keys") + 1] == str(tmp_path / "k")


def test_explicit_endpoints_rig_and_name_clash(tmp_path):
    rig = str(pconfig.DEFAULT_RIG.parent / "unseen_5cam.yaml")
    path = write(tmp_path, {"name": "t", "processes": [
        {"name": "record", "cmd": ["true"]},
        {"name": "c0", "args": ["camera", "--name", "front", "--rig", rig, "--endpoint", "ipc:///tmp/x/c0"]},
        {"name": "c1", "args": ["camera", "--name", "back", "--rig", rig, "--endpoint", "ipc:///tmp/x/c0"]},
        {"name": "n", "args": ["fuse", "--rig", rig, "--publish", "ipc:///tmp/x/f", "--threads", "1"]},
        {"name": "other", "args": ["echo", "detections"]}]})
    pubs = publishers(load_launch(path))
    assert pubs.rig == rig and pubs.endpoints == ["ipc:///tmp/x/c0", "ipc:///tmp/x/f"]     # deduplicated
    _, spec = with_recorder(load_launch(path), RecordOptions("d.mcap"))
    assert spec.name == "record_"


@pytest.mark.parametrize("processes,match", [
    ([{"name": "t", "cmd": ["true"]}, {"name": "r", "args": ["replay", "d.mcap", "--offline"]}], "no `camera`, `fuse` or `replay`"),
    ([{"name": "c", "args": ["camera", "--name", "nope"]}], "not in rig"),
    ([{"name": "c", "args": ["camera", "--rate", "5"]}], "cannot read its arguments")])
def test_launch_without_known_publishers_is_a_config_error(tmp_path, processes, match):
    with pytest.raises(pconfig.ConfigError, match=match):
        publishers(load_launch(write(tmp_path, {"name": "t", "processes": processes})))


def test_respawn_false_is_never_restarted(tmp_path):
    marker = tmp_path / "starts.txt"
    crash = f"open({str(marker)!r}, 'a').write('x'); import sys; sys.exit(3)"
    done = f"open({str(marker)!r} + '.ok', 'a').write('x')"
    launch = load_launch(write(tmp_path, {
        "name": "t", "restart": {"initial_backoff_s": 0.1, "max_backoff_s": 0.1},
        "processes": [{"name": "once", "cmd": [sys.executable, "-c", crash], "respawn": False, "required": False},
                      {"name": "fine", "cmd": [sys.executable, "-c", done], "respawn": False},
                      {"name": "sleeper", "cmd": [sys.executable, "-c", "import time; time.sleep(60)"]}]}))
    launcher = Launcher(launch, tmp_path / "logs", quiet=True)
    code = launcher.run(duration=2.0)
    assert marker.read_text() == "x" and (tmp_path / "starts.txt.ok").read_text() == "x"    # each started once
    assert launcher.gave_up == ["once"] and code == 1      # a failed recorder fails the launch, after the run
    assert launcher.procs[0].restarts == 0 and launcher.procs[1].restarts == 0


def test_bad_respawn_value(tmp_path):
    with pytest.raises(pconfig.ConfigError, match="respawn"):
        load_launch(write(tmp_path, {"processes": [{"name": "x", "cmd": ["true"], "respawn": "no"}]}))


def test_closing_summary_reads_this_runs_lines_only(tmp_path):
    log = tmp_path / "record.log"
    log.write_text("recording summary:\n  camera/front: 1 received, 1 written\n  wrote 1 messages to old\n")
    offset = log.stat().st_size
    assert closing_summary(log, offset) is None                       # nothing this run (killed)
    with open(log, "a") as f:
        f.write("2026-01-01 00:00:00,000 WARNING something\nrecording summary:\n  camera/front: 5 received, 4 written, "
                "1 dropped\n  wrote 9 messages to new (0.1 MB)\nTraceback? no\n")
    assert closing_summary(log, offset) == ["camera/front: 5 received, 4 written, 1 dropped",
                                            "wrote 9 messages to new (0.1 MB)"]
    assert closing_summary(tmp_path / "missing.log") is None


@pytest.mark.integration
@pytest.mark.slow
def test_launch_record_records_a_live_run(tmp_path):
    """Cameras (5 Hz, ipc) and the fusion node (eager torch, one thread) launched with --record; the
    run is stopped with SIGINT once detections flow, then the file is read back."""
    from mcap.reader import make_reader
    from mcap_protobuf.decoder import DecoderFactory

    from perception import foxglove as fx
    from perception.transport import Subscriber

    rig = pconfig.load_rig()
    procs, endpoints = [], []
    for i, cam in enumerate(rig.cameras):
        ep = f"ipc://{tmp_path}/cam_{cam.name}"
        endpoints.append(ep)
        procs.append({"name": f"cam_{cam.name}", "nice": 10,
                      "args": ["camera", "--name", cam.name, "--endpoint", ep, "--rate", "5"] + (["--truth"] if i == 0 else [])})
    fusion = f"ipc://{tmp_path}/fusion"
    model = [] if (pconfig.DEFAULT_MODEL_DIR / "model.safetensors").exists() else ["--allow-random-init"]
    procs.append({"name": "fusion", "args": ["fuse", "--camera-endpoints", *endpoints, "--publish", fusion, "--backend",
                                             "torch", "--threads", "1", "--timeout-ms", "150", *model]})
    path = write(tmp_path, {"name": "rec", "monitor": fusion, "processes": procs})
    out_file = tmp_path / "drive.mcap"
    sub = Subscriber(fusion, ["detections", "status/fusion"])
    launcher = subprocess.Popen([sys.executable, "-m", "perception.cli", "launch", str(path), "--record", str(out_file),
                                 "--log-dir", str(tmp_path / "logs"), "--quiet"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    seen = statuses = 0
    try:
        # ends once detections of all six cameras flowed (~20-40 s here) and two ~1 Hz statuses went out
        # after the recorder connected (stopping after three detection sets alone could beat the first)
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and (seen < 3 or statuses < 2):
            rx = sub.recv(timeout_ms=500)
            if rx is None:
                continue
            if rx.topic == "status/fusion":
                statuses += seen > 0
            elif not rx.msg.missing_cameras:
                seen += 1
    finally:
        launcher.send_signal(signal.SIGINT)
        out, _ = launcher.communicate(timeout=60)
        sub.close()
    assert seen >= 3 and statuses >= 2, out
    assert launcher.returncode == 0, out
    # the recorder's closing summary reached the launch log
    assert "record: camera/front: " in out and "record: foxglove channels: " in out and "record: wrote " in out, out

    counts: dict[str, int] = {}
    schemas: dict[str, str] = {}
    with open(out_file, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for schema, channel, _, decoded in reader.iter_decoded_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            schemas[channel.topic] = schema.name
    for cam in rig.camera_names:
        assert counts.get(f"camera/{cam}", 0) > 0 and schemas[f"camera/{cam}"] == "perception.v1.RecordedFrame"
        assert counts.get(fx.image_topic(cam), 0) > 0 and schemas[fx.image_topic(cam)] == "foxglove.CompressedImage"
        assert schemas[fx.calibration_topic(cam)] == "foxglove.CameraCalibration"
    assert counts["detections"] > 0 and schemas[fx.DETECTIONS_TOPIC] == "foxglove.SceneUpdate"
    assert counts["sim/truth"] > 0 and counts[fx.TRUTH_TOPIC] > 0 and counts["status/fusion"] > 0
    assert schemas[fx.TF_TOPIC] == "foxglove.FrameTransforms"


@pytest.mark.parametrize("flag", [[], ["--no-foxglove"]])
def test_record_command_prints_the_summary_block(tmp_path, capsys, flag):
    """The block `closing_summary` reads: a header line, then indented lines; Foxglove's line only when on."""
    from perception.commands import record

    out_file = tmp_path / "empty.mcap"
    assert record.main([str(out_file), "-e", f"ipc://{tmp_path}/nobody", "--duration", "0.3", *flag]) == 0
    printed = capsys.readouterr().out
    log = tmp_path / "record.log"
    log.write_text(printed)
    lines = closing_summary(log)
    assert lines is not None and lines[-1].startswith(f"wrote 0 messages to {out_file}")
    assert any(line.startswith("foxglove channels: 0 messages") for line in lines) == (not flag)
