"""`perception launch [FILE]`: start the processes of a launch file and watch them
(perception/launch.py: the launch file format, restarts with backoff, the summary line;
docs/supervision.md: children die with the launcher, the give-up rule, heartbeats).

Exit codes: 0 all ran until stopped, 1 it gave up on a process (or --record's recorder failed), 2 bad
launch file."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from perception import config as cfg
from perception.commands._args import add_log_level

log = logging.getLogger("perception.launch")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="perception launch",
        description="Start the processes of a launch file, restart any that dies (with backoff) or goes silent "
                    "(heartbeat), stop all on Ctrl-C/SIGTERM, and print a one-line summary per second (detection "
                    "rate, latency, drops). Children die with the launcher. A process that keeps failing to start "
                    "is given up with one line and the launcher exits 1 (docs/supervision.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("file", nargs="?", default=str(cfg.DEFAULT_LAUNCH), help="launch file")
    p.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE",
                   help="set an argument the launch file declares, e.g. camera_rate=20 (repeatable)")
    p.add_argument("--duration", type=float, default=None, help="stop everything after this many seconds")
    p.add_argument("--log-dir", default=None, help="where each process's output goes (default out/logs/<name>)")
    p.add_argument("--quiet", action="store_true", help="no summary lines")
    p.add_argument("--view", action="store_true",
                   help="also start `perception view` (the live view in the Rerun web viewer, docs/live_view.md)")
    p.add_argument("--view-arg", action="append", default=[], metavar="ARG",
                   help="an option for the view process, e.g. --view-arg=--web-port=9091 (repeatable)")
    p.add_argument("--record", metavar="OUT.mcap", default=None,
                   help="also record the run: adds a `perception record` process listening where the launch file's "
                        "cameras and fusion node publish; its summary ends the launch log (docs/recording.md)")
    p.add_argument("--no-foxglove", action="store_true", help="with --record: no Foxglove channels in the file")
    p.add_argument("--foxglove-images", choices=["jpeg", "raw", "none"], default="jpeg",
                   help="with --record: camera images on the Foxglove channels")
    add_log_level(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from perception.logs import setup_logging

    setup_logging(args.log_level)
    from perception.launch import Launcher, load_launch

    try:
        overrides = {}
        for item in args.arg:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise cfg.ConfigError(f"--arg {item!r}: expected NAME=VALUE")
            overrides[name.strip()] = value.strip()
        launch = load_launch(args.file, overrides)
        recorder = None
        if args.record:
            from perception.commands._launch_record import RecordOptions, with_recorder

            launch, recorder = with_recorder(launch, RecordOptions(args.record, foxglove=not args.no_foxglove,
                                                                   foxglove_images=args.foxglove_images))
    except cfg.ConfigError as e:
        log.error("%s", e)
        return 2
    if args.view:
        from perception.commands.view import view_address
        from perception.liveview import with_view

        try:
            launch = with_view(launch, args.view_arg)
        except cfg.ConfigError as e:
            log.error("%s", e)
            return 2
        log.info("live view: open %s", view_address(args.view_arg))
    if os.environ.get("PERCEPTION_KEYS") and not launch.keys:
        from perception import security  # noqa: F401  (registers the tools-key installer PERCEPTION_KEYS asks for)
    log_dir = Path(args.log_dir) if args.log_dir else Path("out") / "logs" / launch.name
    launcher = Launcher(launch, log_dir, quiet=args.quiet)

    def stop(signum, _frame):
        launcher.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if recorder is None:
        return launcher.run(args.duration)
    recorder_log = log_dir / f"{recorder.name}.log"
    offset = recorder_log.stat().st_size if recorder_log.exists() else 0     # logs are appended to
    log.info("recording to %s (%s)", args.record, " ".join(recorder.command[3:]))
    code = launcher.run(args.duration)
    from perception.commands._launch_record import closing_summary

    lines = closing_summary(recorder_log, offset)
    if lines is None:
        log.error("the recorder left no summary (killed or crashed?): see %s", recorder_log)
        return code or 1
    for line in lines:
        log.info("record: %s", line)
    return code


if __name__ == "__main__":
    sys.exit(main())
