"""`perception render`: look at the simulated world through a rig, and time the renderer."""
from __future__ import annotations

import argparse
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

from perception import config as pconfig

EXAMPLES = """\
examples:
  perception render                          # out/sim_frameset.png from seed 0 at t = 0
  perception render --seed 7 --time-s 12.5 --overlay --out out/seed7.png
  perception render --bench 50               # median ms per 6-camera frame set on one thread
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="perception render",
        description="Render the built-in simulated world into every camera of a rig and write a mosaic "
                    "(camera views in a grid with their names, plus a bird's-eye view of the ground-truth "
                    "boxes: ego at the centre, x forward up). With --bench, time the renderer instead.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rig", type=Path, default=pconfig.DEFAULT_RIG, metavar="PATH",
                   help="rig YAML (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="world seed: layout, traffic, materials, lighting (default: 0)")
    p.add_argument("--time-s", type=_decimal, default=Decimal(0), metavar="SECONDS",
                   help="world time in seconds; epoch seconds work too, the world repeats every hour (default: 0)")
    p.add_argument("--out", type=Path, default=Path("out/sim_frameset.png"), metavar="PATH.png",
                   help="mosaic to write; parent folders are created (default: %(default)s)")
    p.add_argument("--overlay", action="store_true", help="draw the ground-truth boxes into the camera views")
    p.add_argument("--bench", type=int, default=0, metavar="N",
                   help="render N frame sets at successive times (50 ms apart) on one thread, print the median "
                        "milliseconds per frame set and frame sets per second, and write no image")
    return p


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import cv2

    from perception.sim.mosaic import draw_box, make_mosaic
    from perception.sim.render import render_rig
    from perception.sim.scene import CLASSES
    from perception.sim.world import World

    try:
        rig = pconfig.load_rig(args.rig)
    except pconfig.ConfigError as e:
        print(f"perception render: {e}", file=sys.stderr)
        return 2
    t_ns = int(args.time_s * 1_000_000_000)
    world = World(args.seed)
    if args.bench:
        return bench(world, rig, t_ns, args.bench)
    scene = world.scene_at(t_ns)
    images = render_rig(scene, rig)
    if args.overlay:
        for img, cam in zip(images, rig.cameras):
            for box in scene.boxes:
                draw_box(img, cam, box)
    mosaic = make_mosaic(rig, images, scene)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), mosaic):
        print(f"perception render: could not write {args.out}", file=sys.stderr)
        return 1
    counts = {CLASSES[c]: sum(b.cls == c for b in scene.boxes) for c in range(len(CLASSES))}
    print(f"wrote {args.out} ({mosaic.shape[1]}x{mosaic.shape[0]}): seed {args.seed}, t {t_ns} ns, "
          f"{len(scene.boxes)} boxes " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    return 0


def bench(world, rig, t0_ns: int, n: int) -> int:
    """Time scene_at + render_rig for n frame sets on one thread and print the result."""
    from perception.sim.render import time_rendering

    r = time_rendering(world, rig, t0_ns, n)
    med = r["median_ms"]
    size = f"{rig.cameras[0].width}x{rig.cameras[0].height}"
    print(f"{n} frame sets of {len(rig.cameras)} cameras ({size}), one thread: median {med:.1f} ms per frame set "
          f"({1000.0 / med:.1f} frame sets/s); p90 {r['p90_ms']:.1f} ms; "
          f"scene_at {r['scene_median_ms']:.1f} ms of it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
