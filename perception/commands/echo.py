"""`perception echo TOPIC`: print the messages published on a topic."""
from __future__ import annotations

import argparse
import json
import sys

from google.protobuf import json_format, text_format

from perception.commands._args import add_endpoint_args, add_security_args, open_topic, reading

EPILOG = """\
examples:
  perception echo detections --json --count 1
  perception echo camera/front                 # headers; pixels are summarised by size
  perception echo status/fusion --timeout 5    # exit 1 if nothing arrives within 5 s
  perception echo 'camera/*' --json | jq .sequence

exit status: 0 after --count messages or Ctrl-C; 1 on --timeout; 2 on bad arguments.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perception echo", description=__doc__.split(": ", 1)[1],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("topic", metavar="TOPIC",
                   help='topic name, e.g. detections, status/fusion, camera/front, sim/truth; '
                        'a trailing "*" matches a prefix ("camera/*")')
    add_endpoint_args(p)
    add_security_args(p)
    p.add_argument("--json", action="store_true",
                   help='one compact JSON object per line (protobuf JSON mapping, proto field names) '
                        'plus "topic" and, when there is a payload, "payload_bytes"')
    p.add_argument("--count", "-n", type=int, metavar="N", help="exit after N messages")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="exit 1 if no message arrives within S seconds (of start or of the previous "
                        "message); default: wait forever")
    return p


def format_text(rx) -> str:
    """Protobuf text format, headed by a comment (valid text format) naming topic and type."""
    note = f"# {rx.topic} ({rx.msg.DESCRIPTOR.full_name})"
    if rx.payload is not None:
        note += f"\n# payload: {rx.payload.nbytes} bytes"
    return f"{note}\n{text_format.MessageToString(rx.msg)}---"


def format_json(rx) -> str:
    obj = {"topic": rx.topic, **json_format.MessageToDict(rx.msg, preserving_proto_field_name=True)}
    if rx.payload is not None:
        obj["payload_bytes"] = rx.payload.nbytes
    return json.dumps(obj, separators=(",", ":"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.count is not None and args.count < 1:
        print("perception echo: --count must be >= 1", file=sys.stderr)
        return 2
    fmt = format_json if args.json else format_text
    timeout_ms = None if args.timeout is None else max(0, int(args.timeout * 1000))
    # A deeper queue than a node's: echo shows every message it can, not just the newest.
    opened = open_topic(args, "perception echo", rcvhwm=64)
    if opened is None:
        return 2
    sub, endpoints = opened
    printed = 0
    with reading(sub):
        while args.count is None or printed < args.count:
            rx = sub.recv(timeout_ms)
            if rx is None:
                print(f"perception echo: no message on {args.topic!r} from {', '.join(endpoints)} "
                      f"within {args.timeout:g} s ({printed} received)", file=sys.stderr)
                return 1
            print(fmt(rx), flush=True)
            printed += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
