"""The topic registry: every topic name on the wire and the protobuf message it carries, defined
once. Publishers, subscribers, the launcher's summary and the topic tools use these names;
a received message whose type is not its topic's is not that topic's message. Where the default
launch (launch/sim.yaml) publishes each topic is here too (default_endpoints: the topic tools' defaults)."""
from __future__ import annotations

from perception import config as pconfig

DETECTIONS = "detections"            # perception.v1.Detections, from the fusion node
FUSION_STATUS = "status/fusion"      # perception.v1.NodeStatus, from the fusion node (~1 Hz)
TRUTH = "sim/truth"                  # perception.v1.GroundTruth, from the sim camera started with --truth
CAMERA_PREFIX = "camera/"            # camera/<name>: perception.v1.FrameHeader + pixels

FUSION_TOPICS = (DETECTIONS, FUSION_STATUS)

# topic (or topic prefix ending in "/") -> the full protobuf type name it carries
MESSAGE_TYPES = {
    DETECTIONS: "perception.v1.Detections",
    FUSION_STATUS: "perception.v1.NodeStatus",
    TRUTH: "perception.v1.GroundTruth",
    CAMERA_PREFIX: "perception.v1.FrameHeader",
}


def camera(name: str) -> str:
    """The topic of camera `name`."""
    return f"{CAMERA_PREFIX}{name}"


def message_type(topic: str) -> str | None:
    """The protobuf type name `topic` carries, or None for a topic the registry does not know."""
    if topic in MESSAGE_TYPES:
        return MESSAGE_TYPES[topic]
    if topic.startswith(CAMERA_PREFIX) and len(topic) > len(CAMERA_PREFIX):
        return MESSAGE_TYPES[CAMERA_PREFIX]
    if topic.startswith("status/"):
        return MESSAGE_TYPES[FUSION_STATUS]
    return None


# ------------------------------------------------------------------------------------------------
# default endpoints

class UnknownTopic(ValueError):
    pass


def known_topics(rig: pconfig.RigConfig) -> list[str]:
    return [*FUSION_TOPICS, *(camera(n) for n in rig.camera_names), "camera/*", TRUTH]


def default_endpoints(topic: str, rig_path=pconfig.DEFAULT_RIG) -> list[str]:
    """Where the default launch (launch/sim.yaml) publishes ``topic``.

    "detections" and "status/*" come from the fusion node; "camera/<name>" from camera
    <index of name in the rig>; "camera/*" from every camera; "sim/truth" from the sim front
    camera (camera 0)."""
    if topic in FUSION_TOPICS or topic.startswith("status/"):
        return [pconfig.FUSION_ENDPOINT]
    if topic == TRUTH:
        return [pconfig.camera_endpoint(0)]
    rig = pconfig.load_rig(rig_path)
    if topic == "camera/*":
        return [pconfig.camera_endpoint(i) for i in range(len(rig.cameras))]
    if topic.startswith("camera/") and topic[len("camera/"):] in rig.camera_names:
        return [pconfig.camera_endpoint(rig.camera_names.index(topic[len("camera/"):]))]
    raise UnknownTopic(f"no default endpoint for topic {topic!r}; pass --endpoint, or use one of: "
                       + ", ".join(known_topics(rig)))


def resolve_endpoints(topic: str, endpoints: list[str] | None, rig_path=pconfig.DEFAULT_RIG) -> list[str]:
    return list(endpoints) if endpoints else default_endpoints(topic, rig_path)
