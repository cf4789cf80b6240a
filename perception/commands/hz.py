"""`perception hz TOPIC`: measure the publishing rate of a topic, like `ros2 topic hz`."""
from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time

from perception.commands._args import add_endpoint_args, add_security_args, open_topic, reading

EPILOG = """\
Once per second it prints the average rate over the last --window inter-arrival periods and
their min / max / standard deviation, e.g.

  average rate: 10.002
  \tmin: 0.098s max: 0.103s std dev: 0.00121s window: 51 count: 52

Arrival times are taken when a message comes off the socket (in the receiver thread), so a
busy terminal does not skew them. Exit status: 0, or 1 when --duration ends without a message.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perception hz", description=__doc__.split(": ", 1)[1],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("topic", metavar="TOPIC", help="topic name, e.g. detections, camera/front")
    add_endpoint_args(p)
    add_security_args(p)
    p.add_argument("--window", "-w", type=int, default=10000, metavar="N",
                   help="number of inter-arrival periods the statistics use (default: %(default)s)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: run until Ctrl-C)")
    return p


class RateWindow:
    """Inter-arrival periods of the last `window` messages."""

    def __init__(self, window: int):
        self.periods: collections.deque[float] = collections.deque(maxlen=window)
        self.last_ns: int | None = None
        self.count = 0

    def add(self, recv_ns: int) -> None:
        if self.last_ns is not None:
            self.periods.append((recv_ns - self.last_ns) / 1e9)
        self.last_ns = recv_ns
        self.count += 1

    def report(self) -> str | None:
        if not self.periods:
            return None
        p = self.periods
        mean = sum(p) / len(p)
        rate = 1.0 / mean if mean > 0 else float("inf")
        std = statistics.pstdev(p) if len(p) > 1 else 0.0
        return (f"average rate: {rate:.3f}\n\tmin: {min(p):.3f}s max: {max(p):.3f}s "
                f"std dev: {std:.5f}s window: {len(p)} count: {self.count}")


def _status_line(stats: RateWindow, printed_count: int, topic: str, endpoints: list[str]) -> str:
    if stats.count == 0:
        return f"waiting for {topic!r} on {', '.join(endpoints)}"
    if stats.count == printed_count:
        return "no new messages"
    return stats.report() or "1 message so far; a rate needs two"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.window < 1:
        print("perception hz: --window must be >= 1", file=sys.stderr)
        return 2
    # Deep enough to hold a second of a fast topic: every arrival time counts.
    opened = open_topic(args, "perception hz", rcvhwm=1000)
    if opened is None:
        return 2
    sub, endpoints = opened
    stats = RateWindow(args.window)
    start = time.monotonic()
    end = None if args.duration is None else start + args.duration
    next_print = start + 1.0
    printed_count = -1
    with reading(sub):
        while end is None or time.monotonic() < end:
            wake = next_print if end is None else min(next_print, end)
            rx = sub.recv(timeout_ms=max(0, int((wake - time.monotonic()) * 1000)))
            if rx is not None:
                stats.add(rx.recv_ns)
            if time.monotonic() >= next_print:
                next_print += 1.0
                print(_status_line(stats, printed_count, args.topic, endpoints), flush=True)
                printed_count = stats.count
        return 0 if stats.count else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
