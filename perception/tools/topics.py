"""Shared helpers of the topic tools (echo, hz): default endpoints per topic, matching
launch/sim.yaml, and the small pieces of CLI plumbing both tools need."""
from __future__ import annotations

import os
import sys

from perception import config, topics

FUSION_TOPICS = topics.FUSION_TOPICS


class UnknownTopic(ValueError):
    pass


def known_topics(rig: config.RigConfig) -> list[str]:
    return [*FUSION_TOPICS, *(topics.camera(n) for n in rig.camera_names), "camera/*",
            topics.TRUTH]


def default_endpoints(topic: str, rig_path=config.DEFAULT_RIG) -> list[str]:
    """Where the default launch (launch/sim.yaml) publishes ``topic``.

    "detections" and "status/*" come from the fusion node; "camera/<name>" from camera
    <index of name in the rig>; "camera/*" from every camera; "sim/truth" from the sim front
    camera (camera 0)."""
    if topic in topics.FUSION_TOPICS or topic.startswith("status/"):
        return [config.FUSION_ENDPOINT]
    if topic == topics.TRUTH:
        return [config.camera_endpoint(0)]
    rig = config.load_rig(rig_path)
    if topic == "camera/*":
        return [config.camera_endpoint(i) for i in range(len(rig.cameras))]
    if topic.startswith("camera/") and topic[len("camera/"):] in rig.camera_names:
        return [config.camera_endpoint(rig.camera_names.index(topic[len("camera/"):]))]
    raise UnknownTopic(f"no default endpoint for topic {topic!r}; pass --endpoint, or use one of: "
                       + ", ".join(known_topics(rig)))


def resolve_endpoints(topic: str, endpoints: list[str] | None, rig_path=config.DEFAULT_RIG) -> list[str]:
    return list(endpoints) if endpoints else default_endpoints(topic, rig_path)


def add_endpoint_args(parser) -> None:
    parser.add_argument("--endpoint", "-e", action="append", metavar="E",
                        help="ZeroMQ endpoint to connect to, e.g. tcp://127.0.0.1:5560 or ipc:///tmp/x "
                             "(repeat for several; default: where launch/sim.yaml publishes TOPIC)")
    parser.add_argument("--rig", default=str(config.DEFAULT_RIG),
                        help="rig file used to find a camera's default endpoint (default: %(default)s)")


def quiet_broken_pipe() -> None:
    """After `... | head` closed our stdout: stop writing, and keep the interpreter's final
    flush from printing a traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
