"""The topic registry: every topic name on the wire and the protobuf message it carries, defined
once. Publishers, subscribers, the launcher's summary and the topic tools use these names;
a received message whose type is not its topic's is not that topic's message."""
from __future__ import annotations

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
