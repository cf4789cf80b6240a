"""perception fleet (perception/fleet.py, docs/fleet.md): drive lists, pooled matches equal to one
evaluation over all frames, resume records, --compare; with Ray installed, a local Ray run over
simulated drives plus a corrupt one whose pooled metrics equal one-by-one offline replay, and a
rerun into the same folder that repeats no work."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from perception import fleet
from perception.metrics import Box, all_matches, evaluate, evaluate_matches, pool_matches

CLASSES = ("car", "pedestrian", "traffic_cone")


def _boxes(rng, n: int, frames: range, scored: bool) -> list[Box]:
    return [Box(int(rng.choice(frames)), CLASSES[int(rng.integers(0, 3))], rng.normal(size=3) * 4, rng.uniform(0.5, 4, 3),
                float(rng.normal()), rng.normal(size=2), float(np.round(rng.uniform(), 2)) if scored else 1.0) for _ in range(n)]


def test_pooled_matches_equal_one_evaluation_over_all_frames():
    """Scores rounded to 0.01 so ties across parts exist: pooling keeps the order one list would have."""
    rng = np.random.default_rng(3)
    parts = [(_boxes(rng, 80, range(10 * k, 10 * k + 10), True), _boxes(rng, 50, range(10 * k, 10 * k + 10), False))
             for k in range(5)]
    whole = evaluate([d for d, _ in parts for d in d], [g for _, g in parts for g in g], CLASSES)
    per_part = [all_matches(d, g, CLASSES) for d, g in parts]
    pooled = evaluate_matches({c: pool_matches([m[c] for m in per_part]) for c in CLASSES}, CLASSES)
    whole.pop("_curves"), pooled.pop("_curves")
    assert json.dumps(pooled) == json.dumps(whole)
    mean_of_parts = np.mean([evaluate_matches(m, CLASSES)["mAP"] for m in per_part])
    assert mean_of_parts != pooled["mAP"]          # the run's mAP is not an average of per-drive mAPs


def test_matches_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    m = all_matches(_boxes(rng, 40, range(3), True), _boxes(rng, 30, range(3), False), CLASSES)
    fleet.save_matches(tmp_path / "m.npz", m)
    back = fleet.load_matches(tmp_path / "m.npz", CLASSES)
    for c in CLASSES:
        assert np.array_equal(back[c].scores, m[c].scores) and back[c].num_gt == m[c].num_gt
        assert np.array_equal(back[c].errors, m[c].errors, equal_nan=True)
        assert all(np.array_equal(back[c].tp[t], m[c].tp[t]) for t in m[c].tp)
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError):
        fleet.load_matches(tmp_path / "bad.npz", CLASSES)


def test_expand_drives_paths_globs_manifests(tmp_path):
    for name in ("a.mcap", "b.mcap", "sub/c.mcap"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "list.txt").write_text("# drives\nsub/c.mcap\nmissing.mcap\n\na.mcap  # again\n")
    got = fleet.expand_drives([str(tmp_path / "*.mcap"), str(tmp_path / "list.txt"), str(tmp_path / "none*.mcap")])
    assert [p.name for p in got.paths] == ["a.mcap", "b.mcap", "c.mcap"]
    assert sorted(b["error"] for b in got.bad) == ["does not exist", "the glob matches nothing"]
    assert fleet.drive_id(tmp_path / "a.mcap") != fleet.drive_id(tmp_path / "sub" / "a.mcap")


def test_compare_runs():
    def summary(out, m, drives):
        return {"format": fleet.FORMAT, "out": out, "metrics": {"mAP": m, "NDS": m / 2, "per_class": {"car": {"AP": m, "num_gt": 3}}},
                "per_drive": [{"path": p, "mAP": v} for p, v in drives.items()]}

    a = summary("A", 0.5, {"d1": 0.5, "d2": 0.6, "d3": 0.4, "only_a": 0.1})
    b = summary("B", 0.4, {"d1": 0.2, "d2": 0.7, "d3": 0.35, "only_b": 0.1})
    c = fleet.compare_runs(a, b)
    assert c["overall"]["mAP"]["delta"] == pytest.approx(-0.1) and c["overall"]["mATE"]["delta"] is None
    assert c["per_class"]["car"]["AP"]["delta"] == pytest.approx(-0.1)
    assert [r["path"] for r in c["regressed"]] == ["d1", "d3"] and [r["path"] for r in c["improved"]] == ["d2"]
    assert c["only_in_a"] == ["only_a"] and c["only_in_b"] == ["only_b"] and c["drives_compared"] == 3


def test_command_refuses_bad_arguments(tmp_path, capsys):
    from perception.commands import fleet as cmd

    assert cmd.main(["--out", str(tmp_path)]) == 2
    assert cmd.main([str(tmp_path / "x.mcap")]) == 2
    assert cmd.main([str(tmp_path / "x.mcap"), "--out", str(tmp_path), "--workers", "0"]) == 2
    assert cmd.main(["--compare", str(tmp_path), str(tmp_path), "--out", str(tmp_path)]) == 2
    assert cmd.main(["--compare", str(tmp_path), str(tmp_path)]) == 2          # no summary.json there
    err = capsys.readouterr().err
    assert "--out DIR is required" in err and "no DRIVES" in err and "not a fleet run summary" in err


def test_a_corrupt_drive_is_a_failed_record_not_an_exception(tmp_path):
    (tmp_path / "corrupt.mcap").write_bytes(b"\x89MCAP0\r\n" + bytes(range(256)) * 4)
    runner = fleet.DriveRunner(fleet.FleetConfig(fleet.ReplayConfig(threads=1)))
    rec = runner.process(tmp_path / "corrupt.mcap", tmp_path / "out")
    assert rec["status"] == "failed" and "corrupt.mcap" in rec["error"]
    assert not list((tmp_path / "out").rglob(fleet.DONE))
    assert fleet.done_record(tmp_path / "out", tmp_path / "corrupt.mcap") is None


# ------------------------------------------------------------------------------------------ with Ray

def _raylets() -> int:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return sum("raylet/raylet" in line or "gcs_server" in line for line in out.splitlines())


@pytest.fixture(scope="module")
def drives(tmp_path_factory):
    from perception.sim.drive import write_sim_drive

    d = tmp_path_factory.mktemp("fleet_drives")
    for i in range(4):
        write_sim_drive(d / f"drive{i:02d}.mcap", seconds=1.0, seed=200 + i)
    (d / "zz_corrupt.mcap").write_bytes(b"this is not an MCAP file" * 100)
    return d


@pytest.mark.slow
@pytest.mark.integration
def test_fleet_on_local_ray_equals_one_by_one_replay_and_resumes(tmp_path, drives):
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'perception[fleet]')")
    from perception.replay import ReplayConfig

    before = _raylets()
    config = fleet.FleetConfig(ReplayConfig(backend="torch", threads=1))
    opts = fleet.RayOptions(workers=2, cpus_per_worker=1, num_cpus=2, object_store_mb=128)
    listed = fleet.expand_drives([str(drives / "*.mcap")])
    assert len(listed.paths) == 5
    out = tmp_path / "run"
    seen: list[dict] = []
    summary = fleet.run_fleet(listed, out, config, opts, on_progress=lambda p, rec: seen.append(rec))
    assert not ray.is_initialized() and _raylets() == before      # local Ray stopped, nothing left behind
    assert len(seen) == 5 and summary["run"]["ray_error"] is None
    assert summary["drives"]["done"] == 4 and summary["drives"]["failed"] == 1
    assert summary["failed"][0]["path"].endswith("zz_corrupt.mcap")
    assert (out / "summary.json").is_file()

    # the reference: every drive through OfflineReplay in this process, one evaluation over all frames
    reference, replayed = fleet.replay_one_by_one(listed.paths[:4], ReplayConfig(backend="torch", threads=1))
    for p, s in zip(listed.paths[:4], replayed):
        rec = json.loads((out / "drives" / fleet.drive_id(p) / fleet.DONE).read_text())
        assert rec["sets"] == s.sets and rec["detections"] == s.detections and rec["mAP"] == s.mAP
    assert json.dumps(summary["metrics"]) == json.dumps(reference)
    assert summary["worst"][0]["mAP"] == min(r["mAP"] for r in summary["per_drive"])

    # a rerun into the same folder repeats no drive (only the corrupt one is tried again)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.parent.name != "run"}
    again = fleet.run_fleet(listed, out, config, opts)
    assert again["run"]["resumed"] == 4 and again["run"]["replayed"] == 1 and again["run"]["new_frame_sets"] == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert json.dumps(again["metrics"]) == json.dumps(summary["metrics"])
    assert _raylets() == before

    # a drive whose outputs were cut (no done.json: a killed run) is done again
    (out / "drives" / fleet.drive_id(listed.paths[0]) / fleet.DONE).unlink()
    third = fleet.run_fleet(listed, out, config, opts)
    assert third["run"]["resumed"] == 3 and third["run"]["replayed"] == 2
    assert json.dumps(third["metrics"]) == json.dumps(summary["metrics"])

    # another model configuration may not reuse the folder
    with pytest.raises(fleet.FleetError):
        fleet.run_fleet(listed, out, fleet.FleetConfig(ReplayConfig(backend="torch", threads=1, score_threshold=0.5)), opts)
