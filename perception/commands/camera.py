"""`perception camera`: one camera reader process (perception.cameras.process.CameraReader)."""
from __future__ import annotations

import argparse
import logging
import sys

from perception.commands._args import add_log_level, add_security_args, apply_security, config_from_args
from perception.config import CAMERA_SOURCES, CameraProcessConfig

log = logging.getLogger("perception.camera")
D = CameraProcessConfig        # the defaults


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="perception camera",
        description="Camera reader: publish one camera's frames over ZeroMQ on topic 'camera/<name>'.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--name", required=True, help="camera name in the rig file (e.g. front)")
    p.add_argument("--rig", default=D.rig, help="rig YAML with this camera's calibration")
    p.add_argument("--source", choices=CAMERA_SOURCES, default=D.source,
                   help="sim: built-in simulated world; video: OpenCV file/device/RTSP/GStreamer; images: a folder")
    p.add_argument("--uri", default=D.uri, help="video file, device index, RTSP URL or GStreamer pipeline; or image folder")
    p.add_argument("--loop", action="store_true", default=D.loop, help="restart a video or image folder at its end")
    p.add_argument("--seed", type=int, default=D.seed, help="world seed of the sim source")
    p.add_argument("--rate", type=float, default=D.rate, help="frames per second")
    p.add_argument("--phase-ms", type=float, default=D.phase_ms,
                   help="capture offset within the period (default: 5 ms x the camera's index in the rig)")
    p.add_argument("--endpoint", default=D.endpoint, help="endpoint to bind (default: tcp://127.0.0.1:5550+index)")
    p.add_argument("--truth", action="store_true", default=D.truth,
                   help="also publish the sim's ground truth on 'sim/truth'")
    p.add_argument("--truth-rate", type=float, default=D.truth_rate,
                   help="publish ground truth at most this often (Hz), at the stamp of a frame: the visibility "
                        "renders behind it cost more than the frame itself")
    p.add_argument("--count", type=int, default=D.count, help="stop after this many frames")
    add_security_args(p)
    add_log_level(p)
    return p


def config_from(args: argparse.Namespace) -> CameraProcessConfig:
    """The camera process's config from parsed arguments."""
    return config_from_args(CameraProcessConfig, args)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from perception.logs import setup_logging

    setup_logging(args.log_level)
    from perception.cameras.process import CameraReader
    from perception.cameras.sources import SourceError
    from perception.config import ConfigError
    from perception.lifecycle import EXIT_TRANSPORT, run_until_stopped
    from perception.security import camera_identity
    from perception.transport import TransportError

    if not apply_security(args, camera_identity(args.name), "perception camera"):
        return 2
    config = config_from(args)
    try:
        reader = CameraReader(config)
    except (ConfigError, SourceError) as e:
        log.error("camera %s cannot start: %s", config.name, e)
        return 1
    except TransportError as e:
        log.error("camera %s cannot start: %s", config.name, e)
        return EXIT_TRANSPORT

    try:
        return run_until_stopped(reader)
    except SourceError as e:
        log.error("camera %s: source failed: %s", config.name, e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
