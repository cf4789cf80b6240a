"""`perception record OUT.mcap`: record camera frames (header + pixels), simulator ground truth,
detections and the fusion node's status to an MCAP file (docs/recording.md)."""
from __future__ import annotations

import argparse
import sys

from perception.commands._args import add_endpoint_args, add_log_level, add_security_args, apply_security

EPILOG = """\
examples:
  perception record drive.mcap --duration 60        # while `perception launch` runs
  perception record cams.mcap -e ipc:///tmp/cam0 -e ipc:///tmp/fusion

Every channel carries its protobuf schema; frames are perception.v1.RecordedFrame (header + pixels).
A full write queue (slow disk) drops messages and counts them; the summary at the end lists them.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perception record", description=__doc__.split(": ", 1)[1],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", metavar="OUT.mcap", help="the MCAP file to write (replaced if it exists)")
    add_endpoint_args(p)
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: Ctrl-C)")
    p.add_argument("--queue", type=int, default=256, metavar="N",
                   help="messages waiting for the disk before new ones are dropped (default: %(default)s)")
    add_security_args(p)
    add_log_level(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from perception import security, topics
    from perception.logs import setup_logging
    from perception.record import Recorder, record_topics
    from perception.transport import Subscriber, TransportError

    setup_logging(args.log_level)
    try:
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
        recorder = Recorder(args.out, queue_size=args.queue)
    except OSError as e:
        sub.close()
        print(f"perception record: {e}", file=sys.stderr)
        return 2
    try:
        recorder.record(sub, duration_s=args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        sub.close()
        recorder.close()
    for topic in sorted(recorder.received):
        dropped = recorder.dropped.get(topic, 0)
        print(f"{topic}: {recorder.received[topic]} received" + (f", {dropped} dropped" if dropped else ""))
    print(f"wrote {recorder.written} messages to {args.out}")
    return 1 if recorder.error is not None else 0


if __name__ == "__main__":
    sys.exit(main())
