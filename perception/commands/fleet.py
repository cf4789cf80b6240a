"""`perception fleet DRIVES... --out DIR`: offline replay of many drives on Ray, one engine per
worker, with pooled metrics over all drives; `perception fleet --compare RUN_A RUN_B`: what changed
between two runs (docs/fleet.md). Needs the `fleet` extra: pip install 'perception[fleet]'."""
from __future__ import annotations

import argparse
import json
import sys

from perception.commands._args import add_log_level
from perception.replay import ReplayConfig

D = ReplayConfig

EPILOG = """\
examples:
  perception fleet drives/*.mcap --out runs/fleet_a                      # a local Ray on this machine
  perception fleet manifest.txt --out runs/fleet_a --workers 8 --threads 2
  perception fleet /nfs/drives/**/*.mcap --out /nfs/runs/b --address auto --workers 64 --gpus-per-worker 0.5 --backend tensorrt
  perception fleet --compare runs/fleet_a runs/fleet_b                   # B minus A, drives that regressed most

DRIVES: paths, globs (quote them for ** ) and manifests (.txt/.list/.manifest: one path or glob a
line, relative to the manifest). A rerun into the same --out skips the drives already done there.
Writes OUT/drives/<id>/{detections.mcap, matches.npz, metrics.json, done.json} and OUT/summary.json.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perception fleet", description=__doc__.split(": ", 1)[1],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("drives", nargs="*", metavar="DRIVES", help="drive files or folders, globs, manifests")
    p.add_argument("--out", metavar="DIR", help="output folder (required for a run)")
    p.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"), help="compare two runs (their --out folders)")
    ray = p.add_argument_group("Ray")
    ray.add_argument("--address", default=None, help="join this Ray cluster ('auto', or ray://HEAD:10001); "
                     "default: start a local Ray on this machine and stop it at the end")
    ray.add_argument("--workers", type=int, default=2, help="engines in the actor pool (default: %(default)s)")
    ray.add_argument("--cpus-per-worker", type=float, default=None, help="CPUs each worker reserves (default: --threads)")
    ray.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs each worker reserves (default: %(default)s)")
    ray.add_argument("--num-cpus", type=int, default=None, help="local Ray only: CPUs it may use (default: all)")
    ray.add_argument("--object-store-mb", type=int, default=256, help="local Ray only: object store size (default: %(default)s)")
    ray.add_argument("--retries", type=int, default=3, help="times a drive whose worker died is retried (default: %(default)s)")
    rp = p.add_argument_group("replay (as perception replay --offline)")
    rp.add_argument("--rig", help="rig YAML (own recordings: default rig; other drives: the calibration they lack)")
    rp.add_argument("--map", metavar="MAPPING.yaml", help="topic mapping for drives made by other tools")
    rp.add_argument("--model", default=D.model, help="model directory (default: %(default)s)")
    from perception.runtime import BACKEND_CHOICES

    rp.add_argument("--backend", default=D.backend, choices=BACKEND_CHOICES, metavar="BACKEND",
                    help="engine backend (default: %(default)s): " + ", ".join(BACKEND_CHOICES))
    rp.add_argument("--threads", type=int, default=1, help="CPU threads per engine (default: %(default)s)")
    rp.add_argument("--max-span-ms", type=float, default=D.max_span_ms, help="max capture-time spread in a frame set")
    rp.add_argument("--timeout-ms", type=float, default=D.timeout_ms, help="an incomplete set is computed this long after its first frame")
    rp.add_argument("--min-cameras", type=int, default=D.min_cameras, help="never compute a set with fewer cameras")
    rp.add_argument("--score-threshold", type=float, default=D.score_threshold, help="minimum detection score kept")
    rp.add_argument("--no-tracking", action="store_true", help="the model's single-frame velocity, no track ids "
                    "(by default each drive's detections are tracked, as the node tracks them)")
    rp.add_argument("--allow-random-init", action="store_true", help="seeded random weights when the model has none (smoke tests)")
    rp.add_argument("--no-detections", action="store_true", help="do not write each drive's detections MCAP")
    p.add_argument("--worst", type=int, default=10, help="list this many worst drives by mAP (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the summary (or the comparison) as JSON")
    add_log_level(p)
    return p


def _check(args: argparse.Namespace) -> str | None:
    """Why the arguments cannot run, or None."""
    if args.compare:
        if args.drives or args.out:
            return "--compare takes two run folders and no DRIVES or --out"
        return None
    if not args.drives:
        return "no DRIVES given"
    if not args.out:
        return "--out DIR is required"
    for name in ("workers", "threads", "min_cameras", "object_store_mb"):
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} must be >= 1"
    for name in ("gpus_per_worker", "max_span_ms", "timeout_ms", "retries", "worst"):
        if getattr(args, name) < 0:
            return f"--{name.replace('_', '-')} must be >= 0"
    if args.cpus_per_worker is not None and args.cpus_per_worker <= 0:
        return "--cpus-per-worker must be > 0"
    if args.num_cpus is not None and args.num_cpus < 1:
        return "--num-cpus must be >= 1"
    if args.address and (args.num_cpus is not None):
        return "--num-cpus is for a local Ray only (not with --address)"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    why = _check(args)
    if why:
        print(f"perception fleet: {why}", file=sys.stderr)
        return 2
    from perception import fleet
    from perception.logs import setup_logging

    setup_logging(args.log_level)
    if args.compare:
        return compare(args)
    try:
        import ray  # noqa: F401
    except ImportError:
        print("perception fleet: needs Ray: pip install 'perception[fleet]'", file=sys.stderr)
        return 2
    config = fleet.FleetConfig(
        ReplayConfig(model=args.model, backend=args.backend, threads=args.threads, max_span_ms=args.max_span_ms,
                     timeout_ms=args.timeout_ms, min_cameras=args.min_cameras, score_threshold=args.score_threshold,
                     tracking=not args.no_tracking,
                     allow_random_init=args.allow_random_init),
        rig=args.rig, mapping=args.map, write_detections=not args.no_detections)
    opts = fleet.RayOptions(address=args.address, workers=args.workers, cpus_per_worker=args.cpus_per_worker or float(args.threads),
                            gpus_per_worker=args.gpus_per_worker, num_cpus=args.num_cpus, object_store_mb=args.object_store_mb,
                            max_task_retries=args.retries)
    drives = fleet.expand_drives(args.drives)
    for bad in drives.bad:
        print(f"perception fleet: skipped {bad['path']}: {bad['error']}", file=sys.stderr)
    if not drives.paths:
        print("perception fleet: no drives to replay", file=sys.stderr)
        return 2

    def show(progress, rec) -> None:
        what = "done" if rec.get("status") == "done" else f"FAILED ({rec.get('error')})"
        print(f"[{progress.line()}] {rec['path']}: {what}", file=sys.stderr, flush=True)

    try:
        summary = fleet.run_fleet(drives, args.out, config, opts, on_progress=show, worst=args.worst)
    except (fleet.FleetError, OSError) as e:
        print(f"perception fleet: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        for line in summary_lines(summary):
            print(line)
    return 1 if summary["run"].get("ray_error") else 0


def summary_lines(s: dict) -> list[str]:
    d, r = s["drives"], s["run"]
    out = [f"drives: {d['done']} done ({r['resumed']} already done before this run), {d['failed']} failed, "
           f"{d['truncated']} truncated; {d['with_truth']} with ground truth",
           f"this run: {r['replayed']} drives, {r['new_frame_sets']} frame sets in {r['wall_s']:.1f} s "
           f"({r['frame_sets_per_s']:.1f} frame sets/s, {r['workers']} workers, Ray {r['address']})"]
    if r.get("ray_error"):
        out.append(f"the Ray run stopped early: {r['ray_error']}")
    m = s["metrics"]
    if m:
        out.append(f"pooled over all drives: mAP {m['mAP']:.4f}, NDS {m['NDS']:.4f}, mATE {m['mATE']:.3f}, "
                   f"mASE {m['mASE']:.3f}, mAOE {m['mAOE']:.3f}, mAVE {m['mAVE']:.3f}")
        out += [f"  {c:<14} AP {v['AP']:.4f}  ({v['num_gt']} truth)" for c, v in m["per_class"].items()]
    if s["worst"]:
        out.append("worst drives by mAP:")
        out += [f"  {w['mAP']:.4f}  {w['path']}" for w in s["worst"]]
    for f in s["failed"]:
        out.append(f"failed: {f['path']}: {f['error']}")
    out.append(f"summary: {s['out']}/summary.json (aggregation {s['aggregation_s'] * 1e3:.0f} ms)")
    return out


def compare(args: argparse.Namespace) -> int:
    from perception import fleet

    try:
        a, b = (fleet.load_summary(x) for x in args.compare)
    except fleet.FleetError as e:
        print(f"perception fleet: {e}", file=sys.stderr)
        return 2
    c = fleet.compare_runs(a, b, top=args.worst)
    if args.json:
        print(json.dumps(c, indent=1))
        return 0
    print(f"B minus A: A = {c['a']}, B = {c['b']}")
    for k, v in c["overall"].items():
        print(f"  {k:<5} {_f(v['a'])} -> {_f(v['b'])}  ({_f(v['delta'], True)})")
    print("per class AP:")
    for cls, v in c["per_class"].items():
        print(f"  {cls:<14} {_f(v['AP']['a'])} -> {_f(v['AP']['b'])}  ({_f(v['AP']['delta'], True)})")
    print(f"drives compared: {c['drives_compared']} (only in A: {len(c['only_in_a'])}, only in B: {len(c['only_in_b'])})")
    if c["regressed"]:
        print("regressed most (mAP):")
        for r in c["regressed"]:
            print(f"  {r['delta']:+.4f}  {r['a']:.4f} -> {r['b']:.4f}  {r['path']}")
    return 0


def _f(x, signed: bool = False) -> str:
    return "n/a" if x is None else (f"{x:+.4f}" if signed else f"{x:.4f}")


if __name__ == "__main__":
    sys.exit(main())
