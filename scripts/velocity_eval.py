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
import math
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


def score(drives: list[list], classes, tracked: bool, ages: list | None = None, update_s: list | None = None) -> dict:
    """Pooled metrics over all drives; with tracked=True a fresh Tracker runs over each drive first.
    `ages` (a list) receives (track age in frame sets, tracked error, model error) in m/s for every
    detection within 2 m of a truth object of its class; `update_s` the seconds of each Tracker.update."""
    from perception.boxes import MIN_VISIBLE_PX, metric_boxes
    from perception.fusion.tracker import Tracker
    from perception.metrics import evaluate

    dets, gts, frame = [], [], 0
    for drive in drives:
        tracker = Tracker()
        for msg, truth in drive:
            objects = copy.deepcopy(list(msg.objects))
            if tracked:
                t0 = time.perf_counter()
                tracker.update(objects, msg.stamp_ns)
                if update_s is not None:
                    update_s.append(time.perf_counter() - t0)
            frame += 1
            visible = [o for o in truth.objects if o.visible_pixels >= MIN_VISIBLE_PX]
            dets += metric_boxes(objects, frame, classes)
            gts += metric_boxes(visible, frame, classes)
            if tracked and ages is not None:
                hits = {t.track_id: t.hits for t in tracker.tracks}
                for o, raw in zip(objects, msg.objects):
                    near = [(math.dist((g.center.x, g.center.y), (o.center.x, o.center.y)), g) for g in visible
                            if g.object_class == o.object_class]
                    d, g = min(near, key=lambda x: x[0], default=(99.0, None))
                    if g is not None and d < 2.0:
                        ages.append((hits[o.track_id], math.dist((o.velocity.x, o.velocity.y), (g.velocity.x, g.velocity.y)),
                                     math.dist((raw.velocity.x, raw.velocity.y), (g.velocity.x, g.velocity.y))))
    return evaluate(dets, gts, classes)


AGE_BANDS = ((1, 1), (2, 3), (4, 6), (7, 10), (11, 20), (21, 10**6))


def age_table(ages: list) -> list[dict]:
    """Mean and median velocity error of tracked and model velocity per band of track age."""
    import numpy as np

    a = np.array(ages).reshape(-1, 3)
    out = []
    for lo, hi in AGE_BANDS:
        s = a[(a[:, 0] >= lo) & (a[:, 0] <= hi)]
        if len(s):
            out.append({"lo": lo, "hi": hi, "n": len(s), "tracked_mean": float(s[:, 1].mean()),
                        "tracked_median": float(np.median(s[:, 1])), "model_mean": float(s[:, 2].mean()),
                        "model_median": float(np.median(s[:, 2]))})
    return out


def plot_ages(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['lo']}" if r["lo"] == r["hi"] else (f"{r['lo']}-{r['hi']}" if r["hi"] < 10**6 else f">{r['lo'] - 1}")
              for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(x, [r["model_mean"] for r in rows], "o-", label="model, one frame (mean)")
    ax.plot(x, [r["tracked_mean"] for r in rows], "o-", label="tracked (mean)")
    ax.plot(x, [r["tracked_median"] for r in rows], "o--", label="tracked (median)")
    ax.set_xticks(list(x), labels)
    ax.set_xlabel("track age (frame sets at 10 Hz)")
    ax.set_ylabel("velocity error (m/s)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--drives", type=int, default=12)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--seed0", type=int, default=3000, help="world seeds seed0 .. seed0+drives-1")
    p.add_argument("--model", default=str(pconfig.DEFAULT_MODEL_DIR))
    p.add_argument("--cache", default="/tmp/velocity_drives", help="where the drives are written (kept)")
    p.add_argument("--json", help="write both results here")
    p.add_argument("--plot", help="write the error-by-track-age plot here (PNG)")
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
    ages: list = []
    update_s: list = []
    results = {"model": score(drives, classes, False), "tracked": score(drives, classes, True, ages, update_s)}
    for r in results.values():
        r.pop("_curves")
    by_age = age_table(ages)
    print(f"{'class':14s} {'AVE model':>10s} {'AVE tracked':>12s} {'AP':>6s} {'truth':>6s}")
    for c in classes:
        m, tr = results["model"]["per_class"][c], results["tracked"]["per_class"][c]
        ave = [f"{r['AVE']:.3f}" if r["AVE"] is not None else "n/a" for r in (m, tr)]
        print(f"{c:14s} {ave[0]:>10s} {ave[1]:>12s} {m['AP']:6.3f} {m['num_gt']:6d}")
    for name, r in results.items():
        print(f"{name:8s} mAP {r['mAP']:.4f} NDS {r['NDS']:.4f} mAVE {r['mAVE']:.3f}")
    n_obj = sum(len(m.objects) for d in drives for m, _ in d) / max(1, sum(len(d) for d in drives))
    print(f"Tracker.update: median {1e3 * sorted(update_s)[len(update_s) // 2]:.2f} ms, max {1e3 * max(update_s):.2f} ms "
          f"per frame set ({n_obj:.1f} objects on average)")
    print("velocity error of detections within 2 m of truth, by track age (frame sets):")
    for r in by_age:
        print(f"  {r['lo']:>3}-{r['hi'] if r['hi'] < 10**6 else '':<3} n {r['n']:5d}  tracked mean {r['tracked_mean']:.2f} "
              f"median {r['tracked_median']:.2f}  model mean {r['model_mean']:.2f} median {r['model_median']:.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"drives": [str(p) for p in paths], "by_track_age": by_age,
                                           "tracker_update_ms_median": 1e3 * sorted(update_s)[len(update_s) // 2], **results},
                                           indent=1, default=float))
    if a.plot:
        plot_ages(by_age, Path(a.plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
