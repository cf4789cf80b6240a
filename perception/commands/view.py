"""`perception view`: a live view of a running pipeline or replay in the Rerun viewer: the camera
images with the detections' boxes projected into them, a bird's-eye view of detections and ground
truth, and latency/rate/drop plots (perception/liveview.py, docs/live_view.md)."""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from perception.commands._args import add_endpoint_args, add_log_level, add_security_args, apply_security, config_from_args
from perception.liveview import ViewConfig

D = ViewConfig              # the defaults

EPILOG = """\
examples:
  perception view                          # beside `perception launch`; open the printed http:// address
  perception launch --view                 # the same, started (and stopped) with the pipeline
  perception view --web-port 9091 --grpc-port 9877
  perception view --no-web                 # serve only gRPC: `rerun rerun+http://127.0.0.1:9876/proxy` (native viewer)
  perception view --save drive.rrd --duration 30 --no-serve   # write a Rerun recording instead
  perception view -e ipc:///tmp/cam0 -e ipc:///tmp/fusion     # every camera/*, sim/truth, detections, status/* there

The web viewer is served by the rerun-sdk wheel itself (no internet). Its page (port --web-port)
holds no data; the data are served on loopback only (--grpc-port, 127.0.0.1): from another machine
use an SSH tunnel for both ports. The view subscribes newest-only and draws at most --image-hz
images per camera, so it never holds back the pipeline; drops and refused messages are counted,
plotted and printed at the end.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perception view", description=__doc__.split(": ", 1)[1],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_endpoint_args(p)
    p.add_argument("--web-port", type=int, default=9090, help="port of the web viewer's page (default: %(default)s)")
    p.add_argument("--grpc-port", type=int, default=9876, help="port of the gRPC data server, 127.0.0.1 only (default: %(default)s)")
    p.add_argument("--no-web", action="store_true", help="do not serve the web viewer (connect a native viewer to the gRPC server)")
    p.add_argument("--no-serve", action="store_true", help="serve nothing (with --save or --connect)")
    p.add_argument("--connect", metavar="URL", help="also push to a running viewer, e.g. rerun+http://127.0.0.1:9876/proxy")
    p.add_argument("--save", metavar="FILE.rrd", help="also write everything to a Rerun recording")
    p.add_argument("--memory-limit", default="512MiB",
                   help="data the gRPC server keeps for viewers that join late; the oldest is dropped beyond it (default: %(default)s)")
    p.add_argument("--image-width", type=int, default=D.image_width, help="images are downscaled to this width, px (default: %(default)s)")
    p.add_argument("--image-hz", type=float, default=D.image_hz, help="at most this many images per camera per second (default: %(default)s)")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: Ctrl-C or SIGTERM)")
    add_security_args(p)
    add_log_level(p)
    return p


def view_address(view_args: list[str]) -> str:
    """Where a person opens the view that `perception view <view_args>` serves (perception launch --view logs it)."""
    from perception.liveview import web_url

    args, _ = build_parser().parse_known_args(view_args)
    if args.no_serve:
        return "nothing served (--no-serve)" + (f"; writing {args.save}" if args.save else "")
    if args.no_web:
        return f"native viewer: rerun rerun+http://127.0.0.1:{args.grpc_port}/proxy"
    return web_url(args.web_port, args.grpc_port)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import logging

    from perception import config as pconfig
    from perception import security, topics
    from perception.liveview import LiveView, view_topics, web_url
    from perception.logs import setup_logging
    from perception.transport import Subscriber, TransportError

    setup_logging(args.log_level)
    log = logging.getLogger("perception.view")
    if args.no_serve and not (args.save or args.connect):
        print("perception view: --no-serve needs --save or --connect (nothing would be shown)", file=sys.stderr)
        return 2
    try:
        config = config_from_args(ViewConfig, args)
        config.validate()
        rig = pconfig.load_rig(args.rig)
        endpoints, wanted = view_topics(args.rig, args.endpoint)
    except (pconfig.ConfigError, topics.UnknownTopic, OSError) as e:
        print(f"perception view: {e}", file=sys.stderr)
        return 2
    if not apply_security(args, security.TOOLS, "perception view"):
        return 2

    try:
        import rerun as rr
    except ImportError:
        print("perception view needs the Rerun SDK: pip install -e '.[view]' (rerun-sdk, pinned in pyproject.toml)", file=sys.stderr)
        return 2

    rec = rr.RecordingStream("perception_view")
    view = LiveView(rig, rec, config)
    sinks: list = []
    server = None
    if not args.no_serve:
        server = rr.GrpcServerSink(bind_ip="127.0.0.1", port=args.grpc_port, server_memory_limit=args.memory_limit,
                                   newest_first=True)      # a viewer that joins late sees the present first
        sinks.append(server)
    if args.connect:
        sinks.append(rr.GrpcSink(args.connect))
    if args.save:
        sinks.append(rr.FileSink(args.save))
    try:
        rec.set_sinks(*sinks, default_blueprint=view.blueprint())
        if server is not None and not args.no_web:
            rr.serve_web_viewer(web_port=args.web_port, open_browser=False, connect_to=server.uri)
    except (RuntimeError, ValueError, OSError) as e:       # a port taken, a bad URL, an unwritable file
        print(f"perception view: {e}", file=sys.stderr)
        return 2
    view.setup()
    try:
        sub = Subscriber(endpoints, wanted, rcvhwm=1)      # newest only: a slow view drops, never queues
    except TransportError as e:
        print(f"perception view: {e}", file=sys.stderr)
        return 2
    if server is not None:
        log.info("live view: open %s (native viewer: rerun %s)", web_url(args.web_port, args.grpc_port) if not args.no_web
                 else "-", server.uri)
    log.info("subscribed to %s on %s", ", ".join(wanted), ", ".join(endpoints))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        view.run(sub, duration_s=args.duration, should_stop=stop.is_set)
    except KeyboardInterrupt:
        pass
    finally:
        sub.close()
        rec.flush()
        rec.disconnect()
    print(view.summary(sub))
    return 0


if __name__ == "__main__":
    sys.exit(main())
