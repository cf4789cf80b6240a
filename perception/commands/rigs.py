"""`perception rigs`: camera rigs from the any-rig distribution (perception/rigs.py).

    perception rigs generate --seed 0 --count 4 --out rigs/heldout          # held-out rigs: training never samples them
    perception rigs generate --seed 1 --cameras 3 3 --hfov 45 60 --name narrow --out rigs/heldout
    perception rigs check rigs/heldout/*.yaml                               # valid for the model? held out?
    perception rigs sample --count 5                                        # what training draws (samples 0..4)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perception rigs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    g = sub.add_parser("generate", help="write held-out rig YAMLs (a seed stream and partition training never uses)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--count", type=int, default=1)
    g.add_argument("--out", required=True, help="folder for the YAML files")
    g.add_argument("--name", default="heldout", help="rig name prefix (the file is PREFIX_BODY_Ncam.yaml)")
    g.add_argument("--cameras", type=int, nargs=2, metavar=("MIN", "MAX"), help="camera count range (default 3 6)")
    g.add_argument("--hfov", type=float, nargs=2, metavar=("MIN", "MAX"), help="horizontal FOV, deg (default 45 120)")
    g.add_argument("--height", type=float, nargs=2, metavar=("MIN", "MAX"), help="mounting height, m (default 1.2 2.8)")
    g.add_argument("--pitch", type=float, nargs=2, metavar=("MIN", "MAX"), help="pitch down, deg (default 0 12)")
    g.add_argument("--body", nargs="+", choices=["car", "truck"], help="vehicle bodies (default both)")
    g.add_argument("--mount", nargs="+", choices=["corner", "edge", "roof", "mirror"], help="mount kinds (default all)")
    c = sub.add_parser("check", help="check rig YAMLs against the model's slots and image size; say which are held out")
    c.add_argument("rigs", nargs="+")
    c.add_argument("--num-cameras", type=int, default=6)
    s = sub.add_parser("sample", help="print the rigs training samples draw under --rig-distribution any")
    s.add_argument("--first", type=int, default=0, help="first training sample id")
    s.add_argument("--count", type=int, default=5)
    return p


def _line(summary: dict) -> str:
    f, h, pt = [tuple(round(x, 2) + 0.0 for x in summary[k]) for k in ("hfov_deg", "height_m", "pitch_deg")]  # no "-0.0"
    yaws = " ".join(f"{y:.0f}" for y in summary["yaw_deg"])
    return (f"{summary['name']}: {summary['cameras']} cameras, FOV {f[0]:.0f}-{f[1]:.0f} deg, height {h[0]:.2f}-{h[1]:.2f} m, "
            f"pitch {pt[0]:.1f}-{pt[1]:.1f} deg down, yaws [{yaws}], held out: {'yes' if summary['heldout'] else 'no'}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from perception.config import ConfigError, load_rig
    from perception.rigs import RigDistribution, check_rig, heldout_rig, narrowed, rig_summary, training_rig, write_rig

    try:
        if args.action == "generate":
            dist = narrowed(RigDistribution(), cameras=tuple(args.cameras) if args.cameras else None,
                            hfov_deg=tuple(args.hfov) if args.hfov else None,
                            height_m=tuple(args.height) if args.height else None,
                            pitch_deg=tuple(args.pitch) if args.pitch else None,
                            bodies=tuple(args.body) if args.body else None, mounts=tuple(args.mount) if args.mount else None)
            for i in range(args.count):
                rig, d = heldout_rig(args.seed, i, dist, args.name if args.count == 1 else f"{args.name}{i}")
                check_rig(rig)
                path = Path(args.out) / f"{rig.name}.yaml"
                write_rig(d, path, f"Held-out rig: `perception rigs generate --seed {args.seed}` index {i}, constraints\n"
                                   f"{dist}.\nIn the held-out partition of perception/rigs.py: training never samples it.")
                print(f"{path}  {_line(rig_summary(rig))}")
        elif args.action == "check":
            bad = 0
            for path in args.rigs:
                try:
                    rig = load_rig(path)
                    check_rig(rig, args.num_cameras)
                    print(f"{path}  {_line(rig_summary(rig))}")
                except ConfigError as e:
                    bad += 1
                    print(f"{path}  INVALID: {e}")
            return 1 if bad else 0
        else:
            for i in range(args.first, args.first + args.count):
                print(f"sample {i}  {_line(rig_summary(training_rig(i)))}")
    except ConfigError as e:
        print(f"perception rigs: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
