"""`perception fuse`: the fusion node process (perception.fusion.node.FusionNode)."""
from __future__ import annotations

import argparse
import logging
import sys

from perception.commands._args import add_log_level, add_security_args, apply_security, config_from_args
from perception.config import FusionNodeConfig

log = logging.getLogger("perception.fuse")
D = FusionNodeConfig           # the defaults


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="perception fuse",
        description="Fusion node: subscribe to the rig's cameras, sync frames by capture time, run "
                    "the multi-view ViT and publish 3D detections (topic 'detections') and node "
                    "status (topic 'status/fusion', ~1 Hz).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rig", default=D.rig, help="rig YAML (cameras and calibration)")
    p.add_argument("--model", default=D.model, help="model directory (config.yaml + model.safetensors)")
    from perception.runtime import BACKEND_CHOICES

    p.add_argument("--backend", default=D.backend, choices=BACKEND_CHOICES, metavar="BACKEND",
                   help="engine backend, NAME or NAME:PRECISION: " + ", ".join(BACKEND_CHOICES) + ". auto: on a GPU "
                        "TensorRT (fp16) when importable, else ONNX Runtime, else PyTorch; on a CPU inductor (serves "
                        "eagerly from the first frame set and switches to the compiled artifact once it is built, "
                        "in a background process, or found in the engine cache), else PyTorch, else ONNX Runtime. "
                        "Status and every Detections message name what runs (e.g. torch-cpu, torch-cpu-inductor)")
    p.add_argument("--threads", type=int, default=D.threads, help="CPU threads for the engine")
    p.add_argument("--camera-endpoints", nargs="*", default=D.camera_endpoints,
                   help="endpoints to subscribe to (default: tcp://127.0.0.1:5550+i for camera i of the rig)")
    p.add_argument("--publish", default=D.publish, help="endpoint to bind for detections and status")
    p.add_argument("--max-span-ms", type=float, default=D.max_span_ms, help="max capture-time spread within a frame set")
    p.add_argument("--timeout-ms", type=float, default=D.timeout_ms,
                   help="publish an incomplete set this long after its first frame, missing cameras masked")
    p.add_argument("--min-cameras", type=int, default=D.min_cameras, help="never publish a set with fewer cameras")
    p.add_argument("--score-threshold", type=float, default=D.score_threshold, help="minimum detection score published")
    p.add_argument("--no-tracking", action="store_true",
                   help="publish the model's single-frame velocity and no track ids (by default detections are "
                        "tracked across frame sets: track_id and a Kalman-filtered velocity, docs/velocity.md)")
    p.add_argument("--stale-ms", type=float, default=D.stale_ms, help="camera age above which status reports it STALE")
    p.add_argument("--max-future-ms", type=float, default=D.max_future_ms,
                   help="reject frames stamped further ahead of this node's clock")
    p.add_argument("--max-past-ms", type=float, default=D.max_past_ms,
                   help="reject frames stamped further behind this node's clock")
    p.add_argument("--output-stall-ms", type=float, default=D.output_stall_ms,
                   help="status ERROR when nothing was published this long while cameras are fresh")
    p.add_argument("--no-online-score", action="store_true", default=not D.online_score,
                   help="do not subscribe to sim/truth (by default, when the simulator publishes ground truth, "
                        "status carries a live nuScenes-style mAP over the last 100 frame sets)")
    p.add_argument("--allow-random-init", action="store_true", default=D.allow_random_init,
                   help="run with seeded random weights when the model directory has none (smoke tests)")
    p.add_argument("--duration", type=float, default=D.duration, help="exit after this many seconds")
    add_security_args(p)
    add_log_level(p)
    return p


def config_from(args: argparse.Namespace) -> FusionNodeConfig:
    """The node's config from parsed arguments."""
    endpoints = tuple(args.camera_endpoints) if args.camera_endpoints else None
    return config_from_args(FusionNodeConfig, args, camera_endpoints=endpoints,
                            online_score=not args.no_online_score, tracking=not args.no_tracking)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from perception.logs import setup_logging

    setup_logging(args.log_level)
    from perception import security, transport
    from perception.config import ConfigError
    from perception.fusion.node import FusionNode
    from perception.lifecycle import EXIT_CONFIG, EXIT_TRANSPORT, run_until_stopped
    from perception.transport import TransportError

    if not apply_security(args, security.NODE, "perception fuse"):
        return 2
    try:
        # The largest camera frame of the rig plus room for its header: a bigger part is refused
        # by ZeroMQ before it is allocated (docs/security.md).
        transport.set_max_message_size(security.max_message_size(args.rig))
        node = FusionNode(config_from(args))
    except TransportError as e:
        log.error("cannot start: %s", e)
        return EXIT_TRANSPORT
    except (ConfigError, FileNotFoundError, ValueError) as e:
        log.error("cannot start: %s", e)
        return EXIT_CONFIG

    try:
        return run_until_stopped(node)
    finally:
        log.info("fusion node stopped after %d outputs", node.pipeline.outputs_count)


if __name__ == "__main__":
    sys.exit(main())
