"""`perception replay IN --offline`: run a drive's frames through the fusion node's sync and model
without sockets, as fast as the machine allows (docs/recording.md). IN is a `perception record`
file, or with --map an MCAP file with Foxglove image channels or a ROS 2 bag directory."""
from __future__ import annotations

import argparse
import sys

from perception.commands._args import add_log_level, config_from_args
from perception.replay import ReplayConfig

D = ReplayConfig            # the defaults

EPILOG = """\
examples:
  perception replay drive.mcap --offline
  perception replay drive.mcap --offline --out dets.mcap --backend onnxruntime
  perception replay rosbag2_dir --offline --map mapping.yaml              # a ROS 2 bag (rosbags, no ROS install)
  perception replay foxglove.mcap --offline --map mapping.yaml --rig rigs/nuscenes_6cam.yaml
                                                # --rig: calibration the drive lacks, and the camera order

Prints frame sets, detections and the rate; with sim/truth in the file, the mAP against it.
Only --offline exists so far (publishing to the camera topics in real time is issue 15, item 2).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perception replay", description=__doc__.split(": ", 1)[1],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="IN", help="a recording made by `perception record`, or with --map an MCAP file "
                   "with Foxglove image channels or a ROS 2 bag directory")
    p.add_argument("--map", metavar="MAPPING.yaml", help="which topic is which rig camera, and the ego frame "
                   "(drives made by other tools; docs/recording.md, 'Drives from other tools')")
    p.add_argument("--offline", action="store_true", help="sync + engine in this process, no sockets (required)")
    p.add_argument("--out", metavar="DETS.mcap", help="write the Detections to this MCAP file")
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
    p.add_argument("--allow-random-init", action="store_true",
                   help="seeded random weights when the model directory has none (smoke tests)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_log_level(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.offline:
        print("perception replay: only --offline is implemented so far", file=sys.stderr)
        return 2
    from tqdm import tqdm

    from perception.config import ConfigError
    from perception.drives import open_drive
    from perception.logs import setup_logging
    from perception.replay import OfflineReplay, write_detections

    setup_logging(args.log_level)
    try:
        drive = open_drive(args.input, mapping=args.map, rig=args.rig)
    except (ConfigError, FileNotFoundError, OSError, ValueError) as e:
        print(f"perception replay: {e}", file=sys.stderr)
        return 2
    try:
        replay = OfflineReplay(config_from_args(ReplayConfig, args, rig=args.rig or D.rig), rig=drive.rig)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        drive.close()
        print(f"perception replay: {e}", file=sys.stderr)
        return 2
    out, write = write_detections(args.out) if args.out else (None, None)
    try:
        with tqdm(unit="frame", disable=args.no_progress, file=sys.stderr) as bar:
            summary = replay.run(drive, on_detections=write, progress=bar)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
