"""Detection quality and lock-step rate on MuJoCo-rendered streets, next to the built-in world, both
through the client API (perception.client) against one fusion node.

    MUJOCO_GL=egl .venv/bin/python scripts/mujoco_eval.py --scenes 50 \
        --json docs/measurements/mujoco_eval.json --picture docs/images/mujoco_scene.png

For each of N scenes of each world: render the rig's six cameras, step the frame set through the
session (lock-step) and score the Detections against the world's visible ground truth with
perception/metrics.py (nuScenes-style, as `perception eval`; the node publishes scores >= 0.05 here,
`perception eval`'s cut-off). The built-in world's scenes are `perception eval`'s test samples
(TEST_SEED_BASE + seed + i). Also: the same MuJoCo scenario stepped twice (are the detections
identical?), steps per second through the client per world with where the time goes (render,
truth, step), and the engine alone (the same backend and threads, in this process) for comparison.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def truth_boxes(boxes, frame: int, classes):
    """Visible truth as metrics Boxes; metrics cuts it by class range, as `perception eval` does."""
    from perception.metrics import Box

    return [Box(frame, classes[b.cls], np.asarray(b.center, float), np.asarray(b.size, float), float(b.yaw),
                np.asarray(b.velocity, float), 1.0) for b in boxes]


def objects_key(detections) -> list[tuple]:
    """What a step detected (class, score, box), for comparing two runs."""
    return [(o.object_class, o.score, o.center.x, o.center.y, o.center.z, o.size.x, o.size.y, o.size.z, o.yaw,
             o.velocity.x, o.velocity.y) for o in detections.objects]


def run_world(session, world: str, scenes: int, seed: int, cfg, picture_first: bool):
    """Score `scenes` scenes of one world; returns (dets, gts, timings, first scene for a picture)."""
    from perception import boxes as pboxes
    from perception.boxes import MIN_VISIBLE_PX

    rig = session.rig
    classes = tuple(cfg.classes)
    dets, gts = [], []
    t_render, t_truth, t_step, t_total = [], [], [], []
    first = None
    for i in range(scenes):
        t0 = time.perf_counter()
        if world == "mujoco":
            from perception.bridges.mujoco_world import MujocoStreet

            street = MujocoStreet(seed + i, rig)
            tr = time.perf_counter()
            images = street.render()
            tt = time.perf_counter()
            truth = street.ground_truth(0)
            visible = [b for b, o in zip(street.boxes(), truth.objects) if o.visible_pixels >= MIN_VISIBLE_PX]
            street.close()
        else:
            from perception.dataset import TEST_SEED_BASE, sample_instant
            from perception.sim import World, render
            from perception.sim.truth import ground_truth_message

            world_seed, _, t_ns = sample_instant(TEST_SEED_BASE + seed + i)
            w = World(world_seed)
            scene = w.scene_at(t_ns)
            tr = time.perf_counter()
            images = {c.name: render(scene, c) for c in rig.cameras}
            tt = time.perf_counter()
            truth = ground_truth_message(w, 0, world_seed, rig)
            visible = [b for b, o in zip(scene.boxes, truth.objects) if o.visible_pixels >= MIN_VISIBLE_PX]
        ts = time.perf_counter()
        r = session.step(images=images, stamp_ns=int(i * 1e8), truth=truth, timeout_s=60.0)
        te = time.perf_counter()
        t_render.append(tt - tr)
        t_truth.append(ts - tt)
        t_step.append(te - ts)
        t_total.append(te - t0)
        d = pboxes.metric_boxes(r.detections.objects, i, classes)
        g = truth_boxes(visible, i, classes)
        dets += d
        gts += g
        if first is None and picture_first:
            first = ([images[c.name] for c in rig.cameras], g, [b for b in d if b.score >= 0.3])
    ms = lambda v: round(1e3 * statistics.median(v), 1)
    timing = {"steps_per_s": round(len(t_total) / sum(t_total), 3), "per_step_ms_median": ms(t_total),
              "render_6_views_ms_median": ms(t_render), "render_per_view_ms_median": round(ms(t_render) / len(rig.cameras), 1),
              "truth_ms_median": ms(t_truth), "client_step_ms_median": ms(t_step),
              "client_steps_per_s_excluding_render_and_truth": round(len(t_step) / sum(t_step), 3)}
    return dets, gts, timing, first


def lockstep_twice(session, seed: int, steps: int) -> dict:
    from perception.bridges.mujoco_world import MujocoStreet, drive

    runs = []
    for _ in range(2):
        with MujocoStreet(seed, session.rig) as street:
            runs.append([objects_key(r.detections) for r, _ in drive(session, street, steps, dt_s=0.1, timeout_s=60.0)])
    return {"seed": seed, "steps": steps, "identical": runs[0] == runs[1],
            "detections_per_step": [len(s) for s in runs[0]]}


def scenario_rate(session, world: str, seed: int, steps: int) -> dict:
    """Lock-step rate of one scenario (one world stepped 0.1 s at a time) through the client: steps per
    second with where the time goes (render, truth, client step). The first step (renderer and
    world set-up) is left out."""
    rig = session.rig
    t_render, t_truth, t_step = [], [], []
    if world == "mujoco":
        from perception.bridges.mujoco_world import MujocoStreet

        street = MujocoStreet(seed, rig)
        frame = lambda k: (street.render, lambda: street.ground_truth(0), lambda: street.advance(0.1))
    else:
        from perception.sim import World, render
        from perception.sim.truth import ground_truth_message

        w = World(seed)
        state = {"t": 0}

        def _render():
            scene = w.scene_at(state["t"])
            return {c.name: render(scene, c) for c in rig.cameras}

        def _advance():
            state["t"] += 100_000_000

        frame = lambda k: (_render, lambda: ground_truth_message(w, state["t"], seed, rig), _advance)
    for k in range(steps + 1):
        do_render, do_truth, do_advance = frame(k)
        t0 = time.perf_counter()
        images = do_render()
        t1 = time.perf_counter()
        truth = do_truth()
        t2 = time.perf_counter()
        session.step(images=images, stamp_ns=int(k * 1e8), truth=truth, timeout_s=60.0)
        t3 = time.perf_counter()
        do_advance()
        if k:
            t_render.append(t1 - t0)
            t_truth.append(t2 - t1)
            t_step.append(t3 - t2)
    if world == "mujoco":
        street.close()
    total = sum(t_render) + sum(t_truth) + sum(t_step)
    ms = lambda v: round(1e3 * statistics.median(v), 1)
    return {"world": world, "steps": steps, "steps_per_s": round(steps / total, 3),
            "steps_per_s_without_truth": round(steps / (sum(t_render) + sum(t_step)), 3),
            "client_steps_per_s_alone": round(steps / sum(t_step), 3),
            "render_6_views_ms_median": ms(t_render), "render_per_view_ms_median": round(ms(t_render) / len(rig.cameras), 1),
            "truth_ms_median": ms(t_truth), "client_step_ms_median": ms(t_step)}


def engine_alone(backend: str, threads: int, iters: int = 30) -> dict:
    from perception.config import DEFAULT_MODEL_DIR
    from perception.inputs import example_inputs
    from perception.model.config import load_model_config
    from perception.model.weights import CONFIG_FILE
    from perception.runtime import create_engine

    cfg = load_model_config(DEFAULT_MODEL_DIR / CONFIG_FILE)
    engine = create_engine(backend, DEFAULT_MODEL_DIR, threads=threads)
    inputs = {k: v.numpy() for k, v in zip(("images", "intrinsics_inv", "ego_from_camera", "camera_mask"), example_inputs(cfg, 1))}
    for _ in range(3):
        engine.infer(inputs)
    t = []
    for _ in range(iters):
        t0 = time.perf_counter()
        engine.infer(inputs)
        t.append(time.perf_counter() - t0)
    return {"backend": engine.name, "threads": threads, "infer_ms_median": round(1e3 * statistics.median(t), 1),
            "infer_per_s": round(1 / statistics.median(t), 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenes", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", default="torch")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--worlds", default="mujoco,builtin")
    p.add_argument("--lockstep-steps", type=int, default=5)
    p.add_argument("--rate-steps", type=int, default=20, help="steps of one scenario per world for the lock-step rate")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--picture", type=Path, default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("MUJOCO_GL", "egl")
    import cv2

    from perception.client import Session
    from perception.evaluate import format_table
    from perception.metrics import evaluate, evaluate_by_range
    from perception.model.config import load_model_config

    cv2.setNumThreads(1)
    report: dict = {"scenes": args.scenes, "seed": args.seed, "backend": args.backend, "threads": args.threads,
                    "score_threshold": 0.05, "worlds": {}}
    with Session.start(backend=args.backend, threads=args.threads, score_threshold=0.05) as session:
        cfg = load_model_config(Path(session_model_dir()) / "config.yaml")
        classes = tuple(cfg.classes)
        for world in args.worlds.split(","):
            print(f"== {world}: {args.scenes} scenes", flush=True)
            dets, gts, timing, first = run_world(session, world, args.scenes, args.seed, cfg,
                                                 picture_first=world == "mujoco" and args.picture is not None)
            m = evaluate(dets, gts, classes)
            m["per_range"] = evaluate_by_range(dets, gts, classes)
            m.update(scenes=args.scenes, backend=args.backend, timing=timing)
            m.pop("_curves", None)          # PR curves: for plots, not for the JSON (as perception eval)
            for band in m["per_range"]:
                band.pop("_curves", None)
            print(format_table(m))
            print(json.dumps(timing))
            report["worlds"][world] = m
            if first is not None:
                from perception.viz import scene_picture

                args.picture.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(args.picture), scene_picture(first[0], session.rig, first[1], first[2]),
                            [cv2.IMWRITE_PNG_COMPRESSION, 9])
                print(f"picture: {args.picture} ({args.picture.stat().st_size // 1024} KB)")
        if "mujoco" in args.worlds.split(",") and args.lockstep_steps > 0:
            report["lockstep_twice"] = lockstep_twice(session, args.seed, args.lockstep_steps)
            print("lock-step twice:", json.dumps(report["lockstep_twice"]))
        report["scenario_rate"] = {}
        for world in args.worlds.split(","):
            if args.rate_steps > 0:
                report["scenario_rate"][world] = scenario_rate(session, world, args.seed, args.rate_steps)
                print("lock-step rate:", json.dumps(report["scenario_rate"][world]), flush=True)
    report["engine_alone"] = engine_alone(args.backend, args.threads)
    print("engine alone:", json.dumps(report["engine_alone"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))
    return 0


def session_model_dir() -> Path:
    from perception.config import DEFAULT_MODEL_DIR

    return DEFAULT_MODEL_DIR


if __name__ == "__main__":
    sys.exit(main())
