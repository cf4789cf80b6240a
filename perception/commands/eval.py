"""`perception eval`: nuScenes-style detection metrics of a model on simulated test scenes (the
evaluation itself, its metrics and plots are in perception/evaluate.py)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from perception import config as pcfg

log = logging.getLogger("perception.eval")


def build_parser() -> argparse.ArgumentParser:
    from perception import evaluate

    p = argparse.ArgumentParser(prog="perception eval", description=evaluate.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(pcfg.DEFAULT_MODEL_DIR), help="model directory")
    p.add_argument("--rig", default=str(pcfg.DEFAULT_RIG), help="rig YAML (cameras beyond the model's are an error; fewer are masked)")
    p.add_argument("--scenes", type=int, default=300, help="number of test scenes")
    p.add_argument("--seed", type=int, default=0, help="first test scene (sample id 4e9 + seed)")
    p.add_argument("--backend", default="torch", help="engine backend")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="write the metrics here (JSON)")
    p.add_argument("--plots", default=None, help="folder for pr_curves.png and scene.png (default: beside --json, else out/eval)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from perception.logs import setup_logging

    setup_logging("INFO")
    from perception.evaluate import format_table, plot_ap_vs_range, plot_pr, run_eval, save_scene_picture

    try:
        metrics, first, rig, model_cfg = run_eval(args.model, args.scenes, args.seed, args.rig, args.backend,
                                                  args.threads, progress=not args.no_progress)
    except (pcfg.ConfigError, FileNotFoundError) as e:
        log.error("%s", e)
        return 2
    curves = metrics.pop("_curves")
    print(format_table(metrics))
    plots = Path(args.plots) if args.plots else (Path(args.json).parent if args.json else Path("out/eval"))
    plots.mkdir(parents=True, exist_ok=True)
    plot_pr(curves, plots / "pr_curves.png", model_cfg.classes)
    plot_ap_vs_range(metrics["per_range"], plots / "ap_vs_range.png", model_cfg.classes)
    save_scene_picture(first, rig, plots / "scene.png")
    log.info("plots: %s, %s, %s", plots / "pr_curves.png", plots / "ap_vs_range.png", plots / "scene.png")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(metrics, indent=1))
        log.info("metrics: %s", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
