"""`perception eval`: nuScenes-style detection metrics of a model on simulated test scenes.

    perception eval --scenes 500 --seed 0 --json out/eval/report.json
    perception eval --rig rigs/unseen_5cam.yaml        # a rig the model was never trained on

Scenes come from the test split (sample ids 4e9 + seed + i: worlds from 1e9 on), which
training never uses. Each scene
goes through the same preprocessing and engine interface as the live node. Writes the metrics
(JSON, including `per_range`: mAP and per-class AP in bands of distance from the ego), a
precision-recall plot, an AP-against-distance plot and a picture of one scene (camera views
with projected boxes, and the BEV with truth and detections).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from perception import config as pcfg
from perception.model.weights import CONFIG_FILE

log = logging.getLogger("perception.eval")


def pad_to_model(inputs: dict, num_cameras: int) -> dict:
    """A rig with fewer cameras than the model runs with the extra slots masked."""
    n = inputs["images"].shape[1]
    if n > num_cameras:
        raise pcfg.ConfigError(f"rig has {n} cameras, the model at most {num_cameras}")
    if n == num_cameras:
        return inputs
    pad = num_cameras - n
    out = {}
    for k, v in inputs.items():
        widths = [(0, 0)] * v.ndim
        widths[1] = (0, pad)
        out[k] = np.pad(v, widths)
    eye3, eye4 = np.eye(3, dtype=np.float32), np.eye(4, dtype=np.float32)
    out["intrinsics_inv"][:, n:] = eye3
    out["ego_from_camera"][:, n:] = eye4
    return out


def truth_to_metric_boxes(boxes, frame: int, classes):
    """Simulator boxes (render_sample_visible) -> metrics.Box; metrics cuts them by class range."""
    from perception.metrics import Box

    return [Box(frame, classes[int(b.cls)], np.asarray(b.center, np.float64), np.asarray(b.size, np.float64),
                float(b.yaw), np.asarray(b.velocity, np.float64), 1.0) for b in boxes]


def to_metric_boxes(arr_or_out, frame: int, classes, from_outputs: bool):
    from perception.metrics import Box

    boxes = []
    if from_outputs:
        out = arr_or_out
        for b, s, c in zip(out["det_boxes"][0], out["det_scores"][0], out["det_labels"][0]):
            if s >= 0.05:
                boxes.append(Box(frame, classes[int(c)], b[0:3].astype(np.float64), b[3:6].astype(np.float64),
                                 float(b[6]), b[7:9].astype(np.float64), float(s)))
    else:
        for r in arr_or_out:
            if r[0] >= 0:
                boxes.append(Box(frame, classes[int(r[0])], r[1:4].astype(np.float64), r[4:7].astype(np.float64),
                                 float(r[7]), r[8:10].astype(np.float64), 1.0))
    return boxes


def run_eval(model_dir, scenes: int, seed: int, rig_path, backend: str = "torch", threads: int = 2,
             progress: bool = True, engine=None):
    """Returns (metrics dict, per-scene records for pictures)."""
    from tqdm import tqdm

    from perception.dataset import TEST_SEED_BASE, RigRandomization, render_sample_visible
    from perception.metrics import evaluate, evaluate_by_range
    from perception.model.config import load_model_config
    from perception.runtime import create_engine

    model_cfg = load_model_config(Path(model_dir) / CONFIG_FILE)
    engine = engine or create_engine(backend, model_dir, threads=threads)
    rig = pcfg.load_rig(rig_path)
    dets, gts, first = [], [], None
    t_model = []
    for i in tqdm(range(scenes), desc="evaluating", unit="scene", disable=not progress):
        sample_id = TEST_SEED_BASE + seed + i
        images, kinv, T, boxes = render_sample_visible(sample_id, rig, model_cfg, RigRandomization.none())
        inputs = pad_to_model({"images": images[None], "intrinsics_inv": kinv[None], "ego_from_camera": T[None],
                               "camera_mask": np.ones((1, len(rig.cameras)), np.float32)}, model_cfg.num_cameras)
        t0 = time.perf_counter()
        out = engine.infer(inputs)
        t_model.append(time.perf_counter() - t0)
        d = to_metric_boxes(out, i, model_cfg.classes, True)
        g = truth_to_metric_boxes(boxes, i, model_cfg.classes)
        dets += d
        gts += g
        if first is None:
            first = (sample_id, g, [b for b in d if b.score >= 0.3])
    metrics = evaluate(dets, gts, model_cfg.classes)
    metrics["per_range"] = evaluate_by_range(dets, gts, model_cfg.classes)
    metrics.update(scenes=scenes, seed=seed, test_sample_ids=[TEST_SEED_BASE + seed, TEST_SEED_BASE + seed + scenes - 1],
                   rig=str(rig_path), model=str(model_dir), backend=engine.name,
                   engine_ms_median=float(np.median(t_model) * 1e3))
    return metrics, first, rig, model_cfg


def plot_pr(curves: dict, path: Path, classes) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thresholds = (0.5, 1.0, 2.0, 4.0)
    fig, axes = plt.subplots(1, len(thresholds), figsize=(4 * len(thresholds), 3.6), sharey=True)
    for ax, thr in zip(axes, thresholds):
        for cls in classes:
            rec, prec = curves[cls][thr]
            if len(rec):
                ax.plot(rec, prec, label=cls)
        ax.set_title(f"match within {thr} m")
        ax.set_xlabel("recall")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("precision")
    axes[-1].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _band_label(band: dict) -> str:
    return f"{band['lo']:.0f}-{band['hi']:.0f} m" if band["hi"] is not None else f">{band['lo']:.0f} m"


def plot_ap_vs_range(per_range: list[dict], path: Path, classes) -> None:
    """AP per class and mAP in each distance band, with each band's share of the ground truth:
    where the score is won and lost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [_band_label(b) for b in per_range]
    x = np.arange(len(per_range))
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(7, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for cls in classes:
        ax.plot(x, [b["AP"][cls] for b in per_range], marker="o", label=cls)
    ax.plot(x, [b["mAP"] for b in per_range], color="k", lw=2.5, marker="s", label="mAP")
    ax.set_ylabel("AP (mean over 0.5/1/2/4 m)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    total = sum(sum(b["num_gt"].values()) for b in per_range) or 1
    ax_n.bar(x, [100 * sum(b["num_gt"].values()) / total for b in per_range], color="0.6")
    ax_n.set_ylabel("% of truth")
    ax_n.set_xticks(x, labels)
    ax_n.set_xlabel("ground-plane distance from the ego origin")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_scene_picture(first, rig, path: Path) -> None:
    import cv2

    from perception.dataset import sample_instant
    from perception.sim import World, render

    sample_id, gt, det = first
    world_seed, _, t_ns = sample_instant(sample_id)
    scene = World(world_seed).scene_at(t_ns)
    images = [render(scene, cam) for cam in rig.cameras]
    from perception.viz import scene_picture

    cv2.imwrite(str(path), scene_picture(images, rig, gt, det))


def format_table(m: dict) -> str:
    lines = [f"{'class':<14}{'AP':>6}{'AP@0.5':>8}{'AP@1':>7}{'AP@2':>7}{'AP@4':>7}{'ATE':>7}{'ASE':>7}{'AOE':>7}{'AVE':>7}{'GT':>7}"]
    f = lambda v: f"{v:7.3f}" if v is not None else "      -"
    for cls, r in m["per_class"].items():
        lines.append(f"{cls:<14}{r['AP']:6.3f}{r['AP@0.5']:8.3f}{r['AP@1.0']:7.3f}{r['AP@2.0']:7.3f}{r['AP@4.0']:7.3f}"
                     f"{f(r['ATE'])}{f(r['ASE'])}{f(r['AOE'])}{f(r['AVE'])}{r['num_gt']:7d}")
    lines.append(f"mAP {m['mAP']:.3f}   NDS {m['NDS']:.3f}   mATE {m['mATE']:.3f}  mASE {m['mASE']:.3f}  "
                 f"mAOE {m['mAOE']:.3f}  mAVE {m['mAVE']:.3f}   ({m['scenes']} scenes, {m['backend']})")
    for band in m.get("per_range", ()):
        n = sum(band["num_gt"].values())
        lines.append(f"  {_band_label(band):<10} mAP {band['mAP']:.3f}  ({n} truth boxes)  "
                     + "  ".join(f"{c} {ap:.2f}" for c, ap in band["AP"].items()))
    return "\n".join(lines)
