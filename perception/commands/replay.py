"""`perception replay IN`: publish a drive's camera frames (and ground truth) on the cameras' topics
for a running fusion node, in real time, --rate X, or --lockstep with the node's answers; or, with
--offline, run them through the fusion node's sync and model without sockets, as fast as the
machine allows (docs/recording.md). IN is a `perception record` file, or with --map an MCAP file
with Foxglove image channels or a ROS 2 bag directory."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from perception.commands._args import add_log_level, config_from_args
from perception.player import PlayerConfig
from perception.replay import ReplayConfig

D = ReplayConfig            # the defaults
PD = PlayerConfig

EPILOG = """\
examples:
  perception fuse &                                   # or: perception launch launch/replay.yaml --arg drive=drive.mcap
  perception replay drive.mcap                        # real time, to launch/sim.yaml's camera endpoints
  perception replay drive.mcap --rate 2 --start 10 --end 20 --loop
  perception replay drive.mcap --lockstep --out dets.mcap      # one set at a time, each after its Detections
  perception replay drive.mcap --lockstep --camera-endpoints ipc:///tmp/c0 ... --node-endpoint ipc:///tmp/fusion
  perception replay tests/data/sim_drive.mcap --lockstep --ref tests/data/sim_drive_ref.json   # regression replay
  perception replay drive.mcap --offline
  perception replay drive.mcap --offline --out dets.mcap --backend onnxruntime
  perception replay rosbag2_dir --offline --map mapping.yaml              # a ROS 2 bag (rosbags, no ROS install)
  perception replay foxglove.mcap --lockstep --map mapping.yaml --rig rigs/nuscenes_6cam.yaml
                                                # --rig: calibration the drive lacks, and the camera order

Live replay restamps the frames onto the wall clock (the node refuses frames stamped far from its
clock) and translates the Detections it receives back to the recording's stamps and sequences
(--out writes those). Prints frames and sets sent, detections received, the rate and lock-step
waits. --offline prints frame sets, detections and the rate; with sim/truth in the file, the mAP.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perception replay", description=__doc__.split(": ", 1)[1],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="IN", help="a recording made by `perception record`, or with --map an MCAP file "
                   "with Foxglove image channels or a ROS 2 bag directory")
    p.add_argument("--map", metavar="MAPPING.yaml", help="which topic is which rig camera, and the ego frame "
                   "(drives made by other tools; docs/recording.md, 'Drives from other tools')")
    p.add_argument("--offline", action="store_true", help="sync + engine in this process, no sockets")
    p.add_argument("--out", metavar="DETS.mcap", help="write the Detections to this MCAP file (live replay: "
                   "the ones received, in recording time)")
    live = p.add_argument_group("live replay (without --offline)")
    live.add_argument("--lockstep", action="store_true", help="send each frame set only after the node's Detections "
                      "of the previous one came back: nothing dropped, results independent of the machine's speed")
    live.add_argument("--rate", type=float, default=None, metavar="X",
                      help="X times real time (default: 1; with --lockstep: as fast as the node answers)")
    live.add_argument("--start", type=float, default=0.0, metavar="S", help="from S seconds after the drive's start")
    live.add_argument("--end", type=float, default=None, metavar="S", help="up to S seconds after the drive's start")
    live.add_argument("--loop", action="store_true", help="start again after the end, until stopped")
    live.add_argument("--camera-endpoints", nargs="+", metavar="E", default=None,
                      help="endpoints to publish camera i of the rig on (default: launch/sim.yaml's, "
                           "tcp://127.0.0.1:5550+i); ground truth goes with the first camera, as in the simulator")
    live.add_argument("--node-endpoint", default=PD.node_endpoint, metavar="E",
                      help="where the fusion node publishes detections and status (default: %(default)s)")
    live.add_argument("--set-timeout", type=float, default=PD.set_timeout_s, metavar="S",
                      help="--lockstep: fail when a set has no Detections after S seconds (default: %(default)s)")
    live.add_argument("--wait-node", type=float, default=PD.wait_node_s, metavar="S",
                      help="wait up to S seconds for the node to subscribe before the first set (default: %(default)s)")
    live.add_argument("--no-truth", action="store_true", help="do not republish sim/truth")
    p.add_argument("--ref", metavar="REF.json", help="compare the Detections with this regression reference, message "
                   "by message (and the engine time with its budget); exit 1 when they differ (perception/regression.py)")
    p.add_argument("--update-ref", action="store_true", help="with --ref: write the reference from this run instead")
    p.add_argument("--rig", help=f"rig YAML (default for our own recordings: {D.rig}; for other drives: "
                   "only the calibration they lack and the camera order)")
    p.add_argument("--model", default=D.model, help="model directory (default: %(default)s)")
    from perception.runtime import BACKEND_CHOICES

    p.add_argument("--backend", default=D.backend, choices=BACKEND_CHOICES, metavar="BACKEND",
                   help="engine backend (default: %(default)s, deterministic on a CPU): " + ", ".join(BACKEND_CHOICES))
    p.add_argument("--threads", type=int, default=D.threads, help="CPU threads for the engine (default: %(default)s)")
    p.add_argument("--max-span-ms", type=float, default=D.max_span_ms, help="max capture-time spread in a frame set")
    p.add_argument("--timeout-ms", type=float, default=D.timeout_ms, help="an incomplete set is computed this long "
                   "(recording time) after its first frame")
    p.add_argument("--min-cameras", type=int, default=D.min_cameras, help="never compute a set with fewer cameras")
    p.add_argument("--score-threshold", type=float, default=D.score_threshold, help="minimum detection score kept")
    p.add_argument("--no-tracking", action="store_true",
                   help="publish the model's single-frame velocity and no track ids (by default detections are "
                        "tracked across frame sets: track_id and a Kalman-filtered velocity, docs/velocity.md)")
    p.add_argument("--allow-random-init", action="store_true",
                   help="seeded random weights when the model directory has none (smoke tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_log_level(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.update_ref and not args.ref:
        print("perception replay: --update-ref needs --ref REF.json", file=sys.stderr)
        return 2
    if not args.offline:
        return play(args)
    live = [o for o, v in (("--lockstep", args.lockstep), ("--rate", args.rate is not None), ("--loop", args.loop),
                           ("--start", args.start), ("--end", args.end is not None),
                           ("--camera-endpoints", args.camera_endpoints)) if v]
    if live:
        print(f"perception replay: {', '.join(live)}: live replay only, not with --offline", file=sys.stderr)
        return 2
    from tqdm import tqdm

    from perception.config import ConfigError
    from perception.logs import setup_logging
    from perception.replay import OfflineReplay, write_detections

    setup_logging(args.log_level)
    drive = _open(args)
    if drive is None:
        return 2
    try:
        replay = OfflineReplay(config_from_args(ReplayConfig, args, rig=args.rig or D.rig,
                                                      tracking=not args.no_tracking), rig=drive.rig)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        drive.close()
        print(f"perception replay: {e}", file=sys.stderr)
        return 2
    out, write = write_detections(args.out) if args.out else (None, None)
    kept: list = []

    def keep(msg) -> None:
        kept.append(msg)
        if write is not None:
            write(msg)

    try:
        with tqdm(unit="frame", disable=args.no_progress, file=sys.stderr) as bar:
            summary = replay.run(drive, on_detections=keep, progress=bar)
    except OSError as e:
        print(f"perception replay: {e}", file=sys.stderr)
        return 2
    finally:
        drive.close()
        if out is not None:
            out.close()
    for line in summary.lines():
        print(line)
    if out is not None:
        print(f"wrote {summary.sets} Detections to {args.out}")
    return check_reference(args, kept)


def _open(args: argparse.Namespace):
    """The drive IN (perception.drives.open_drive), or None after printing why it cannot be read."""
    from perception.config import ConfigError
    from perception.drives import open_drive

    try:
        return open_drive(args.input, mapping=args.map, rig=args.rig)
    except (ConfigError, FileNotFoundError, OSError, ValueError) as e:
        print(f"perception replay: {e}", file=sys.stderr)
        return None


def check_reference(args: argparse.Namespace, detections: list, failed: bool = False) -> int:
    """--ref: compare `detections` (recording time) with the reference, or write it (--update-ref);
    the exit code (1 when they differ, or when the run itself `failed`: no reference is written then)."""
    if not args.ref:
        return int(failed)
    from perception import regression

    if args.update_ref:
        if failed or not detections:
            print(f"perception replay: the run failed or gave no Detections; {args.ref} not written", file=sys.stderr)
            return 1
        regression.write_reference(args.ref, detections, drive=Path(args.input).name)
        print(f"wrote the reference {args.ref}: {len(detections)} Detections")
        return 0
    try:
        ref, tolerances, budget = regression.read_reference(args.ref)
    except (OSError, ValueError) as e:
        print(f"perception replay: {e}", file=sys.stderr)
        return 2
    report = regression.compare(ref, detections, tolerances, budget)
    for line in report.lines():
        print(line)
    return 0 if report.passed and not failed else 1


def play(args: argparse.Namespace) -> int:
    """Live replay: a Player publishing the drive to the cameras' endpoints."""
    from tqdm import tqdm

    from perception import config as pconfig
    from perception import topics
    from perception.lifecycle import EXIT_CONFIG, EXIT_TRANSPORT, run_until_stopped
    from perception.logs import setup_logging
    from perception.player import Player, file_source
    from perception.replay import write_detections
    from perception.transport import TransportError

    if args.ref and not args.lockstep:
        print("perception replay: --ref needs --lockstep (or --offline): in real time the node may skip sets",
              file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(args.log_level)
    config = PlayerConfig(rig=args.rig or D.rig, model=args.model, rate=args.rate, start_s=args.start, end_s=args.end,
                          loop=args.loop, lockstep=args.lockstep, set_timeout_s=args.set_timeout,
                          wait_node_s=args.wait_node, truth=not args.no_truth, node_endpoint=args.node_endpoint,
                          camera_endpoints=tuple(args.camera_endpoints) if args.camera_endpoints else None,
                          max_span_ms=args.max_span_ms, timeout_ms=args.timeout_ms, min_cameras=args.min_cameras)
    drive = _open(args)
    if drive is None:
        return EXIT_CONFIG
    out, write = write_detections(args.out) if args.out else (None, None)
    kept: list = []

    def keep(msg, _received) -> None:
        kept.append(msg)
        if write is not None:
            write(msg)

    stats: dict = {}
    bar = tqdm(unit="frame", disable=args.no_progress, file=sys.stderr)
    wanted = [topics.TRUTH] + [topics.camera(n) for n in drive.rig.camera_names]
    # our own recordings through read_messages, which reports a truncated file in `stats`
    source = file_source(drive.path, stats, drive.rig) if drive.kind == "perception" else (lambda: drive.messages(wanted))
    try:
        player = Player(config, source, drive.rig, stats=stats, progress=bar, on_detections=keep)
    except TransportError as e:
        drive.close()
        print(f"perception replay: {e}", file=sys.stderr)
        return EXIT_TRANSPORT
    except (pconfig.ConfigError, FileNotFoundError, ValueError) as e:
        drive.close()
        print(f"perception replay: {e}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        code = run_until_stopped(player)
    except OSError as e:
        print(f"perception replay: {e}", file=sys.stderr)
        code = 2
    finally:
        bar.close()
        drive.close()
        if out is not None:
            out.close()
    for line in player.summary.lines():
        print(line)
    if out is not None:
        print(f"wrote {len(kept)} Detections to {args.out}")
    return check_reference(args, kept, failed=code != 0) if args.ref else code


if __name__ == "__main__":
    sys.exit(main())
