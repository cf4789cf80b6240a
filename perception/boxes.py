"""Object classes and boxes: the one taxonomy, and every conversion between the model's output,
the protobuf contract, the metrics and the simulator's ground truth.

Classes are mapped by name, never by position: model label i is `ModelConfig.classes[i]`, the
protobuf enum value is `ObjectClass.OBJECT_CLASS_<NAME>`. A model whose classes the contract
cannot carry is refused at start-up (check_model_classes)."""
from __future__ import annotations

import numpy as np

# The taxonomy of the built-in world and the shipped model, in the model's label order.
CLASSES: tuple[str, ...] = ("car", "truck", "pedestrian", "cyclist", "traffic_cone")
CAR, TRUCK, PEDESTRIAN, CYCLIST, CONE = range(len(CLASSES))

# An object is ground truth (a training target, an evaluated box, a scored box in the live online
# score) only with at least this many visible pixels in the 160x90 box-index render of the camera
# that sees most of it (sim/truth.py says why).
MIN_VISIBLE_PX = 4


class UnknownClass(ValueError):
    """A class name the protobuf contract has no enum value for."""


def _enum():
    from perception.v1 import detections_pb2

    return detections_pb2.ObjectClass


def proto_class(name: str) -> int:
    """'car' -> ObjectClass.OBJECT_CLASS_CAR."""
    try:
        return _enum().Value(f"OBJECT_CLASS_{name.upper()}")
    except ValueError:
        raise UnknownClass(f"class {name!r} has no ObjectClass value in proto/perception/v1/detections.proto "
                           f"(known: {', '.join(class_names_in_contract())})") from None


def class_name(value: int) -> str | None:
    """ObjectClass value -> class name ('car'), None for UNSPECIFIED or a value this build does not know."""
    try:
        name = _enum().Name(int(value))
    except ValueError:
        return None
    return None if name == "OBJECT_CLASS_UNSPECIFIED" else name[len("OBJECT_CLASS_"):].lower()


def class_names_in_contract() -> list[str]:
    return [n for v in _enum().values() if (n := class_name(v)) is not None]


def check_model_classes(classes) -> np.ndarray:
    """The protobuf value of each model label; raises UnknownClass when one has none."""
    return np.array([proto_class(c) for c in classes], dtype=np.int64)


def objects_from_outputs(outputs: dict[str, np.ndarray], label_values: np.ndarray, score_threshold: float,
                         batch_index: int = 0) -> list:
    """Decoded engine outputs -> Object3D messages above the score threshold. label_values is
    check_model_classes(model classes): model label i -> its ObjectClass value."""
    from perception.v1 import detections_pb2 as d

    boxes = outputs["det_boxes"][batch_index]
    scores = outputs["det_scores"][batch_index]
    labels = outputs["det_labels"][batch_index]
    objects = []
    for b, s, c in zip(boxes, scores, labels):
        if s < score_threshold:
            continue
        x, y, z, length, w, h, yaw, vx, vy = (float(v) for v in b)
        objects.append(d.Object3D(
            object_class=int(label_values[int(c)]), score=float(s),  # type: ignore[arg-type]  # enum value
            center=d.Vector3(x=x, y=y, z=z), size=d.Vector3(x=length, y=w, z=h),
            yaw=yaw, velocity=d.Vector3(x=vx, y=vy)))
    return objects


def object_from_truth(box, score: float = 1.0, visible: int = 0):
    """A simulator ground-truth box (sim.scene.Box3D, class index into CLASSES) -> Object3D."""
    from perception.v1 import detections_pb2 as d

    return d.Object3D(object_class=proto_class(CLASSES[box.cls]), score=score,  # type: ignore[arg-type]
                      center=d.Vector3(x=float(box.center[0]), y=float(box.center[1]), z=float(box.center[2])),
                      size=d.Vector3(x=float(box.size[0]), y=float(box.size[1]), z=float(box.size[2])),
                      yaw=float(box.yaw), velocity=d.Vector3(x=float(box.velocity[0]), y=float(box.velocity[1])),
                      track_id=int(box.track_id), visible_pixels=int(visible))


def metric_boxes(objects, frame: int, classes) -> list:
    """Object3D messages -> metrics.Box of the given classes (others are skipped)."""
    from perception.metrics import Box

    wanted = set(classes)
    out = []
    for o in objects:
        name = class_name(o.object_class)
        if name is not None and name in wanted:
            out.append(Box(frame, name, np.array([o.center.x, o.center.y, o.center.z]),
                           np.array([o.size.x, o.size.y, o.size.z]), float(o.yaw),
                           np.array([o.velocity.x, o.velocity.y]), float(o.score)))
    return out
