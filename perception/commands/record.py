"""`perception record OUT.mcap`: record camera frames (header + pixels), simulator ground truth,
detections and the fusion node's status to an MCAP file (docs/recording.md)."""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from perception.commands._args import add_endpoint_args, add_log_level, add_security_args, apply_security

EPILOG = """\
examples:
  perception record drive.mcap --duration 60        # while `perception launch` runs
  perception record cams.mcap -e ipc:///tmp/cam0 -e ipc:///tmp/fusion
  perception record drive.mcap --no-foxglove         # only the perception.v1 channels (smaller)
  perception record drive.mcap --foxglove-images raw # Foxglove RawImage instead of JPEG
  perception launch --record drive.mcap              # the launcher starts this verb for you

Every channel carries its protobuf schema; frames are perception.v1.RecordedFrame (header + pixels).
Unless --no-foxglove, the file also has Foxglove channels (/foxglove/...: images, calibrations, the
rig's transforms, detections and ground truth as 3D boxes), made in the writer thread.
A full write queue (slow disk) drops messages and counts them; the summary at the end lists them.
SIGTERM or Ctrl-C stops it cleanly (the file is finished, the summary printed).
"""

SUMMARY_HEADER = "recording summary:"    # `perception launch --record` copies what follows into its log


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perception record", description=__doc__.split(": ", 1)[1],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", metavar="OUT.mcap", help="the MCAP file to write (replaced if it exists)")
    add_endpoint_args(p)
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: Ctrl-C)")
    p.add_argument("--queue", type=int, default=256, metavar="N",
                   help="messages waiting for the disk before new ones are dropped (default: %(default)s)")
    p.add_argument("--no-foxglove", action="store_true",
                   help="no Foxglove channels: only the perception.v1 messages (docs/recording.md gives the size cost)")
    p.add_argument("--foxglove-images", choices=["jpeg", "raw", "none"], default="jpeg",
                   help="camera images on the Foxglove channels: JPEG CompressedImage, RawImage, or none "
                        "(default: %(default)s)")
    p.add_argument("--jpeg-quality", type=int, default=90, metavar="Q", help="JPEG quality 1-100 (default: %(default)s)")
    add_security_args(p)
    add_log_level(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from perception import security, topics
    from perception.foxglove import FoxgloveConfig
    from perception.lifecycle import watch_parent
    from perception.logs import setup_logging
    from perception.record import Recorder, record_topics
    from perception.transport import Subscriber, TransportError

    setup_logging(args.log_level)
    try:
        fox = None if args.no_foxglove else FoxgloveConfig(images=args.foxglove_images, jpeg_quality=args.jpeg_quality)
        wanted = record_topics(args.rig, args.endpoint)
    except (topics.UnknownTopic, ValueError, OSError) as e:
        print(f"perception record: {e}", file=sys.stderr)
        return 2
    if not apply_security(args, security.TOOLS, "perception record"):
        return 2
    endpoints = list(dict.fromkeys(ep for _, eps in wanted for ep in eps))
    try:
        sub = Subscriber(endpoints, [t for t, _ in wanted], rcvhwm=64)
    except TransportError as e:
        print(f"perception record: {e}", file=sys.stderr)
        return 2
    try:
        recorder = Recorder(args.out, queue_size=args.queue, foxglove=fox)
    except OSError as e:
        sub.close()
        print(f"perception record: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())     # the launcher's stop: finish the file
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    watch_parent()
    try:
        recorder.record(sub, duration_s=args.duration, stop=stop)
    finally:
        lost = {t: s.superseded for t, s in sub.stats.items() if s.superseded}
        sub.close()
        recorder.close()
    print(SUMMARY_HEADER)
    for line in recorder.summary_lines(args.out):
        print(f"  {line}")
    if lost:   # the subscriber's per-topic queue overflowed before the recorder took the messages
        print(f"  lost before the recorder's queue (receive queue full): {dict(sorted(lost.items()))}")
    return 1 if recorder.error is not None else 0


if __name__ == "__main__":
    sys.exit(main())
