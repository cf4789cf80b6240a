"""Velocity error (nuScenes AVE) of the model's single-frame velocity against the tracker's
(perception/fusion/tracker.py), on simulated drives with ground truth: docs/velocity.md.

Each drive is replayed once through the fusion pipeline with tracking off; the same Detections
are then scored as they are (model velocity) and after the tracker ran over them in order, so the
two differ only in velocity and the detections are identical.

    python scripts/velocity_eval.py --drives 12 --seconds 4 --seed0 3000 [--model DIR] [--json OUT]
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

from perception import config as pconfig


def replay_drive(path: Path, cfg, engine) -> list:
    """[(Detections, GroundTruth or None)] of one drive, tracking off, in order."""
    from perception.record import read_messages
    from perception.replay import OfflineReplay

    replay = OfflineReplay(cfg, engine=engine)
    out: list = []
    replay.run(path, on_detections=lambda m: out.append(copy.deepcopy(m)))
    truth = {m.msg.stamp_ns: m.msg for m in read_messages(path) if m.topic == "sim/truth"}
    return [(d, truth.get(min(truth, key=lambda s: abs(s - d.stamp_ns)))) for d in out]


def score(drives: list[list], classes, tracked: bool) -> dict:
    """Pooled metrics over all drives; with tracked=True a fresh Tracker runs over each drive first."""
    from perception.boxes import MIN_VISIBLE_PX, metric_boxes
    from perception.fusion.tracker import Tracker
    from perception.metrics import evaluate

    dets, gts, frame = [], [], 0
    for drive in drives:
        tracker = Tracker()
        for msg, truth in drive:
            objects = copy.deepcopy(list(msg.objects))
            if tracked:
                tracker.update(objects, msg.stamp_ns)
            frame += 1
            dets += metric_boxes(objects, frame, classes)
            gts += metric_boxes([o for o in truth.objects if o.visible_pixels >= MIN_VISIBLE_PX], frame, classes)
    return evaluate(dets, gts, classes)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--drives", type=int, default=12)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--seed0", type=int, default=3000, help="world seeds seed0 .. seed0+drives-1")
    p.add_argument("--model", default=str(pconfig.DEFAULT_MODEL_DIR))
    p.add_argument("--cache", default="/tmp/velocity_drives", help="where the drives are written (kept)")
    p.add_argument("--json", help="write both results here")
    a = p.parse_args()

    from perception.replay import OfflineReplay, ReplayConfig
    from perception.sim.drive import write_sim_drive

    root = Path(a.cache)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    t = time.perf_counter()
    for seed in range(a.seed0, a.seed0 + a.drives):
        path = root / f"world{seed}_{a.seconds:g}s.mcap"
        if not path.exists():
            write_sim_drive(path.with_suffix(".tmp"), seconds=a.seconds, seed=seed)
            path.with_suffix(".tmp").rename(path)
        paths.append(path)
    print(f"{len(paths)} drives ready in {time.perf_counter() - t:.0f} s")

    cfg = ReplayConfig(model=a.model, backend="torch", threads=1, tracking=False)
    engine = OfflineReplay(cfg).engine
    t = time.perf_counter()
    drives = [replay_drive(path, cfg, engine) for path in paths]
    print(f"replayed {sum(len(d) for d in drives)} frame sets in {time.perf_counter() - t:.0f} s")

    classes = tuple(OfflineReplay(cfg, engine=engine).model_cfg.classes)
    results = {name: score(drives, classes, tracked) for name, tracked in (("model", False), ("tracked", True))}
    for r in results.values():
        r.pop("_curves")
    print(f"{'class':14s} {'AVE model':>10s} {'AVE tracked':>12s} {'AP':>6s} {'truth':>6s}")
    for c in classes:
        m, tr = results["model"]["per_class"][c], results["tracked"]["per_class"][c]
        ave = [f"{r['AVE']:.3f}" if r["AVE"] is not None else "n/a" for r in (m, tr)]
        print(f"{c:14s} {ave[0]:>10s} {ave[1]:>12s} {m['AP']:6.3f} {m['num_gt']:6d}")
    for name, r in results.items():
        print(f"{name:8s} mAP {r['mAP']:.4f} NDS {r['NDS']:.4f} mAVE {r['mAVE']:.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"drives": [str(p) for p in paths], **results}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
