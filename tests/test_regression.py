"""Regression replay (perception/regression.py): the stored simulated drive tests/data/sim_drive.mcap,
replayed in lock-step through a real `perception fuse` (eager PyTorch, one thread), gives the stored
reference's Detections message by message, within the engine-time budget; offline replay gives
them too; a changed result is reported field by field with its size."""
from __future__ import annotations

import signal
from pathlib import Path

import pytest

from perception import config as pconfig

DATA = Path(__file__).parent / "data"
DRIVE = DATA / "sim_drive.mcap"
REF = DATA / "sim_drive_ref.json"

pytestmark = pytest.mark.skipif(not (pconfig.DEFAULT_MODEL_DIR / "model.safetensors").exists(),
                                reason="the reference is of the shipped model's weights")


def test_lockstep_replay_through_the_fusion_process_matches_the_reference(tmp_path, capsys):
    from test_player import endpoints, start_fuse, stop

    from perception.commands import replay

    cams, node = endpoints(tmp_path, pconfig.load_rig())
    proc = start_fuse(tmp_path, cams, node, "fuse.log")
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        code = replay.main([str(DRIVE), "--lockstep", "--camera-endpoints", *cams, "--node-endpoint", node,
                            "--ref", str(REF), "--no-progress", "--wait-node", "120", "--set-timeout", "60"])
    finally:
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])
        stop(proc)
    out = capsys.readouterr().out
    assert code == 0, out + (tmp_path / "fuse.log").read_text()[-3000:]
    assert "regression: 30 Detections against 30 in the reference: PASS" in out
    assert "frames read 180, sent 180, frame sets sent 30 (0 partial)" in out


def test_offline_replay_matches_the_reference_and_update_ref_writes_one(tmp_path, capsys):
    from perception.commands import replay
    from perception.regression import read_reference

    assert replay.main([str(DRIVE), "--offline", "--ref", str(REF), "--threads", "1", "--no-progress"]) == 0
    assert "PASS" in capsys.readouterr().out
    new = tmp_path / "ref.json"
    assert replay.main([str(DRIVE), "--offline", "--ref", str(new), "--update-ref", "--threads", "1",
                        "--no-progress"]) == 0
    assert read_reference(new)[0] == read_reference(REF)[0]
    assert replay.main([str(DRIVE), "--offline", "--update-ref"]) == 2          # no --ref
    assert replay.main([str(DRIVE), "--offline", "--lockstep"]) == 2            # live option


def test_a_changed_result_is_reported_by_field_and_size(tmp_path):
    from perception.regression import Tolerances, compare, read_reference, write_reference

    ref, tol, budget = read_reference(REF)
    assert tol == Tolerances() and len(ref) == 30
    assert compare(ref, ref, tol, budget).passed
    got = [type(m)() for m in ref]
    for g, m in zip(got, ref):
        g.CopyFrom(m)
        g.timings.inference_ms = 10.0
    got[3].objects[0].center.x += 0.05                       # moved 5 cm
    got[4].objects[1].score += tol.score / 2                  # within tolerance
    got[5].objects[0].yaw += 2 * 3.141592653589793            # the same angle
    del got[6].objects[-1]                                    # one object fewer
    got[7].backend = "onnxruntime-cpu"
    got[8].timings.inference_ms = budget.inference_ms_max + 1
    report = compare(ref, got, tol, budget)
    assert not report.passed
    fields = {(d.message, d.field) for d in report.differences}
    assert fields == {(3, "objects[0].center.x"), (6, "objects (count)"), (7, "backend")}
    moved = next(d for d in report.differences if d.field == "objects[0].center.x")
    assert moved.delta == pytest.approx(0.05, abs=1e-9)
    text = "\n".join(report.lines())
    assert "FAIL" in text and "objects[].center.x: 1, max |delta| 0.05" in text and "backend: 1" in text
    assert report.over_budget and "max engine time" in report.over_budget[0]
    assert "message count" in {d.field for d in compare(ref, got[:-1], tol, budget).differences}
    # the reference file round-trips exactly, and a damaged one is refused with its name
    path = tmp_path / "r.json"
    write_reference(path, ref, drive="x")
    assert read_reference(path)[0] == ref
    path.write_text(path.read_text().replace('"score": 0.0001', '"score": -1'))
    with pytest.raises(ValueError, match="score"):
        read_reference(path)
    path.write_text("{}")
    with pytest.raises(ValueError, match="not a regression reference"):
        read_reference(path)
